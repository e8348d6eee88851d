"""Per-mode tuning (issue 19, stage 5): every mode on the same grid, tuning seeds apart from evaluation seeds.

Protocol (declared in docs/results.md before any run):

1. **Grid runs.** One ``python -m benchmarks.dense_vs_sparse`` invocation per grid point
   (``--set lr=LR max_grad_norm=G``), every mode of the experiment in it, on the tuning seeds
   (``--seed-offset 1000``), everything else as the evaluation runs.
2. **Selection.** For each mode the grid point with the highest mean, over its tuning seeds,
   of the RM score over the final window (the proxy reward the learner maximises; the gold
   score is never used to select). :func:`grid_table` computes it from the stored grid runs.
3. **Evaluation.** One invocation per mode at its selected point on the evaluation seeds
   (0..N-1); :func:`combine` joins them into one results file whose declared comparisons
   (each tuned dense mode minus tuned sparse, paired per seed, Holm) are
   :func:`benchmarks.dense_vs_sparse.tables.all_tables`'.

    python -m benchmarks.dense_vs_sparse.tuning store DIR [DIR ...] --out docs/raw/tune_8_15.json.gz
    python -m benchmarks.dense_vs_sparse.tuning select docs/raw/tune_8_15.json.gz    # grid table + each mode's --set
    python -m benchmarks.dense_vs_sparse.tuning combine DIR [DIR ...] --out docs/raw/tuned_8_15.json.gz

``store`` and ``combine`` read each folder's ``results.json`` (the benchmark's own output)
and keep the per-update, per-seed rows; the grid point comes from the invocation's
``--set`` values, stored in its meta.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.dense_vs_sparse import tables
from benchmarks.dense_vs_sparse.results import load_results, save_raw

#: The tuned TrainConfig fields, in the order the grid table lists them (declared for stage 5).
TUNED: tuple[str, ...] = ("lr", "max_grad_norm")
#: The metric a mode's grid point is selected by (the RM score: what the learner maximises).
SELECT_BY = "rm_score"


def grid_point(meta: dict) -> dict[str, float]:
    """The tuned fields' values of one invocation, from its ``--set FIELD=VALUE`` list.

    Raises:
        ValueError: when the invocation did not set every field of :data:`TUNED`.
    """
    given = dict(item.split("=", 1) for item in meta.get("settings", {}).get("set", []) or [])
    missing = [f for f in TUNED if f not in given]
    if missing:
        raise ValueError(f"{meta.get('command', 'a run')!r} sets no {missing}: a grid run needs --set "
                         + " ".join(f"{f}=VALUE" for f in TUNED))
    return {f: float(given[f]) for f in TUNED}


def _load_many(dirs: Sequence[Path]) -> tuple[list[pd.DataFrame], list[dict]]:
    frames, metas = [], []
    for d in dirs:
        df, meta = load_results(d)
        frames.append(df)
        metas.append(meta)
    return frames, metas


def store(dirs: Sequence[Path], out: Path) -> pd.DataFrame:
    """Join the grid runs into one raw file, each row labelled with its grid point (``tune_<field>`` columns)."""
    frames, metas = _load_many(dirs)
    for df, meta in zip(frames, metas):
        for field, value in grid_point(meta).items():
            df["tune_" + field] = value
    df = pd.concat(frames, ignore_index=True)
    save_raw(df, {"stage": "tuning grid", "invocations": metas}, out)
    return df


def grid_table(df: pd.DataFrame, final_window: int = tables.FINAL_WINDOW) -> tuple[str, dict[str, dict[str, float]]]:
    """The grid as a markdown table and each mode's selected point (``{mode: {field: value}}``).

    One row per (mode, grid point): seeds, the final-window RM mean over tuning seeds [95% t
    interval] (the selection metric), gold and KL means; the selected row of each mode is bold.
    """
    cols = ["tune_" + f for f in TUNED]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"no {missing} columns: these are not tuning-grid results (store them with `tuning store`)")
    updates = tables.final_updates(df, final_window)
    rows = []
    for (cond, *point), sub in df.groupby(["condition", *cols], sort=False):
        means = {m: tables.window_means(sub, m, updates) for m in (SELECT_BY, "gold_score", "kl")}
        rows.append((str(cond), tuple(point), means))
    counts = {(cond, point): len(means[SELECT_BY]) for cond, point, means in rows}
    if len(set(counts.values())) > 1:  # a point with fewer seeds would be selected on other evidence
        short = sorted((c, p, n) for (c, p), n in counts.items() if n < max(counts.values()))
        raise ValueError(f"unequal tuning seeds across the grid ({short} have fewer than {max(counts.values())}): "
                         "finish the grid (rerun its invocation with --resume) before selecting")
    selected: dict[str, dict[str, float]] = {}
    best: dict[str, float] = {}
    for cond, point, means in rows:
        score = float(means[SELECT_BY].mean())
        if cond not in best or score > best[cond]:
            best[cond], selected[cond] = score, dict(zip(TUNED, point))
    head = " | ".join(TUNED)
    lines = [f"| condition | {head} | tuning seeds | RM, {tables.window_label(updates)} [95% CI] "
             "(selects) | gold | KL |",
             "|---|" + "---|" * len(TUNED) + "---|---|---|---|"]
    for cond, point, means in sorted(rows, key=lambda r: (list(best).index(r[0]), r[1])):
        rm = means[SELECT_BY].to_numpy(dtype=float)
        mark = "**" if dict(zip(TUNED, point)) == selected[cond] else ""
        cells = " | ".join(f"{v:g}" for v in point)
        lines.append(
            f"| {mark}{cond}{mark} | {cells} | {len(rm)} | {mark}{tables.ci_text(rm)}{mark} | "
            f"{tables.num(float(means['gold_score'].mean()), 3)} | {tables.num(float(means['kl'].mean()), 1)} |")
    lines += ["", "Selected (bold): per condition the grid point with the highest mean RM over the final window "
              "across its tuning seeds; gold and KL are shown, never used to select. Intervals: 95% Student t "
              "over the tuning seeds (descriptive)."]
    return "\n".join(lines) + "\n", selected


def evaluation_flags(df: pd.DataFrame, selected: dict[str, dict[str, float]]) -> dict[str, str]:
    """Each condition's evaluation flags, e.g. ``{"abc (beta 0.8)": "--modes abc --set lr=0.0001 max_grad_norm=2"}``."""
    modes = df.groupby("condition", sort=False)["reward_mode"].first()
    return {cond: f"--modes {modes[cond]} --set " + " ".join(f"{f}={v:g}" for f, v in point.items())
            for cond, point in selected.items()}


