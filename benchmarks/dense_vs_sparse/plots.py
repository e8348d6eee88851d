"""Learning-curve plots (RM and gold, KL and value loss) and the gold-vs-RM trajectory, as PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.dense_vs_sparse.defaults import METRIC_LABELS
from benchmarks.dense_vs_sparse.plan import slug
from benchmarks.dense_vs_sparse.tables import seed_matrix


def plot_task(df: pd.DataFrame, out: Path, task: str, smooth: int) -> list[Path]:
    """Learning curves (RM and gold side by side; KL and value loss) and the gold-vs-RM trajectory."""
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
    return paths
