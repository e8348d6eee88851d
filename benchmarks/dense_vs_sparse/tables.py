"""Markdown tables from the per-update, per-seed results: windows, paired tests, updates-to-reach, headline.

Every number docs/results.md quotes for a training experiment comes from here, so
``--from-results`` regenerates each table (and :mod:`benchmarks.dense_vs_sparse.docs_blocks`
checks the copies in the docs). Statistics: :mod:`benchmarks.stats` (Student-t intervals
over seeds, paired t tests, Clopper-Pearson probability of improvement, Holm).

Per task (one results table), three tables:

1. **Per condition**: RM at an early update, the mean over the final window (the last
   ``final_window`` updates every run has, e.g. updates 141-150) with its interval, IQM
   and seed sd, the mean over the run; gold, KL, value loss and completion length.
2. **Declared comparisons** (:data:`DECLARED_METRICS` over the final window, each
   condition minus the baseline on the same seeds): mean difference [t interval], IQM of
   the differences, on how many seeds the condition is higher [Clopper-Pearson], the
   paired t test's p and its Holm-adjusted p over *every* declared comparison in the
   results (all tasks), and the verdict: "higher" / "lower" only when the Holm-adjusted p
   is below 0.05, otherwise "no difference detected".
3. **Updates to reach** fixed RM levels (:data:`LEVELS` of the way from the initial RM to
   the best condition's final-window level): per seed, the first update whose
   ``speed_window``-update trailing mean reaches the level; how many seeds do, the median
   (seeds that never reach count as "never") with an order-statistic interval, and on how
   many paired seeds the condition gets there before the baseline. Descriptive: not in the
   declared family (at 5 seeds an exact sign test cannot reach p < 0.05).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats

#: Metrics compared against the baseline over the final window, declared before the issue-19
#: reruns; the Holm family is every (task, condition, metric) of one results file.
DECLARED_METRICS: tuple[str, ...] = ("rm_score", "gold_score")
#: Updates in the final window (e.g. updates 141-150 of 150).
FINAL_WINDOW = 10
#: RM levels of the speed table, as fractions of the way from the initial RM to the best final level.
LEVELS: tuple[float, ...] = (0.5, 0.8)
#: Trailing window (updates) smoothing each seed's curve before its first crossing is read,
#: so that one noisy update cannot pass a level.
SPEED_WINDOW = 10
ALPHA = 1 - stats.CI_LEVEL
#: The sentence every headline carries (issue 19: "same seed, same numbers" holds per machine).
REPRODUCIBILITY = (
    "Seeded runs are identical on one machine and build (same code, same torch / numpy builds, same "
    "thread count); on another machine or build the same seed gives other numbers, so compare the "
    "verdicts and intervals, not the digits."
)
_LABELS = {"rm_score": "RM", "gold_score": "gold", "kl": "KL", "value_loss": "value loss", "mean_len": "length"}


def seed_frame(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``seed x update`` table of one condition's ``metric``, on updates every seed has (NaN rows kept out)."""
    if metric not in df.columns:
        return pd.DataFrame()
    return df.pivot_table(index="seed", columns="update", values=metric, aggfunc="mean").dropna(axis=1)


