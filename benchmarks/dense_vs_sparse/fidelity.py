"""Credit fidelity (``--fidelity``, no training): how well ABC's attention credit, and RED's prefix-score
differences beside it, match the gold per-token credit.

The credit compared is computed by the env's own functions (``abc_gym.credit``, every registered
scheme that needs no gold credit and no prefix scores), not re-implemented here: the table
measures exactly what the env hands out, and a scheme added with ``abc_gym.register_credit``
gets its own mass / TV rows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.dense_vs_sparse.provenance import run_meta
from benchmarks.dense_vs_sparse.results import jsonable
from benchmarks.dense_vs_sparse.tables import ci_text


def sample_episodes(env_id: str, n_episodes: int, seed: int, batch: int, device: str) -> list[dict[str, Any]]:
    """Roll out the shipped (untrained) policy on ``env_id``; return the final info of each episode.

    Pure sampling (temperature 1, no top-k / top-p, as the paper's PPO sampler), EOS
    masked before the task's minimum length (the env's ``action_masks``). Each batch row
    contributes only its first episode per round, so short episodes are not over-sampled.
    The token draws depend only on ``seed`` and the policy, so two envs with different
    reward models but the same task see the same completions.
    """
    import gymnasium as gym
    import torch
    from transformers import AutoModelForCausalLM

    import abc_gym  # noqa: F401
    from abc_gym.device import resolve_device
    from abc_gym.infos import unpad_episode
    from abc_gym.tasks.sentiment import POLICY_PATH

    device = str(resolve_device(device))  # "auto" (TrainConfig's default) is abc_gym's word, not torch's

    # RED's prefix scores come with reward_mode="red" (info["prefix_scores"]) where the reward model can
    # give them; the others (encoders, other tokenizers) run sparse and get no RED column. The mode
    # changes no token draw.
    try:
        env = gym.make_vec(
            env_id, num_envs=batch, vectorization_mode="vector_entry_point",
            reward_mode="red", record_attention=True, record_gold_credit=True, device=device,
        )
    except ValueError as err:
        if "reward_mode='red'" not in str(err):
            raise
        env = gym.make_vec(
            env_id, num_envs=batch, vectorization_mode="vector_entry_point",
            reward_mode="sparse", record_attention=True, record_gold_credit=True, device=device,
        )
    policy = AutoModelForCausalLM.from_pretrained(POLICY_PATH, local_files_only=True).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    episodes: list[dict[str, Any]] = []
    round_ = 0
    while len(episodes) < n_episodes:
        obs, _ = env.reset(seed=seed + round_ * batch)
        round_ += 1
        pending = np.ones(batch, dtype=bool)  # rows whose first episode of this round is still running
        while pending.any():
            ids = torch.as_tensor(obs["input_ids"], device=device)
            mask = torch.as_tensor(obs["attention_mask"], device=device)
            with torch.no_grad():
                logits = policy(input_ids=ids, attention_mask=mask).logits
            last = logits[torch.arange(batch, device=device), mask.sum(dim=1) - 1].float()
            last[~torch.as_tensor(env.action_masks(), device=device)] = -math.inf
            actions = torch.multinomial(torch.softmax(last, dim=-1), 1, generator=gen).squeeze(1)
            obs, _, terminated, _, info = env.step(actions.cpu().numpy())
            if "final_info" in info:
                final = info["final_info"]
                for row in np.nonzero(terminated & pending)[0]:
                    # per-token arrays come padded to max_new_tokens: cut to the episode's T
                    episodes.append(unpad_episode({k: final[k][row] for k in final if not k.startswith("_")}))
                pending &= ~terminated
    env.close()
    return episodes[:n_episodes]


def credit_shares(ep: dict[str, Any], beta: float) -> dict[str, np.ndarray]:
    """Each registered scheme's share of the credit over one episode's T tokens, from the registry's own functions.

    The shares are the scheme's token rewards for R = 1 (so they sum to 1), computed by
    ``abc_gym.credit`` itself rather than a second implementation, so the table measures the
    credit the env hands out, user schemes (``abc_gym.register_credit``) included. Keys:
    ``abc_attention`` (ABC at beta = 1, a_t alone), ``abc_beta<beta>``, then every other
    scheme by name. Left out: ``oracle`` (it is gold credit: its row is 1.00 / 0.00 by
    definition) and schemes that need prefix scores (their credit for R = 1 is not their
    formula; RED's d_t is ranked separately in :func:`episode_fidelity`).

    Args:
        ep: final info with ``attention`` ``(T,)`` (summing to 1) and ``gold_credit`` ``(T,)``.
    Returns:
        name -> ``(T,)`` float64 shares.
    """
    import torch

    from abc_gym.credit import credit_registry

    t = len(ep["attention"])
    mask = torch.ones(1, t, dtype=torch.bool)
    one = torch.ones(1, dtype=torch.float64)
    inputs = {
        "attention": torch.as_tensor(np.asarray(ep["attention"], dtype=float)).unsqueeze(0),
        "gold_weights": torch.as_tensor(np.asarray(ep["gold_credit"], dtype=float)).unsqueeze(0),
    }
    out = {"abc_attention": credit_registry["abc"].credit(one, mask, beta=1.0, **inputs)[0].numpy()}
    for name, scheme in credit_registry.items():
        if scheme.needs_gold_credit or scheme.needs_prefix_scores:
            continue
        key = f"abc_beta{beta:g}" if name == "abc" else name
        out[key] = scheme.credit(one, mask, beta=beta, **inputs)[0].numpy()
    return out


def episode_fidelity(ep: dict[str, Any], beta: float, rng: np.random.Generator) -> dict[str, float]:
    """Agreement of each mode's credit with the gold per-token credit, for one episode.

    - ``spearman_*``: rank correlation with gold credit. ABC's attention a_t; ``perm``: a_t
      in random order (the chance floor; uniform credit is constant, so its rank
      correlation is undefined); ``recency``: credit increasing with position.
    - ``mass_*``: share of the credit put on tokens the gold rule credits at all (g_t > 0).
    - ``tv_*``: total-variation distance of the credit distribution from gold's.
    """
    a = np.asarray(ep["attention"], dtype=float)
    g = np.asarray(ep["gold_credit"], dtype=float)
    t = len(a)
    credit = credit_shares(ep, beta)
    relevant = g > 0
    out: dict[str, float] = {
        "length": float(t),
        "gold_tokens": float(relevant.sum()),
        "spearman_abc": stats.spearman(a, g),
        "spearman_perm": stats.permutation_spearman(a, g, rng),
        "spearman_recency": stats.spearman(np.arange(t), g),
        "top1_abc": float(relevant[int(np.argmax(a))]),
        "attention_last_token": float(a[-1]),
        "score": float(ep["score"]),
        "gold_score": float(ep["gold_score"]),
    }
    for name, w in credit.items():
        out[f"mass_{name}"] = float(w[relevant].sum())
        # a signed scheme's shares are no distribution: no distance to gold's
        out[f"tv_{name}"] = stats.total_variation(w, g) if (w >= 0).all() else math.nan
    if ep.get("prefix_scores") is not None:  # RED (beta = 1): d_1 = R(x, y_1), d_t = R(x, y<=t) - R(x, y<=t-1)
        d = _red_differences(np.asarray(ep["prefix_scores"], dtype=float))
        mag = np.abs(d)
        out["spearman_red"] = stats.spearman(d, g)
        out["spearman_red_abs"] = stats.spearman(mag, g)
        out["top1_red"] = float(relevant[int(np.argmax(d))])
        out["mass_red_abs"] = float(mag[relevant].sum() / mag.sum()) if mag.sum() > 0 else math.nan
        out["tv_red_abs"] = stats.total_variation(mag, g) if mag.sum() > 0 else math.nan
    return out


def _red_differences(prefix_scores: np.ndarray) -> np.ndarray:
    """``(T,)`` RED's d_t for one completion, by ``abc_gym.credit.red_differences`` (the env's own function)."""
    import torch

    from abc_gym.credit import red_differences

    s = torch.as_tensor(prefix_scores, dtype=torch.float64).unsqueeze(0)
    return red_differences(s, torch.ones_like(s, dtype=torch.bool))[0].numpy()


def run_fidelity(args: argparse.Namespace) -> str:
    """Credit fidelity of ABC vs the oracle, per reward model, on the shipped policy's completions."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.fidelity_seed)
    results: dict[str, Any] = {}
    per_episode: dict[str, list[dict[str, float]]] = {}
    for env_id in args.fidelity_envs:
        eps = sample_episodes(env_id, args.fidelity_episodes, args.fidelity_seed, args.fidelity_batch, args.device)
        # no gold-credited word: gold credit is the uniform fallback, nothing to rank against
        fallback = [bool(e.get("gold_credit_uniform_fallback", False)) for e in eps]
        # the scored row saw none of the completion: "attention" is a one-hot stand-in, not attention
        blind = [bool(e.get("abc_sparse_fallback", False)) for e in eps]
        used = [e for e, fb, bl in zip(eps, fallback, blind) if not (fb or bl)]
        rows = [episode_fidelity(e, args.beta, rng) for e in used]
        per_episode[env_id] = rows
        results[env_id] = {"episodes": len(eps), "skipped_uniform_fallback": int(sum(fallback)),
                           "skipped_abc_sparse_fallback": int(sum(blind)), "used": len(used)}
        print(f"{env_id}: {len(eps)} episodes, {sum(fallback)} skipped (no gold-credited word), "
              f"{sum(blind)} skipped (reward model saw none of the completion), {len(used)} used", flush=True)

    lines = [
        "| reward model (env) | episodes used / sampled | Spearman(ABC a_t, gold) | Spearman, permuted a_t (chance floor) | "
        "Spearman(position, gold) | undefined rho (constant a_t) | top-1 ABC token is gold-credited | mean a_t on last token |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, rows in per_episode.items():
        d = pd.DataFrame(rows)
        r = results[env_id]
        if d.empty:
            lines.append(f"| {env_id} | 0 / {r['episodes']} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        rho = d["spearman_abc"].to_numpy()
        r["spearman_undefined"] = int(np.isnan(rho).sum())
        for k in d.columns:
            v = d[k].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            if len(v):
                p, lo, hi = stats.bootstrap_ci(v)
                r[k] = {"mean": float(p), "ci": [float(lo), float(hi)], "median": float(np.median(v)), "n": int(len(v))}
        lines.append(
            f"| {env_id} | {r['used']} / {r['episodes']} | {ci_text(rho, digits=3)} | {ci_text(d['spearman_perm'].to_numpy(), digits=3)} | "
            f"{ci_text(d['spearman_recency'].to_numpy(), digits=3)} | {r['spearman_undefined']} | {ci_text(d['top1_abc'].to_numpy())} | "
            f"{ci_text(d['attention_last_token'].to_numpy())} |"
        )
    lines += [
        "",
        "| reward model (env) | Spearman(ABC a_t, gold) | Spearman(RED d_t, gold) | Spearman(abs RED d_t, gold) | "
        "top-1 ABC token is gold-credited | top-1 RED token is gold-credited |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, rows in per_episode.items():
        d = pd.DataFrame(rows)
        if d.empty or "spearman_red" not in d:
            lines.append(f"| {env_id} | {'n/a' if d.empty else ci_text(d['spearman_abc'].to_numpy(), digits=3)} | "
                         "n/a (no prefix scores: reward_mode='red' needs a decoder RM with the policy's tokenizer) | n/a | "
                         f"{'n/a' if d.empty else ci_text(d['top1_abc'].to_numpy())} | n/a |")
            continue
        lines.append(
            f"| {env_id} | {ci_text(d['spearman_abc'].to_numpy(), digits=3)} | {ci_text(d['spearman_red'].to_numpy(), digits=3)} | "
            f"{ci_text(d['spearman_red_abs'].to_numpy(), digits=3)} | {ci_text(d['top1_abc'].to_numpy())} | "
            f"{ci_text(d['top1_red'].to_numpy())} |"
        )
    lines += [
        "",
        "| reward model (env) | credit | mass on gold-credited tokens | TV distance to gold credit |",
        "|---|---|---|---|",
    ]
    for env_id, rows in per_episode.items():
        d = pd.DataFrame(rows)
        if d.empty:
            continue
        lines.append(f"| {env_id} | (share of tokens gold credits) | {ci_text(d['gold_tokens'].to_numpy() / d['length'].to_numpy())} | |")
        for name in [c[len("mass_"):] for c in d.columns if c.startswith("mass_") and c != "mass_red_abs"]:
            lines.append(f"| {env_id} | {name} | {ci_text(d['mass_' + name].to_numpy())} | {ci_text(d['tv_' + name].to_numpy())} |")
        if "mass_red_abs" in d:
            lines.append(f"| {env_id} | red (abs d_t, normalised) | {ci_text(d['mass_red_abs'].dropna().to_numpy())} | "
                         f"{ci_text(d['tv_red_abs'].dropna().to_numpy())} |")
        lines.append(f"| {env_id} | oracle | 1.00 | 0.00 |")
    wall = time.perf_counter() - t0
    text = "\n".join(lines) + (
        "\n\nMean [95% bootstrap CI over episodes]. Episodes whose completion has no word the gold rule credits "
        "(gold credit = uniform fallback), or that the reward model's scored row cannot see (ABC sparse fallback), "
        "are skipped and counted. Uniform credit is a constant vector, so its rank "
        "correlation is undefined (NaN); its floor is the chance level, estimated by correlating gold with ABC's own "
        "weights in random order (20 permutations per episode). 'abc_attention' is a_t alone (beta = 1); "
        f"'abc_beta{args.beta:g}' the credit the env hands out (beta a_t + (1 - beta) [t = T]). RED (beta = 1): "
        "d_t = R(x, y<=t) - R(x, y<=t-1) with the prompt's score on the first token, from the same reward-model "
        "forward; it is signed (a token that lowers the score gets negative credit) while gold credit is a "
        "non-negative weight on sentiment words, so both the signed and the absolute d_t are ranked.\n"
        f"\nRun time: {wall:.0f} s.\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(args, wall)
    (out / "fidelity.json").write_text(json.dumps({"meta": meta, "summary": results, "episodes": per_episode}, indent=1, default=jsonable))
    (out / "fidelity.md").write_text(text)
    return text
