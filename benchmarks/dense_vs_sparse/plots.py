"""Learning-curve plots (RM and gold, KL and value loss), the gold-vs-RM trajectory, updates-to-reach and the
kl sweep's RM-vs-KL / gold-vs-KL frontiers, as PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.dense_vs_sparse.defaults import METRIC_LABELS
from benchmarks.dense_vs_sparse.plan import slug
from benchmarks.dense_vs_sparse.tables import (
    LEVELS,
    SPEED_WINDOW,
    final_updates,
    kl_points,
    reach_levels,
    seed_frame,
    seed_matrix,
)


def plot_task(df: pd.DataFrame, out: Path, task: str, smooth: int, speed_window: int = SPEED_WINDOW) -> list[Path]:
    """Learning curves (RM and gold side by side; KL and value loss), the gold-vs-RM trajectory, updates-to-reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(df["condition"]))
    paths = []
    for name, metrics in (("curves", ("rm_score", "gold_score")), ("diagnostics", ("kl", "value_loss"))):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
        for ax, metric in zip(axes, metrics):
            for c in conds:
                updates, vals = seed_matrix(df[df.condition == c], metric)
                if vals.size == 0:
                    continue
                vals = np.stack([stats.trailing_mean(v, smooth) for v in vals])
                mean, low, high = stats.mean_ci(vals)  # Student t: keeps coverage at 3-10 seeds
                (line,) = ax.plot(updates, mean, label=f"{c} (n={vals.shape[0]})", lw=1.4)
                if vals.shape[0] > 1:
                    ax.fill_between(updates, low, high, color=line.get_color(), alpha=0.18, lw=0)
            ax.set_xlabel("update")
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        sm = "" if smooth == 1 else f"; {smooth}-update trailing mean"
        fig.suptitle(f"{task}: mean over seeds, 95% t interval over seeds{sm}", fontsize=9)
        fig.tight_layout()
        path = out / f"{name}_{slug(task)}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)

    # gold vs proxy: where each condition's mean trajectory goes in the (RM, gold) plane
    fig, ax = plt.subplots(figsize=(5, 3.8), dpi=90)
    for c in conds:
        sub = df[df.condition == c]
        _, rm = seed_matrix(sub, "rm_score")
        _, gold = seed_matrix(sub, "gold_score")
        if gold.size == 0:
            continue
        x = stats.trailing_mean(rm.mean(axis=0), max(smooth, 5))
        y = stats.trailing_mean(gold.mean(axis=0), max(smooth, 5))
        (line,) = ax.plot(x, y, lw=1.2, label=c)
        ax.plot(x[-1], y[-1], "o", color=line.get_color())
    ax.set_xlabel("RM score (proxy)")
    ax.set_ylabel("gold (VADER) score")
    ax.set_title(f"{task}\ngold vs proxy, mean over seeds (dot = last update)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"gold_vs_rm_{slug(task)}.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
    reach = plot_reach(df, out, task, speed_window)
    return paths + ([reach] if reach else [])


def plot_reach(df: pd.DataFrame, out: Path, task: str, speed_window: int = SPEED_WINDOW) -> Path | None:
    """The speed figure: each seed's update reaching each RM level (the updates-to-reach table), never-reaching seeds at the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = final_updates(df)
    if not updates:
        return None
    _, _, _, marks = reach_levels(df, updates, LEVELS)
    conds = list(dict.fromkeys(df["condition"]))
    last = int(df["update"].max())
    never_x = last * 1.08  # seeds that never reach the level sit right of the last update
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(5 * len(LEVELS), 0.5 * len(conds) + 1.6), dpi=90, sharey=True)
    for ax, q, level in zip(np.atleast_1d(axes), LEVELS, marks):
        for i, c in enumerate(conds):
            wide = seed_frame(df[df.condition == c], "rm_score")
            hits = stats.updates_to_reach(wide.columns.to_numpy(), wide.to_numpy(dtype=float), level, speed_window)
            jitter = np.linspace(-0.15, 0.15, len(hits)) if len(hits) > 1 else np.zeros(1)
            reached = np.isfinite(hits)
            ax.plot(hits[reached], i + jitter[reached], "o", ms=5, alpha=0.8)
            ax.plot(np.full((~reached).sum(), never_x), i + jitter[~reached], "x", color="grey", ms=6)
            if reached.sum() * 2 > len(hits):  # the median is a number only when most seeds reach
                ax.plot([np.median(hits)] * 2, [i - 0.3, i + 0.3], "k-", lw=1.5)
        ax.axvline(last, color="grey", lw=0.6, ls=":")
        ax.set_yticks(range(len(conds)), conds, fontsize=7)
        ax.set_xlabel(f"first update, {speed_window}-update trailing mean (x: never)")
        ax.set_title(f"RM {level:.2f} = {q:.0%} of the way to the best final level", fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{task}: updates to reach, per seed (bar: median)", fontsize=9)
    fig.tight_layout()
    path = out / f"reach_{slug(task)}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_frontier(df: pd.DataFrame, out: Path, title: str) -> Path | None:
    """``--sweep kl``: RM-vs-KL and gold-vs-KL frontiers per condition, as ``frontier_<title>.png``.

    One point per coefficient (mean over seeds of each seed's final-window mean), joined in
    order of mean KL, with 95% t intervals over seeds on both axes (none for one seed);
    labels: the coefficient. Read as the tables do: a condition is better at equal KL only
    where its frontier lies above another's over the same KL range.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in kl_points(df) if p.title == title]
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    for ax, metric, label in zip(axes, ("rm", "gold"), ("rm_score", "gold_score")):
        for cond in dict.fromkeys(p.condition for p in points):
            cells = sorted(((p.ci("kl"), p.ci(metric), p.coef) for p in points if p.condition == cond),
                           key=lambda c: c[0][0])
            cells = [c for c in cells if not (np.isnan(c[0][0]) or np.isnan(c[1][0]))]
            if not cells:
                continue
            x = np.array([c[0][0] for c in cells])
            y = np.array([c[1][0] for c in cells])
            # half-widths of the intervals (0 where undefined: one seed)
            xerr = np.nan_to_num(np.array([[c[0][0] - c[0][1], c[0][2] - c[0][0]] for c in cells]).T)
            yerr = np.nan_to_num(np.array([[c[1][0] - c[1][1], c[1][2] - c[1][0]] for c in cells]).T)
            n = min(len(p.rm) for p in points if p.condition == cond)
            bars = ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-", ms=4, lw=1.3, capsize=2, elinewidth=0.8,
                               label=f"{cond} (n={n})")
            for xi, yi, (_, _, coef) in zip(x, y, cells):
                ax.annotate(f"{coef:g}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6,
                            color=bars[0].get_color())
        ax.set_xlabel(f"{METRIC_LABELS['kl']}, final window")
        ax.set_ylabel(f"{METRIC_LABELS[label]}, final window")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: fixed-KL frontiers (labels: KL coef), mean over seeds, 95% t intervals over seeds;\n"
                 "better at equal KL only where a frontier lies above another over the same KL range", fontsize=8)
    fig.tight_layout()
    path = out / f"frontier_{slug(title)}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