def combine(dirs: Sequence[Path], out: Path, task_suffix: str = "each mode at its selected lr and max_grad_norm") -> pd.DataFrame:
    """Join the per-mode evaluation runs into one results file of one task (so the modes are compared, paired).

    Raises:
        ValueError: when two folders hold the same condition, or the folders ran different envs.
    """
    frames, metas = _load_many(dirs)
    seen: set[str] = set()
    for df in frames:
        dup = seen & set(df["condition"])
        if dup:
            raise ValueError(f"condition(s) {sorted(dup)} in more than one folder: one evaluation per mode")
        seen |= set(df["condition"])
    df = pd.concat(frames, ignore_index=True)
    if df["env_id"].nunique() != 1:
        raise ValueError(f"the evaluation runs used different envs {sorted(df['env_id'].unique())}")
    df["task"] = [f"{t}, {task_suffix}" for t in df["task"]]
    points = {}
    for f, meta in zip(frames, metas):
        point = grid_point(meta)
        for cond in dict.fromkeys(f["condition"]):
            points[str(cond)] = point
    save_raw(df, {"stage": "tuned evaluation", "selected": points, "invocations": metas}, out)
    return df


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("store", "combine"):
        p = sub.add_parser(name)
        p.add_argument("dirs", type=Path, nargs="+", help="benchmark --out folders")
        p.add_argument("--out", type=Path, required=True, help="the raw results file to write (.json.gz)")
    p = sub.add_parser("select")
    p.add_argument("results", type=Path, help="a file written by `tuning store`")
    ns = ap.parse_args(argv)
    if ns.cmd == "store":
        df = store(ns.dirs, ns.out)
    elif ns.cmd == "combine":
        df = combine(ns.dirs, ns.out)
        print(tables.all_tables(df, 20, 1))
        return 0
    else:
        df = load_results(ns.results)[0]
    text, selected = grid_table(df)
    print(text)
    for cond, flags in evaluation_flags(df, selected).items():
        print(f"{cond}: {flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
