"""Env throughput and the cost of ABC scoring. Prints markdown tables.

    python -m benchmarks.env_throughput [--device cpu] [--steps 200] [--repeats 5]
    python -m benchmarks.env_throughput --device cuda --sizes 1 16 64 256 1024 --rm-batch 64   # GPU check

1. Steps/s and tokens/s of the batched env (one torch batch) at N = 1, 16, 64 with
   random actions, against N single envs stepped in a Python loop (the same work
   done the gymnasium-SyncVectorEnv way).
2. Reward-model scoring time with ABC attention / without it (sparse), both on SDPA,
   on the shipped reward model and on a GPT-2-small-shaped reward model (random
   weights, 12 layers, 768 wide) at 128 tokens. Target: ABC <= 1.05x sparse. Full
   eager attention (what ``output_attentions=True`` needs) is shown for comparison.
   Timings are medians over ``--repeats`` interleaved runs, so a busy machine hits
   every variant alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

import abc_gym  # noqa: F401
from abc_gym.attention import ROW_ATTENTION
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH

ENV_ID = "abc_gym/Sentiment-v0"


def time_batched(n: int, steps: int, device: str, seed: int = 0) -> float:
    """Seconds for ``steps`` batched steps of ``n`` rows (random actions)."""
    venv = gym.make_vec(ENV_ID, num_envs=n, device=device, reward_mode="abc")
    venv.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, venv.single_action_space.n, size=(steps + 1, n))
    venv.step(actions[0])  # warm-up
    start = time.perf_counter()
    for a in actions[1:]:
        venv.step(a)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_singles(n: int, steps: int, device: str, seed: int = 0) -> float:
    """Seconds for ``steps`` rounds over ``n`` single envs (each resetting itself when done)."""
    envs = [gym.make(ENV_ID, device=device, reward_mode="abc") for _ in range(n)]
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
    actions = np.random.default_rng(seed).integers(0, envs[0].action_space.n, size=(steps, n))
    start = time.perf_counter()
    for a in actions:
        for e, ai in zip(envs, a):
            _, _, term, trunc, _ = e.step(int(ai))
            if term or trunc:
                e.reset()
    return time.perf_counter() - start


def env_table(sizes: list[int], steps: int, device: str) -> str:
    rows = [
        "| N | batched steps/s | batched tokens/s | N single envs tokens/s | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        singles_steps = max(10, steps // n)  # keep the slow loop bounded; rates are per step
        tb = time_batched(n, steps, device) / steps
        ts = time_singles(n, singles_steps, device) / singles_steps
        rows.append(f"| {n} | {1 / tb:,.0f} | {n / tb:,.0f} | {n / ts:,.0f} | {ts / tb:.1f}x |")
    return "\n".join(rows)


def gpt2_small_rm(vocab_size: int) -> GPT2ForSequenceClassification:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=768, n_layer=12, n_head=12, num_labels=2, pad_token_id=1)
    return GPT2ForSequenceClassification(cfg).eval()


def scoring_row(name: str, model, tokenizer, batch: int, length: int, repeats: int, device: str) -> str:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, len(tokenizer), (batch, length), generator=g)
    mask = torch.ones_like(ids)
    row_rm = RewardModel(model, tokenizer, tokenizer, attention_source="row", device=device)

    def run(with_attention: bool) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        row_rm.score(ids, mask, with_attention=with_attention)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def run_eager() -> float:
        model.set_attn_implementation("eager")
        start = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids.to(device), attention_mask=mask.to(device), output_attentions=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        model.set_attn_implementation(ROW_ATTENTION)  # back to what the adapter set
        return elapsed

    for _ in range(2):  # warm-up
        run(True), run(False)
    sparse, abc, eager = [], [], []
    for _ in range(repeats):  # interleaved so that machine noise hits each variant alike
        sparse.append(run(False))
        abc.append(run(True))
        eager.append(run_eager())
    s, a, e = statistics.median(sparse), statistics.median(abc), statistics.median(eager)
    return f"| {name} | {batch}x{length} | {s * 1e3:.1f} | {a * 1e3:.1f} | {a / s:.3f}x | {e * 1e3:.1f} | {e / s:.2f}x |"


def scoring_table(repeats: int, device: str, length: int = 128, batch: int = 16) -> str:
    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    rows = [
        "| reward model | batch x tokens | sparse ms (SDPA) | ABC ms (SDPA + row) | ABC / sparse | eager ms | eager / sparse |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    shipped = AutoModelForSequenceClassification.from_pretrained(REWARD_MODEL_PATH).eval()
    rows.append(scoring_row("shipped GPT-2 RM", shipped, tok, batch, length, repeats, device))
    rows.append(scoring_row("GPT-2-small shape (random)", gpt2_small_rm(len(tok)), tok, batch, length, repeats, device))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200, help="batched env steps per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each scoring variant")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rm-batch", type=int, default=16, help="scoring table: completions per reward-model batch")
    parser.add_argument("--rm-length", type=int, default=128, help="scoring table: tokens per completion")
    parser.add_argument("--skip-env", action="store_true", help="only the scoring table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}\n")
    if not args.skip_env:
        print("### Env throughput (random actions, ABC mode)\n")
        print(env_table(args.sizes, args.steps, args.device))
    print("\n### Reward-model scoring: ABC vs sparse\n")
    print(scoring_table(args.repeats, args.device, length=args.rm_length, batch=args.rm_batch))


if __name__ == "__main__":
    main()
