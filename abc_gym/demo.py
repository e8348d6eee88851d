"""Roll out the shipped policy on ``abc_gym/Sentiment-v0`` and show where each mode puts the credit.

    python -m abc_gym.demo [--episodes 3] [--seed 0] [--env abc_gym/Sentiment-v0] [--device auto]

For each completion it prints one row per generated token with its credit under
sparse, uniform, ABC (beta 0.8) and oracle (gold VADER) credit: the same score R,
spread four ways.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from transformers import AutoModelForCausalLM

import abc_gym  # noqa: F401  (registers the ids)
from abc_gym.compat.transformers import quiet_loading
from abc_gym.credit import token_rewards
from abc_gym.device import resolve_device


@torch.no_grad()
def sample_token(model, obs: dict, generator: torch.Generator) -> int:
    """Sample the next token from the policy given the observation (plain sampling, top_k 0 / top_p 1)."""
    n = int(obs["attention_mask"].sum())
    ids = torch.as_tensor(obs["input_ids"][:n], device=model.device).unsqueeze(0)
    logits = model(input_ids=ids).logits[0, -1].float().cpu()
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


def credit_table(env, info: dict, beta: float) -> str:
    """Markdown table: token | sparse | uniform | abc | oracle for one finished episode."""
    tok = env.unwrapped.tokenizer
    t = len(info["completion_ids"])
    mask = torch.ones(1, t, dtype=torch.bool)
    score = torch.tensor([info["score"]])
    cols = {
        mode: token_rewards(
            mode,
            score,
            mask,
            beta=beta,
            attention=torch.as_tensor(info["attention"]).unsqueeze(0),
            gold_weights=torch.as_tensor(info["gold_credit"]).unsqueeze(0),
        )[0]
        for mode in ("sparse", "uniform", "abc", "oracle")
    }
    lines = ["| token | sparse | uniform | abc | oracle |", "|---|---:|---:|---:|---:|"]
    for i, tid in enumerate(info["completion_ids"]):
        piece = tok.decode([int(tid)]).replace("|", "\\|")
        lines.append(f"| `{piece}` | " + " | ".join(f"{float(cols[m][i]):+.3f}" for m in cols) + " |")
    lines.append("| **sum** | " + " | ".join(f"{float(cols[m].sum()):+.3f}" for m in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="abc_gym/Sentiment-v0")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.8)
    parser.add_argument("--device", default="auto", help='"auto" (CUDA when available, else CPU), "cpu", "cuda", ...')
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    env = gym.make(args.env, reward_mode="abc", beta=args.beta, record_attention=True, render_mode="ansi", device=device)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(env.unwrapped.policy_name_or_path).to(device).eval()
    generator = torch.Generator().manual_seed(args.seed)
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + episode)
        done = False
        while not done:
            obs, _, done, _, info = env.step(sample_token(model, obs, generator))
        print(f"\n## Episode {episode}: {info['prompt']!r} -> {info['text']!r}")
        print(f"R (reward model) = {info['score']:+.3f}, gold (VADER) = {info.get('gold_score', float('nan')):+.3f}\n")
        print(env.render())
        print()
        print(credit_table(env, info, args.beta))


if __name__ == "__main__":
    main()
