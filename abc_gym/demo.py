"""Roll out the shipped policy on ``abc_gym/Sentiment-v0`` and show where each mode puts the credit.

    python -m abc_gym.demo [--episodes 3] [--seed 0] [--env abc_gym/Sentiment-v0] [--device auto]

For each completion it prints one row per generated token with its credit under every
scheme of the credit registry (``abc_gym.credit.credit_registry``): built in, sparse, ABC
(beta 0.8), uniform, oracle (gold VADER) and RED (beta 0.8: prefix-score differences, the
prompt's score on the first token), then any registered with ``abc_gym.register_credit``:
the same score R, spread each way. A scheme whose input this env cannot give is left out
(RED, with a note, for a reward model that cannot score prefixes in one forward: an
encoder, or another tokenizer).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from transformers import AutoModelForCausalLM

import abc_gym  # noqa: F401  (registers the ids)
from abc_gym.compat.transformers import quiet_loading
from abc_gym.credit import credit_registry, token_rewards
from abc_gym.device import resolve_device
from abc_gym.infos import unpad_episode


@torch.no_grad()
def sample_token(model, obs: dict, generator: torch.Generator) -> int:
    """Sample the next token from the policy given the observation (plain sampling, top_k 0 / top_p 1)."""
    n = int(obs["attention_mask"].sum())
    ids = torch.as_tensor(obs["input_ids"][:n], device=model.device).unsqueeze(0)
    logits = model(input_ids=ids).logits[0, -1].float().cpu()
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


def prefix_scores(env, obs: dict) -> torch.Tensor | None:
    """``(T,)`` R(x, y<=t) of the finished episode in ``obs`` (one reward-model forward), or None
    when the env's reward model cannot score prefixes (RED needs a decoder with the policy's tokenizer)."""
    rm = env.unwrapped.reward_model
    if rm.prefix_scores_problem() is not None:
        return None
    n = int(obs["attention_mask"].sum())
    ids = torch.as_tensor(obs["input_ids"][:n]).unsqueeze(0)
    out = rm.score(ids, torch.ones_like(ids), with_attention=False, with_prefix_scores=True)
    return out.prefix_scores[0].cpu()


def credit_table(env, info: dict, beta: float, prefix: torch.Tensor | None = None) -> str:
    """Markdown table: token | one column per registered scheme, for one finished episode.

    ``info`` needs ``attention`` (``record_attention=True``) for the schemes that read attention
    and ``gold_credit`` for those that need gold credit; ``prefix``: ``(T,)`` or the whole
    sequence's ``(P + T,)`` prefix scores (its last T are used). A scheme whose input is
    missing gets no column (None ``prefix``: no red column).
    """
    info = unpad_episode(info)  # per-token arrays come padded to max_new_tokens
    tok = env.unwrapped.tokenizer
    t = len(info["completion_ids"])
    mask = torch.ones(1, t, dtype=torch.bool)
    score = torch.tensor([info["score"]])
    inputs = {
        "attention": None if info.get("attention") is None else torch.as_tensor(info["attention"]).unsqueeze(0),
        "gold_weights": None if info.get("gold_credit") is None else torch.as_tensor(info["gold_credit"]).unsqueeze(0),
        "prefix_scores": None if prefix is None else torch.as_tensor(prefix)[-t:].unsqueeze(0),
    }
    modes = [
        name
        for name, s in credit_registry.items()
        if not (s.needs_attention and inputs["attention"] is None)
        and not (s.needs_gold_credit and inputs["gold_weights"] is None)
        and not (s.needs_prefix_scores and inputs["prefix_scores"] is None)
    ]
    cols = {mode: token_rewards(mode, score, mask, beta=beta, **inputs)[0] for mode in modes}
    lines = ["| token | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
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
    has_gold = gym.spec(args.env).kwargs.get("gold_credit") is not None  # the oracle column, where the task has one
    env = gym.make(
        args.env, reward_mode="abc", beta=args.beta, record_attention=True, record_gold_credit=has_gold,
        render_mode="ansi", device=device,
    )
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
        prefix = prefix_scores(env, obs)
        print(credit_table(env, info, args.beta, prefix))
        if prefix is None:
            print("(no red column: this reward model cannot score prefixes in one forward; use reward_mode='abc')")


if __name__ == "__main__":
    main()