def seed_matrix(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(updates, values)`` with ``values[seed, update]`` for one condition, on updates every seed has."""
    wide = seed_frame(df, metric)
    return wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def _at_update(updates: np.ndarray, values: np.ndarray, u: int) -> tuple[int, np.ndarray]:
    """Values at update ``u`` (or the last update before it, for short runs)."""
    idx = max(int(np.searchsorted(updates, u, side="right")) - 1, 0)
    return int(updates[idx]), values[:, idx]


def ci_text(values: np.ndarray, statistic: str = "mean", digits: int = 2) -> str:
    """``mean [low, high]`` over the non-NaN values with a percentile bootstrap, or ``n/a``.

    For statistics over many samples (the fidelity tables' hundreds of completions); over
    seeds use :func:`t_text`, whose interval keeps its coverage at 3-10 seeds.
    """
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return "n/a"
    point, low, high = stats.bootstrap_ci(v, statistic)
    return stats.format_ci(float(point), float(low), float(high), digits)


def t_text(values: np.ndarray, digits: int = 2) -> str:
    """``mean [low, high]`` over the non-NaN seeds with the Student-t interval, or ``n/a``."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "n/a"
    point, low, high = stats.mean_ci(v)
    return stats.format_ci(float(point), float(low), float(high), digits)


def num(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, ``n/a`` for None or NaN."""
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _conditions(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["condition"]))  # first-seen order = launch order


def final_updates(df: pd.DataFrame, window: int = FINAL_WINDOW) -> list[int]:
    """The last ``window`` updates that every run of the task has (e.g. 141..150)."""
    common: set[int] | None = None
    for _, run in df.groupby(["condition", "seed"]):
        u = set(run.loc[run["rm_score"].notna(), "update"].astype(int))
        common = u if common is None else common & u
    return sorted(common or set())[-window:]


def window_means(df: pd.DataFrame, metric: str, updates: list[int]) -> pd.Series:
    """Per seed (index), the mean of ``metric`` over ``updates`` (seeds lacking the metric dropped)."""
    if metric not in df.columns:
        return pd.Series(dtype=float)
    sub = df[df["update"].isin(updates)]
    return sub.groupby("seed")[metric].mean().dropna()


def window_label(updates: list[int]) -> str:
    """``updates 141-150`` (or ``update 7`` for one)."""
    return f"updates {updates[0]}-{updates[-1]}" if len(updates) > 1 else f"update {updates[0]}"


# ----------------------------------------------------------------------------- declared comparisons


@dataclass(frozen=True)
class Comparison:
    """One declared comparison: ``condition`` minus ``baseline`` on ``metric`` over the final window of ``task``."""

    task: str
    condition: str
    baseline: str
    metric: str
    window: str
    result: stats.PairedResult
    p_holm: float

    @property
    def verdict(self) -> str:
        return stats.verdict(self.result.mean, self.p_holm, alpha=ALPHA)


def declared_comparisons(
    df: pd.DataFrame, metrics: tuple[str, ...] = DECLARED_METRICS, final_window: int = FINAL_WINDOW
) -> list[Comparison]:
    """Every declared comparison in the results, with Holm over all of them (the experiment's family)."""
    raw: list[tuple[str, str, str, str, str, stats.PairedResult]] = []
    for task in dict.fromkeys(df["task"]):
        sub = df[df.task == task]
        baseline = str(sub["baseline"].iloc[0])
        updates = final_updates(sub, final_window)
        if baseline not in set(sub["condition"]) or not updates:
            continue
        for metric in metrics:
            base = window_means(sub[sub.condition == baseline], metric, updates)
            for cond in _conditions(sub):
                if cond == baseline:
                    continue
                treat = window_means(sub[sub.condition == cond], metric, updates)
                seeds = sorted(set(base.index) & set(treat.index))  # paired: same seeds only
                if not seeds:
                    continue
                res = stats.paired_test(treat.loc[seeds].to_numpy(), base.loc[seeds].to_numpy())
                raw.append((task, cond, baseline, metric, window_label(updates), res))
    adjusted = stats.holm([r[-1].p_value for r in raw])
    return [Comparison(*r, p_holm=float(p)) for r, p in zip(raw, adjusted)]


def comparisons_table(comparisons: list[Comparison], family_size: int) -> str:
    """The declared comparisons of one task as a markdown table."""
    lines = [
        "| condition - baseline | metric | seeds | difference, mean [95% CI] | IQM of differences | "
        "higher on seeds [95% CI] | p (paired t) | Holm p (family of " + str(family_size) + ") | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {_comparison_cells(c)} |" for c in comparisons]
    return "\n".join(lines)


def _comparison_cells(c: Comparison) -> str:
    """One comparison's cells, from ``condition - baseline`` to the verdict (without the outer pipes)."""
    r = c.result
    digits = 3 if c.metric == "gold_score" else 2
    diff = stats.format_ci(r.mean, r.low, r.high, digits)
    return (
        f"{c.condition} - {c.baseline} | {_LABELS.get(c.metric, c.metric)}, {c.window} | {r.n} | {diff} | "
        f"{num(r.iqm, digits)} | {r.n_better}/{r.n} [{num(r.p_improve_low)}, {num(r.p_improve_high)}] | "
        f"{_p_text(r.p_value)} | {_p_text(c.p_holm)} | {c.verdict}"
    )


def setting_contrast(
    base: pd.DataFrame, treat: pd.DataFrame, base_label: str, treat_label: str,
    metrics: tuple[str, ...] = DECLARED_METRICS, final_window: int = FINAL_WINDOW,
) -> str:
    """One setting against another, per condition, as a markdown table: descriptive, not a verdict.

    ``base`` and ``treat`` are two results files of one task run with one setting changed (e.g.
    section 1's runs and the same modes with ``gae_lambda=1.0``). For each condition in both and
    each metric: ``treat - base`` on the seeds both have, over the final window (the same updates
    in both, e.g. 141-150), its mean [95% t interval], IQM, the seeds on which ``treat`` is higher
    [Clopper-Pearson] and the paired t test's p, *unadjusted*. These contrasts are declared
    descriptive (no family, no correction), so the last column reads the unadjusted p at 0.05 and
    says so; a citable verdict needs a declared family (:func:`declared_comparisons`).

    Raises:
        ValueError: when the two files share no condition, or their final windows differ.
    """
    updates, other = final_updates(base, final_window), final_updates(treat, final_window)
    if updates != other:
        raise ValueError(f"final windows differ ({window_label(updates)} vs {window_label(other)}): "
                         "contrast runs of the same length")
    conds = [c for c in _conditions(base) if c in set(treat["condition"])]
    if not conds:
        raise ValueError(f"no condition in both ({_conditions(base)} vs {_conditions(treat)})")
    lines = [
        f"| condition | metric | seeds | {treat_label} - {base_label}, mean [95% CI] | IQM of differences | "
        f"{treat_label} higher on seeds [95% CI] | p (paired t, unadjusted) | reading (descriptive) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for metric in metrics:
        digits = 3 if metric == "gold_score" else 2
        for cond in conds:
            a = window_means(base[base.condition == cond], metric, updates)
            b = window_means(treat[treat.condition == cond], metric, updates)
            seeds = sorted(set(a.index) & set(b.index))  # paired: same seeds only
            if not seeds:
                continue
            r = stats.paired_test(b.loc[seeds].to_numpy(), a.loc[seeds].to_numpy())
            reading = stats.verdict(r.mean, r.p_value, alpha=ALPHA)
            lines.append(
                f"| {cond} | {_LABELS.get(metric, metric)}, {window_label(updates)} | {r.n} | "
                f"{stats.format_ci(r.mean, r.low, r.high, digits)} | {num(r.iqm, digits)} | "
                f"{r.n_better}/{r.n} [{num(r.p_improve_low)}, {num(r.p_improve_high)}] | {_p_text(r.p_value)} | "
                f"{reading}{'' if reading.startswith('no ') else ' (unadjusted)'} |"
            )
    lines += ["", f"Descriptive contrast, declared so before the runs: per condition, {treat_label} minus "
              f"{base_label} on the seeds both ran (same seeds, so the same prompts and initial weights); "
              "95% Student t interval, Clopper-Pearson interval of the seeds on which it is higher, the paired t "
              "test's p with no correction for the other rows. Not a verdict."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- per condition


def conditions_table(df: pd.DataFrame, report_update: int, updates: list[int]) -> str:
    """RM per condition: early update, final window (mean [CI], IQM, seed sd), mean over the run."""
    win = window_label(updates)
    u_rep = min(report_update, max(updates))
    lines = [
        f"| condition | seeds | RM @ update {u_rep} | RM, {win}, mean [95% CI] | IQM | seed sd | RM mean over run |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in _conditions(df):
        sub = df[df.condition == c]
        all_u, rm = seed_matrix(sub, "rm_score")
        fin = window_means(sub, "rm_score", updates).to_numpy()
        _, at_rep = _at_update(all_u, rm, u_rep)
        sd = float(np.std(fin, ddof=1)) if len(fin) > 1 else math.nan
        lines.append(
            f"| {c} | {rm.shape[0]} | {t_text(at_rep)} | {t_text(fin)} | {num(float(stats.iqm(fin)) if len(fin) else math.nan)} | "
            f"{num(sd)} | {t_text(rm.mean(axis=1))} |"
        )
    return "\n".join(lines)


def diagnostics_table(df: pd.DataFrame, updates: list[int]) -> str:
    """Gold, KL, value loss, completion length and corr(RM, gold) per condition."""
    win = window_label(updates)
    has_len = "mean_len" in df.columns and df["mean_len"].notna().any()
    lines = [
        f"| condition | gold, {win} | KL, {win} | value loss, mean over run | "
        + (f"length, update {int(df['update'].min())} -> {win} | " if has_len else "")
        + "corr(RM, gold) over updates, per seed |",
        "|---|---|---|---|" + ("---|" if has_len else "") + "---|",
    ]
    for c in _conditions(df):
        sub = df[df.condition == c]
        _, rm = seed_matrix(sub, "rm_score")
        _, gold = seed_matrix(sub, "gold_score")
        _, vl = seed_matrix(sub, "value_loss")
        corr = np.array([stats.curve_correlation(r, g) for r, g in zip(rm, gold)]) if gold.shape == rm.shape else np.array([])
        cells = [
            t_text(window_means(sub, "gold_score", updates).to_numpy(), 3),
            t_text(window_means(sub, "kl", updates).to_numpy(), 1),
            t_text(vl.mean(axis=1), 2) if vl.size else "n/a",
        ]
        if has_len:
            first = sub[sub["update"] == sub["update"].min()]["mean_len"].mean()
            last = window_means(sub, "mean_len", updates).mean()
            cells.append(f"{first:.1f} -> {last:.1f}")
        cells.append(t_text(corr) if corr.size else "n/a")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- updates to reach


def reach_levels(df: pd.DataFrame, updates: list[int], levels: tuple[float, ...] = LEVELS) -> tuple[float, float, str, list[float]]:
    """``(initial RM, best final level, best condition, [levels])`` of one task.

    The initial RM is the mean over every run of the first update's RM (the initial policy's
    score, whatever the credit); the best final level is the highest final-window mean over
    conditions; a level q sits at ``initial + q * (best - initial)``. RM scores are signed,
    so "q of the best final level" is measured from where every run starts, not from 0.
    """
    first = df[df["update"] == df["update"].min()]["rm_score"].mean()
    finals = {c: window_means(df[df.condition == c], "rm_score", updates).mean() for c in _conditions(df)}
    best = max(finals, key=lambda c: finals[c])
    return float(first), float(finals[best]), best, [float(first + q * (finals[best] - first)) for q in levels]


def _median_text(values: np.ndarray) -> str:
    med, low, high, cov = stats.median_ci(values)

    def u(x: float) -> str:
        return "never" if math.isinf(x) else f"{x:g}"

    if math.isnan(low):
        return u(med)
    note = "" if cov >= stats.CI_LEVEL else f" ({cov:.0%}: min-max)"
    return f"{u(med)} [{u(low)}, {u(high)}]{note}"


def levels_table(df: pd.DataFrame, updates: list[int], window: int = SPEED_WINDOW, levels: tuple[float, ...] = LEVELS) -> str:
    """Per condition and level: seeds reaching it, median update [interval], earlier than the baseline on k/n seeds."""
    baseline = str(df["baseline"].iloc[0])
    start, best, best_cond, marks = reach_levels(df, updates, levels)
    hits: dict[str, dict[float, pd.Series]] = {}
    for c in _conditions(df):
        wide = seed_frame(df[df.condition == c], "rm_score")
        hits[c] = {
            q: pd.Series(stats.updates_to_reach(wide.columns.to_numpy(), wide.to_numpy(dtype=float), m, window), index=wide.index)
            for q, m in zip(levels, marks)
        }
    lines = [
        f"RM levels: initial {start:.2f} (update {int(df['update'].min())}, mean over all runs), best final "
        f"{best:.2f} ({best_cond}, {window_label(updates)}); "
        + ", ".join(f"{q:.0%} of the way = {m:.2f}" for q, m in zip(levels, marks))
        + f". Each seed's {window}-update trailing mean, first update at or above the level.",
        "",
        "| condition | level | seeds reaching | median update [95% CI] | earlier than " + baseline + " on seeds [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for c in _conditions(df):
        for q in levels:
            h = hits[c][q]
            cell = "-"
            if c != baseline and baseline in hits:
                b = hits[baseline][q]
                seeds = sorted(set(h.index) & set(b.index))
                # both never reaching is a tie, not a win for either
                k = int(sum(h[s] < b[s] for s in seeds))
                _, lo, hi = stats.prob_improvement_ci(k, len(seeds))
                cell = f"{k}/{len(seeds)} [{num(lo)}, {num(hi)}]" if seeds else "n/a"
            lines.append(
                f"| {c} | {q:.0%} | {int(np.isfinite(h).sum())}/{len(h)} | {_median_text(h.to_numpy())} | {cell} |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- assembled


def task_tables(
    df: pd.DataFrame, report_update: int, smooth: int, speed_window: int = SPEED_WINDOW,
    final_window: int = FINAL_WINDOW, comparisons: list[Comparison] | None = None, family_size: int | None = None,
) -> str:
    """The three tables of one task (``comparisons``: this task's share of the experiment's family)."""
    updates = final_updates(df, final_window)
    if not updates:
        return "no update is shared by every run of this task"
    if comparisons is None:
        comparisons = declared_comparisons(df, final_window=final_window)
        family_size = len(comparisons)
    parts = [conditions_table(df, report_update, updates), diagnostics_table(df, updates)]
    if comparisons:
        parts.append(comparisons_table(comparisons, family_size or len(comparisons)))
    parts.append(levels_table(df, updates, speed_window))
    return "\n\n".join(parts)


NOTES = (
    "Mean over seeds [95% Student-t interval over seeds]; IQM = interquartile mean over seeds (the mean for "
    "fewer than 4 seeds); seed sd = standard deviation over seeds (ddof 1). Declared comparisons: per-seed "
    "differences condition - baseline on the same seeds, their mean [95% t interval] and IQM, the seeds on "
    "which the condition is higher [Clopper-Pearson 95%], the paired t test and its Holm adjustment over every "
    "declared comparison of these results; 'higher' / 'lower' only where the Holm p < 0.05, otherwise 'no "
    "difference detected'. Updates to reach: descriptive (not in the family); median over seeds with seeds "
    "that never reach counted as 'never', 95% order-statistic interval (for fewer than 6 seeds [min, max] "
    "with its exact coverage); 'earlier than' counts paired seeds, both never reaching is a tie. "
    "Statistics: benchmarks/stats.py, docs/statistics.md."
)


def all_tables(
    df: pd.DataFrame, report_update: int, smooth: int, speed_window: int = SPEED_WINDOW, final_window: int = FINAL_WINDOW
) -> str:
    """Tables for every task in the results, each under a heading; Holm runs over all tasks' comparisons."""
    family = declared_comparisons(df, final_window=final_window)
    parts = []
    for task in dict.fromkeys(df["task"]):
        mine = [c for c in family if c.task == task]
        text = task_tables(df[df.task == task], report_update, smooth, speed_window, final_window, mine, len(family))
        parts.append(f"### {task}\n\n{text}")
    return "\n\n".join(parts) + "\n\n" + NOTES + "\n"


def headline(
    experiments: list[tuple[str, pd.DataFrame]], final_window: int = FINAL_WINDOW, speed_window: int = SPEED_WINDOW
) -> str:
    """The README headline: every declared comparison of every experiment, negatives included.

    Args:
        experiments: ``(name, results)`` per experiment (one results file each; each is its own Holm family).
    """
    lines = [
        "| experiment | task | comparison | metric | difference [95% CI] | higher on seeds | Holm p | verdict | "
        "seeds reaching 80% level: condition / baseline | KL, final window: condition / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, df in experiments:
        family = declared_comparisons(df, final_window=final_window)
        reach: dict[tuple[str, str], str] = {}
        kl: dict[tuple[str, str], str] = {}
        for task in dict.fromkeys(df["task"]):
            sub = df[df.task == task]
            updates = final_updates(sub, final_window)
            if not updates:
                continue
            _, _, _, marks = reach_levels(sub, updates, (0.8,))
            for c in _conditions(sub):
                wide = seed_frame(sub[sub.condition == c], "rm_score")
                h = stats.updates_to_reach(wide.columns.to_numpy(), wide.to_numpy(dtype=float), marks[0], speed_window)
                reach[(task, c)] = f"{int(np.isfinite(h).sum())}/{len(h)}"
                # modes end at different KL (issue 19): the reader sees at what KL each verdict holds
                kl[(task, c)] = num(float(window_means(sub[sub.condition == c], "kl", updates).mean()), 1)
        for c in family:
            r = c.result
            digits = 3 if c.metric == "gold_score" else 2
            lines.append(
                f"| {name} | {c.task} | {c.condition} vs {c.baseline} | {_LABELS.get(c.metric, c.metric)}, {c.window} | "
                f"{stats.format_ci(r.mean, r.low, r.high, digits)} | {r.n_better}/{r.n} | {_p_text(c.p_holm)} | "
                f"**{c.verdict}** | {reach.get((c.task, c.condition), 'n/a')} / {reach.get((c.task, c.baseline), 'n/a')} | "
                f"{kl.get((c.task, c.condition), 'n/a')} / {kl.get((c.task, c.baseline), 'n/a')} |"
            )
    lines += [
        "",
        "Paired per-seed differences (condition - baseline, same seeds), 95% Student-t interval, Holm over each "
        "experiment's declared comparisons; a verdict other than 'no difference detected' needs Holm p < 0.05. "
        "80% level: 80% of the way from the initial RM to the best condition's final-window RM, first update of "
        f"each seed's {speed_window}-update trailing mean. KL: mean over seeds of the final window (the modes are "
        "compared at the KL each reached, not at equal KL). " + REPRODUCIBILITY,
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- fixed-KL sweep (--sweep kl)


def is_kl_sweep(df: pd.DataFrame) -> bool:
    """Whether the results are ``--sweep kl``'s: every row has its run's fixed KL coefficient."""
    return (
        {"sweep", "fixed_kl_coef"} <= set(df.columns) and bool((df["sweep"] == "kl").all())
        and bool(df["fixed_kl_coef"].notna().all())
    )


@dataclass(frozen=True)
class KLPoint:
    """One (coefficient, condition) cell of a kl sweep: each seed's mean over the final window.

    ``rm``, ``gold``, ``kl``: per-seed values indexed by seed (seeds lacking a metric dropped).
    """

    title: str  #: the env's title (``plan.kl_title`` of the task)
    coef: float
    condition: str
    window: str  #: e.g. "updates 141-150"
    rm: pd.Series
    gold: pd.Series
    kl: pd.Series

    def ci(self, metric: str) -> tuple[float, float, float]:
        """``(mean, low, high)`` over seeds of ``metric`` (``"rm"``, ``"gold"`` or ``"kl"``), Student t; NaN if absent."""
        v = getattr(self, metric).to_numpy(dtype=float)
        if len(v) == 0:
            return math.nan, math.nan, math.nan
        point, low, high = stats.mean_ci(v)
        return float(point), float(low), float(high)


def _kl_tasks(df: pd.DataFrame) -> list[tuple[str, float, str]]:
    """``(title, coefficient, task)`` of every task, by title (first seen) then by coefficient."""
    from benchmarks.dense_vs_sparse.plan import kl_title

    tasks = [(kl_title(str(task)), float(df.loc[df.task == task, "fixed_kl_coef"].iloc[0]), str(task))
             for task in dict.fromkeys(df["task"])]
    titles = list(dict.fromkeys(t for t, _, _ in tasks))
    return sorted(tasks, key=lambda x: (titles.index(x[0]), x[1]))


def kl_points(df: pd.DataFrame, final_window: int = FINAL_WINDOW) -> list[KLPoint]:
    """Every (coefficient, condition) cell of a kl sweep, by title, coefficient, then condition (launch order).

    The final window is the main tables' rule, per coefficient (task): the last
    ``final_window`` updates every run of that coefficient has.
    """
    points = []
    for title, coef, task in _kl_tasks(df):
        sub = df[df.task == task]
        updates = final_updates(sub, final_window)
        if not updates:
            continue
        for cond in _conditions(sub):
            rows = sub[sub.condition == cond]
            points.append(KLPoint(title, coef, cond, window_label(updates), window_means(rows, "rm_score", updates),
                                  window_means(rows, "gold_score", updates), window_means(rows, "kl", updates)))
    return points


def _ci_cell(point: KLPoint, metric: str, digits: int) -> str:
    return t_text(getattr(point, metric).to_numpy(dtype=float), digits)


def _window_header(points: list[KLPoint]) -> str:
    windows = list(dict.fromkeys(p.window for p in points))
    return windows[0] if len(windows) == 1 else "final window"


def kl_conditions_table(points: list[KLPoint]) -> str:
    """Per coefficient and condition: RM (mean [CI], IQM, seed sd), gold and KL over the final window."""
    win = _window_header(points)
    lines = [
        f"| KL coef | condition | seeds | RM, {win}, mean [95% CI] | IQM | seed sd | gold, {win} | KL, {win} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        rm = p.rm.to_numpy(dtype=float)
        sd = float(np.std(rm, ddof=1)) if len(rm) > 1 else math.nan
        lines.append(
            f"| {p.coef:g} | {p.condition} | {len(rm)} | {_ci_cell(p, 'rm', 2)} | "
            f"{num(float(stats.iqm(rm)) if len(rm) else math.nan)} | {num(sd)} | {_ci_cell(p, 'gold', 3)} | "
            f"{_ci_cell(p, 'kl', 1)} |"
        )
    return "\n".join(lines)


def kl_comparisons_table(df: pd.DataFrame, comparisons: list[Comparison], family_size: int) -> str:
    """Declared comparisons of a kl sweep (condition - sparse at each coefficient), by coefficient.

    ``comparisons``: those to show (Holm-adjusted over the whole family of ``family_size``).
    """
    coef = {task: c for _, c, task in _kl_tasks(df)}
    ordered = sorted(comparisons, key=lambda c: coef[c.task])  # stable: metric, then condition, within a coefficient
    lines = [
        "| KL coef | condition - baseline | metric | seeds | difference, mean [95% CI] | IQM of differences | "
        f"higher on seeds [95% CI] | p (paired t) | Holm p (family of {family_size}) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {coef[c.task]:g} | {_comparison_cells(c)} |" for c in ordered]
    return "\n".join(lines)


def kl_frontier_table(points: list[KLPoint]) -> str:
    """Per condition, its frontier's points in order of mean KL: KL, RM and gold over the final window.

    Below the table: each condition's range of mean KL and the range every condition covers,
    the only range over which two frontiers can be compared at equal KL.
    """
    win = _window_header(points)
    lines = [
        f"| condition | KL coef | KL, {win}, mean [95% CI] | RM, {win}, mean [95% CI] | gold, {win}, mean [95% CI] |",
        "|---|---|---|---|---|",
    ]
    ranges: dict[str, tuple[float, float]] = {}
    for cond in dict.fromkeys(p.condition for p in points):
        mine = sorted((p for p in points if p.condition == cond), key=lambda p: (math.isnan(p.ci("kl")[0]), p.ci("kl")[0]))
        for p in mine:
            lines.append(f"| {cond} | {p.coef:g} | {_ci_cell(p, 'kl', 1)} | {_ci_cell(p, 'rm', 2)} | {_ci_cell(p, 'gold', 3)} |")
        kls = [p.ci("kl")[0] for p in mine if not math.isnan(p.ci("kl")[0])]
        if kls:
            ranges[cond] = (min(kls), max(kls))
    if ranges:
        low, high = max(r[0] for r in ranges.values()), min(r[1] for r in ranges.values())
        shared = f"{low:.1f}-{high:.1f}" if low <= high else "none (no KL that every condition's frontier reaches)"
        lines += [
            "",
            "Mean KL covered by each frontier: " + "; ".join(f"{c} {a:.1f}-{b:.1f}" for c, (a, b) in ranges.items())
            + f". Range every condition covers: {shared}. A condition is better at equal KL only where its frontier "
            "lies above another's over the same KL range; no single winner is computed.",
        ]
    return "\n".join(lines)


def kl_notes(df: pd.DataFrame, family: list[Comparison]) -> str:
    """The kl sweep tables' caption: statistics, the declared family (its size and make-up), how to read a frontier."""
    from benchmarks.dense_vs_sparse.plan import slug

    coefs = {c for _, c, _ in _kl_tasks(df)}
    conds = list(dict.fromkeys(c.condition for c in family))
    metrics = list(dict.fromkeys(_LABELS.get(c.metric, c.metric) for c in family))
    n_coefs = len({c.task for c in family})
    make_up = (f" ({n_coefs} coefficient{'s' * (n_coefs != 1)} x {len(conds)} condition{'s' * (len(conds) != 1)} vs "
               f"{family[0].baseline} x {len(metrics)} metric{'s' * (len(metrics) != 1)}: "
               f"{', '.join(metrics)})" if family and n_coefs * len(conds) * len(metrics) == len(family) else "")
    seeds = min((c.result.n for c in family), default=0)
    detect = (
        f" At {seeds} seeds and a family of {len(family)}, the first Holm rejection needs |mean difference| >= "
        f"{stats.detectable_difference(seeds, len(family)):.2f} x the sd of the per-seed differences "
        "(stats.detectable_difference); a smaller difference is 'no difference detected', not 'equal'."
        if family and seeds >= 2 else ""
    )
    titles = list(dict.fromkeys(t for t, _, _ in _kl_tasks(df)))
    figures = ", ".join(f"frontier_{slug(t)}.png" for t in titles)
    return (
        f"Fixed-KL sweep over the KL-penalty coefficients {', '.join(f'{c:g}' for c in sorted(coefs))}: every run holds "
        "its coefficient fixed (kl_coef = the coefficient, adaptive_kl off); every other setting is the same for "
        "every run. Mean over seeds [95% Student-t interval over seeds] of each seed's mean over the final window (the "
        f"last {FINAL_WINDOW} updates every run of that coefficient has); IQM = interquartile mean over seeds (the mean "
        "for fewer than 4 seeds); seed sd = standard deviation over seeds (ddof 1). Declared comparisons: per-seed "
        "differences condition - baseline at the same coefficient on the same seeds, their mean [95% t interval] and "
        "IQM, the seeds on which the condition is higher [Clopper-Pearson 95%], the paired t test and its Holm "
        f"adjustment over the sweep's declared family of {len(family)}{make_up}; 'higher' / 'lower' only where the "
        f"Holm p < 0.05, otherwise 'no difference detected'.{detect} Frontiers ({figures}): per condition, the points "
        "(mean KL, mean RM) and (mean KL, mean gold) over the coefficients; the coefficient sets the penalty, not the "
        "KL a run reaches, so each condition's points lie at its own KLs. A condition is better at equal KL only where "
        "its frontier lies above another's over the same KL range; outside the range both cover nothing is compared, "
        "and no single winner is computed. Gold falling while RM rises along a frontier (towards higher KL) is "
        "over-optimisation of the reward model. Statistics: benchmarks/stats.py, docs/statistics.md."
    )


#: The parts of the kl sweep's tables, in the order :func:`kl_tables` writes them (docs blocks pick one).
KL_PARTS: tuple[str, ...] = ("conditions", "comparisons", "frontier")


def kl_tables(
    df: pd.DataFrame, final_window: int = FINAL_WINDOW, parts: tuple[str, ...] = KL_PARTS, notes: bool = True
) -> str:
    """The kl sweep's tables, one ``###`` section per env title; Holm over every declared comparison of the file.

    ``parts``: which of :data:`KL_PARTS`; ``notes``: end with the caption (:func:`kl_notes`).
    """
    unknown = sorted(set(parts) - set(KL_PARTS))
    if unknown:
        raise ValueError(f"unknown kl table part(s) {unknown}: use {list(KL_PARTS)}")
    if not is_kl_sweep(df):
        raise ValueError("these results are not --sweep kl's (no fixed_kl_coef on every row): use all_tables")
    family = declared_comparisons(df, final_window=final_window)
    points = kl_points(df, final_window)
    titles = list(dict.fromkeys(p.title for p in points))
    sections = []
    for title in titles:
        mine = [p for p in points if p.title == title]
        tasks = {task for t, _, task in _kl_tasks(df) if t == title}
        text = []
        for part in parts:
            if part == "conditions":
                text.append(kl_conditions_table(mine))
            elif part == "comparisons":
                text.append(kl_comparisons_table(df, [c for c in family if c.task in tasks], len(family)))
            else:
                text.append(kl_frontier_table(mine))
        body = "\n\n".join(text)
        sections.append(f"### {title}: fixed KL coefficient\n\n{body}" if len(titles) > 1 or notes else body)
    out = "\n\n".join(sections)
    return out + ("\n\n" + kl_notes(df, family) if notes else "") + "\n"


def report(
    df: pd.DataFrame, out: Path, report_update: int, smooth: int, header: str = "", speed_window: int = SPEED_WINDOW
) -> str:
    """Write ``tables.md`` and the PNGs into ``out``; return the tables (also printed).

    Results of ``--sweep kl`` get :func:`kl_tables` and, beside each coefficient's curves,
    ``frontier_<title>.png`` (:func:`plots.plot_frontier`).
    """
    from benchmarks.dense_vs_sparse.plots import plot_task

    out.mkdir(parents=True, exist_ok=True)
    kl_sweep = is_kl_sweep(df)
    text = header + (kl_tables(df) if kl_sweep else all_tables(df, report_update, smooth, speed_window))
    (out / "tables.md").write_text(text)
    for task in dict.fromkeys(df["task"]):
        plot_task(df[df.task == task], out, task, smooth, speed_window)
    if kl_sweep:
        from benchmarks.dense_vs_sparse.plots import plot_frontier

        for title in dict.fromkeys(p.title for p in kl_points(df)):
            plot_frontier(df, out, title)
    return text
