"""Markdown tables: per condition, scores at an early and the last update with bootstrap CIs, IQM, speed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats


def seed_matrix(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(updates, values)`` with ``values[seed, update]`` for one condition, on updates every seed has."""
    wide = df.pivot_table(index="seed", columns="update", values=metric, aggfunc="mean").dropna(axis=1)
    return wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def _at_update(updates: np.ndarray, values: np.ndarray, u: int) -> tuple[int, np.ndarray]:
    """Values at update ``u`` (or the last update before it, for short runs)."""
    idx = int(np.searchsorted(updates, u, side="right")) - 1
    idx = max(idx, 0)
    return int(updates[idx]), values[:, idx]


def ci_text(values: np.ndarray, statistic: str = "mean", digits: int = 2) -> str:
    """``mean [low, high]`` over the non-NaN values (bootstrap CI), or ``n/a``."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return "n/a"
    point, low, high = stats.bootstrap_ci(v, statistic)
    return stats.format_ci(float(point), float(low), float(high), digits)


#: Trailing window (updates) of the speed figure: the threshold is the baseline's best mean
#: curve after this smoothing, and each seed's curve is smoothed the same way before its
#: first crossing is read (one noisy update cannot set or pass the bar).
SPEED_WINDOW = 10


def first_crossings_per_seed(
    updates: np.ndarray, values: np.ndarray, threshold: float, window: int
) -> list[int | None]:
    """Each seed's first update whose ``window``-update trailing mean is >= ``threshold`` (None: never).

    Args:
        updates: ``(U,)`` update numbers; values: ``(n_seeds, U)`` one curve per seed.
    """
    return [stats.first_update_reaching(updates, stats.trailing_mean(v, window), threshold) for v in values]


def speed_per_seed_text(hits: list[int | None]) -> tuple[str, str]:
    """``("k/n", "mean [CI] (median m)")`` over the seeds that cross; ``n/a`` when none does."""
    reached = np.array([h for h in hits if h is not None], dtype=float)
    frac = f"{len(reached)}/{len(hits)}"
    if len(reached) == 0:
        return frac, "n/a"
    return frac, f"{ci_text(reached, digits=1)} (median {float(np.median(reached)):g})"


def task_tables(df: pd.DataFrame, report_update: int, smooth: int, speed_window: int = SPEED_WINDOW) -> str:
    """Markdown tables for one task (one row per condition).

    The speed figure: threshold = the baseline's best ``speed_window``-update trailing mean of
    its mean curve over seeds; reported both as the first crossing of each condition's smoothed
    mean curve (the paper's reading) and per seed (each seed's smoothed curve), with a CI over
    the seeds that cross and how many do.
    """
    conds = list(dict.fromkeys(df["condition"]))  # first-seen order = launch order
    baseline = df["baseline"].iloc[0]
    curves, mats = {}, {}
    for c in conds:
        updates, rm = seed_matrix(df[df.condition == c], "rm_score")
        mats[c] = (updates, rm)
        curves[c] = rm.mean(axis=0)
    common = sorted(set.intersection(*(set(u.tolist()) for u, _ in mats.values())))
    speed: dict[str, tuple[int | None, float]] = {}
    threshold = math.nan
    if baseline in curves and common:
        aligned = {c: curves[c][np.isin(mats[c][0], common)] for c in conds}
        speed = stats.speedup_vs_baseline(common, aligned, baseline, window=speed_window)
        threshold = float(np.max(stats.trailing_mean(aligned[baseline], speed_window)))

    last_u = int(max(u[-1] for u, _ in mats.values()))
    u_rep = min(report_update, last_u)
    win_note = "" if speed_window == 1 else f", {speed_window}-update trailing mean"
    lines = [
        f"| condition | seeds | RM @ update {u_rep} | RM @ last update | IQM RM @ last | RM mean over run | "
        f"first update >= {baseline}'s best{win_note} (mean curve) | / {baseline}'s | seeds reaching it | "
        "first update per seed, mean [CI] over seeds reaching |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in conds:
        updates, rm = mats[c]
        _, at_rep = _at_update(updates, rm, u_rep)
        hit, ratio = speed.get(c, (None, math.nan))
        hit_s = "never" if hit is None else str(hit)
        frac, per_seed = "n/a", "n/a"
        if not speed:
            hit_s = "n/a"
        else:
            keep = np.isin(updates, common)
            frac, per_seed = speed_per_seed_text(
                first_crossings_per_seed(updates[keep], rm[:, keep], threshold, speed_window)
            )
        lines.append(
            f"| {c} | {rm.shape[0]} | {ci_text(at_rep)} | {ci_text(rm[:, -1])} (u{int(updates[-1])}) | {ci_text(rm[:, -1], 'iqm')} | "
            f"{ci_text(rm.mean(axis=1))} | {hit_s} | {'n/a' if math.isnan(ratio) else f'{ratio:.2f}'} | {frac} | {per_seed} |"
        )
    if speed and baseline in speed and speed[baseline][0] is not None:
        lines.append(
            f"\nSpeed threshold: {baseline}'s best {speed_window}-update trailing mean of its mean RM curve, "
            f"{threshold:.2f} (reached at update {speed[baseline][0]})."
        )

    lines += [
        "",
        f"| condition | gold @ update {u_rep} | gold @ last | KL @ last | value loss, mean over run | "
        "corr(RM, gold) over updates, per seed | gold / RM @ last |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in conds:
        sub = df[df.condition == c]
        updates, gold = seed_matrix(sub, "gold_score")
        _, kl = seed_matrix(sub, "kl")
        _, vl = seed_matrix(sub, "value_loss")
        _, rm = seed_matrix(sub, "rm_score")
        if gold.size == 0:
            lines.append(f"| {c} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        _, g_rep = _at_update(updates, gold, u_rep)
        corr = np.array([stats.curve_correlation(r, g) for r, g in zip(rm, gold)])
        rm_last = float(np.mean(rm[:, -1]))
        ratio = float(np.mean(gold[:, -1])) / rm_last if abs(rm_last) > 1e-9 else math.nan
        lines.append(
            f"| {c} | {ci_text(g_rep, digits=3)} | {ci_text(gold[:, -1], digits=3)} | "
            f"{ci_text(kl[:, -1]) if kl.size else 'n/a'} | {ci_text(vl.mean(axis=1), digits=3) if vl.size else 'n/a'} | "
            f"{ci_text(corr)} | {'n/a' if math.isnan(ratio) else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def all_tables(df: pd.DataFrame, report_update: int, smooth: int, speed_window: int = SPEED_WINDOW) -> str:
    """Tables for every task in the results, each under a heading."""
    parts = []
    for task in dict.fromkeys(df["task"]):
        parts.append(f"### {task}\n\n{task_tables(df[df.task == task], report_update, smooth, speed_window)}")
    notes = (
        "Mean over seeds [95% percentile-bootstrap CI over seeds]; IQM = interquartile mean over seeds "
        "(equals the mean for fewer than 4 seeds). Speed (the paper's figure, made robust): the threshold is "
        f"the baseline's best {speed_window}-update trailing mean of its mean curve over seeds; 'mean curve' is the "
        "first update at which the condition's smoothed mean curve reaches it, '/ baseline's' divides by the "
        "baseline's own update; 'per seed' smooths each seed's curve the same way and reports its first crossing, "
        "mean [CI] over the seeds that reach the threshold (and how many do). corr(RM, gold): Pearson correlation of the RM "
        "and gold curves of each seed, mean [CI] over seeds; near 1 means the gold score rises with the "
        "proxy, low or negative means the proxy is being over-optimised."
    )
    return "\n\n".join(parts) + "\n\n" + notes + "\n"


def report(
    df: pd.DataFrame, out: Path, report_update: int, smooth: int, header: str = "", speed_window: int = SPEED_WINDOW
) -> str:
    """Write ``tables.md`` and the PNGs into ``out``; return the tables (also printed)."""
    from benchmarks.dense_vs_sparse.plots import plot_task

    out.mkdir(parents=True, exist_ok=True)
    text = header + all_tables(df, report_update, smooth, speed_window)
    (out / "tables.md").write_text(text)
    for task in dict.fromkeys(df["task"]):
        plot_task(df[df.task == task], out, task, smooth)
    return text
