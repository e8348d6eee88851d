"""Throughput of the agents' fast paths on the shipped model (abc_gym/Sentiment-v0's policy).

    python benchmarks/agent_throughput.py            # ~1-2 minutes on 2 CPU cores

Side by side, each measurement in a fresh process (so its peak RSS is its own):

1. rollout tokens/s (sampling + env steps, 16 envs) with the per-env KV cache vs a full
   forward over the whole prefix at every step, at 16 and 48 new tokens per episode;
2. update time on the same rollout buffer (16 episodes of 32 tokens, 4 epochs,
   minibatches of 4 episodes = 128 transitions): TokenPPO (one forward per episode) vs
   SB3's transition-level PPO.train (one prefix forward per transition).

``--policy gpt2-small`` runs the same rollout comparison with a GPT-2-small-shaped actor
(12 layers, width 768, random weights, on the shipped tokenizer; built locally, no
download), where attention over the prefix, not per-call overhead, dominates.

Prints a markdown table. Completions have a fixed length (``min_new_tokens = max_new_tokens``,
EOS does not end them) so both sides generate the same number of tokens.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Any

ENV = "abc_gym/Sentiment-v0"


def gpt2_small_policy(path: str) -> str:
    """Save a random GPT-2-small-shaped causal LM on the shipped tokenizer to ``path``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from abc_gym.tasks.sentiment import POLICY_PATH

    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=768, n_layer=12, n_head=12,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _setup(new_tokens: int, n_envs: int, seed: int = 0, policy: str | None = None):
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    from stable_baselines3.common.logger import configure

    from agents.algorithms import make_token_vec_env
    from agents.token_ppo import TokenPPO

    env = make_token_vec_env(ENV, num_envs=n_envs, seed=seed, min_new_tokens=new_tokens, max_new_tokens=new_tokens, eos_ends_episode=False)
    policy_kwargs = {"model_name_or_path": policy} if policy else None
    model = TokenPPO(
        "TransformerPolicy", env, learning_rate=1e-4, n_epochs=4, batch_size=4 * new_tokens, minibatch_episodes=4,
        seed=seed, device="cpu", policy_kwargs=policy_kwargs,
    )
    model.set_logger(configure(None, []))
    return model


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def job_rollout(new_tokens: int, use_cache: bool, n_envs: int, repeats: int, policy: str | None = None) -> dict[str, Any]:
    model = _setup(new_tokens, n_envs, policy=policy)
    model.policy.use_cache = use_cache
    _, callback = model._setup_learn(10**12, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 1)  # warm-up
    t = time.perf_counter()
    tokens = 0
    for _ in range(repeats):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, 1)
        tokens += model.rollout_buffer.n_valid
    dt = time.perf_counter() - t
    return {"tokens_per_s": tokens / dt, "seconds": dt, "peak_mb": _peak_mb()}


def job_update(new_tokens: int, sequence_level: bool, n_envs: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import PPO as SB3PPO

    model = _setup(new_tokens, n_envs)
    _, callback = model._setup_learn(10**12, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, 1)
    torch.manual_seed(0)
    t = time.perf_counter()
    if sequence_level:
        model._update()
    else:
        SB3PPO.train(model)  # the transition-level update, on the same buffer
    dt = time.perf_counter() - t
    return {"seconds": dt, "transitions": model.rollout_buffer.n_valid, "peak_mb": _peak_mb()}


def job_baseline(new_tokens: int, n_envs: int) -> dict[str, Any]:
    _setup(new_tokens, n_envs)
    return {"peak_mb": _peak_mb()}


def _run(fn, *args) -> dict[str, Any]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rollouts timed per setting")
    p.add_argument("--rollout-tokens", type=int, nargs="+", default=[16, 48])
    p.add_argument("--update-tokens", type=int, default=32)
    p.add_argument("--policy", choices=["shipped", "gpt2-small"], default="shipped", help="actor for the rollout rows")
    args = p.parse_args()
    policy = None
    if args.policy == "gpt2-small":
        import tempfile

        policy = gpt2_small_policy(tempfile.mkdtemp(prefix="abc_gym_gpt2_small_"))

    rows = ["| measurement | setting | baseline | fast path | speed-up |", "|---|---|---|---|---|"]
    for k in args.rollout_tokens:
        full = _run(job_rollout, k, False, args.envs, args.repeats, policy)
        cached = _run(job_rollout, k, True, args.envs, args.repeats, policy)
        rows.append(
            f"| rollout tokens/s ({args.envs} envs, {args.policy} actor) | {k} new tokens | full forward {full['tokens_per_s']:.0f} tok/s "
            f"(peak {full['peak_mb']:.0f} MB) | KV cache {cached['tokens_per_s']:.0f} tok/s (peak {cached['peak_mb']:.0f} MB) "
            f"| {cached['tokens_per_s'] / full['tokens_per_s']:.1f}x |"
        )
        print(rows[-1], flush=True)
    if args.policy != "shipped":
        print("\n".join(rows))
        return
    k = args.update_tokens
    base = _run(job_baseline, k, args.envs)
    per = _run(job_update, k, False, args.envs)
    seq = _run(job_update, k, True, args.envs)
    rows.append(
        f"| update time, 4 epochs ({per['transitions']} transitions) | {k} new tokens | SB3 PPO.train {per['seconds']:.2f} s "
        f"(peak {per['peak_mb']:.0f} MB) | TokenPPO {seq['seconds']:.2f} s (peak {seq['peak_mb']:.0f} MB) "
        f"| {per['seconds'] / seq['seconds']:.1f}x |"
    )
    rows.append(f"| process after setup (model, env, buffer) | {k} new tokens | peak {base['peak_mb']:.0f} MB | | |")
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
