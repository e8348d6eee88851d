"""Per-update metrics: what ``metrics.jsonl`` holds and ``train`` returns, one dict per update.

Keys: update, timesteps, episodes, rm_score (mean RM score of the episodes finished in that
rollout), gold_score, kl (mean summed per-token KL to the initial policy), kl_coef,
value_loss, entropy (mean per-step policy entropy during the rollout), policy_loss,
wall_time, update_time, transitions, mean_len, rollout_time, approx_kl, clip_fraction,
explained_variance, learning_rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROLLOUT_KEYS = ("episodes", "transitions", "rm_score", "gold_score", "kl", "kl_coef", "entropy", "mean_len", "rollout_time")


def rollout_stats(buffer: Any, kl_coef: float, rollout_time: float, dp: Any = None) -> dict[str, Any]:
    """Episode statistics of one rollout (``buffer``: a credit buffer after the rollout).

    ``dp``: an :class:`agents.distributed.DataParallel`; in a group every mean is over all
    ranks' episodes (one all-reduce of the sums), counts are totals and ``rollout_time`` the
    slowest rank's. ``None``: this process alone.
    """
    eps = buffer.episodes
    gold = [e.gold_score for e in eps if e.gold_score is not None]
    sums = [
        len(eps), buffer.n_valid, np.sum([e.score for e in eps]), len(gold), np.sum(gold), np.sum([e.kl for e in eps]),
        len(buffer.step_entropy), np.sum(buffer.step_entropy), np.sum([e.gen_len for e in eps]),
    ]
    if dp is not None and dp.active:
        sums, rollout_time = dp.sum(sums), dp.max(rollout_time)
    n_eps, n_valid, score, n_gold, gold_sum, kl, n_ent, ent, gen = (float(x) for x in sums)
    return {
        "episodes": int(n_eps),
        "transitions": int(n_valid),
        "rm_score": score / n_eps if n_eps else float("nan"),
        "gold_score": gold_sum / n_gold if n_gold else None,
        "kl": kl / n_eps if n_eps else 0.0,
        "kl_coef": kl_coef,
        "entropy": ent / n_ent if n_ent else None,
        "mean_len": gen / n_eps if n_eps else 0.0,
        "rollout_time": rollout_time,
    }


def update_metrics(
    update: int, timesteps: int, rollout: dict[str, Any], logged: dict[str, Any], wall_time: float, update_time: float
) -> dict[str, Any]:
    """One update's metrics from its rollout statistics and what the algorithm logged (``train/*``).

    :param update: 1-based update number over the model's whole history.
    :param timesteps: env timesteps so far.
    :param rollout: :func:`rollout_stats` of the rollout this update trained on.
    :param logged: the SB3 logger's ``name_to_value`` after the update.
    :param wall_time: seconds of training so far; ``update_time``: seconds of this update.
    """
    if "train/policy_objective" in logged:  # TRPO maximises an objective; report it as a loss
        policy_loss: float | None = -float(logged["train/policy_objective"])
    else:
        policy_loss = _first(logged, "train/policy_gradient_loss", "train/policy_loss")
    return {
        "update": update,
        "timesteps": int(timesteps),
        **{k: rollout.get(k) for k in ("episodes", "rm_score", "gold_score", "kl", "kl_coef")},
        "value_loss": _first(logged, "train/value_loss"),
        "entropy": rollout.get("entropy"),
        "policy_loss": policy_loss,
        "wall_time": wall_time,
        "update_time": update_time,
        **{k: rollout.get(k) for k in ("transitions", "mean_len", "rollout_time")},
        "approx_kl": _first(logged, "train/approx_kl", "train/kl_divergence_loss"),
        "clip_fraction": _first(logged, "train/clip_fraction"),
        "explained_variance": _first(logged, "train/explained_variance"),
        "learning_rate": _first(logged, "train/learning_rate"),
    }


def _first(logged: dict[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` that was logged, as a float."""
    for key in keys:
        if key in logged:
            return float(logged[key])
    return None
