"""Statistics for the benchmarks: bootstrap CIs, interquartile mean, time-to-threshold, rank agreement.

Everything here is a pure function of numpy arrays, so the tables and plots can be
redrawn from stored results and the helpers can be tested on hand-made inputs.

Conventions:
- ``scores`` arrays are ``(n_seeds, ...)``: seeds on axis 0; statistics reduce axis 0.
- CIs are percentile bootstraps over seeds (Efron), with a fixed seed so that a table
  redrawn from the same results is identical. With 3-5 seeds a bootstrap CI is a
  rough description of the spread, not a guarantee of coverage; the tables say n.
- The interquartile mean (IQM) is the 25%-trimmed mean that rliable recommends
  (Agarwal et al., 2021). ``rliable.metrics.aggregate_iqm`` is used when it imports;
  ``rliable.library`` (its bootstrap) needs the ``arch`` package, which does not import
  against the installed pandas, so the bootstrap here is ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

try:  # rliable's IQM is scipy's trim_mean(0.25) over all entries; prefer the reference implementation
    from rliable.metrics import aggregate_iqm as _rliable_iqm
except Exception:  # pragma: no cover - rliable is an optional extra
    _rliable_iqm = None

CI_LEVEL = 0.95
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def iqm(values: np.ndarray, axis: int | None = 0) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end).

    ``scipy.stats.trim_mean`` trims ``int(0.25 * n)`` values from each end, so for
    n < 4 nothing is trimmed and the IQM equals the mean (reported as such).
    """
    values = np.asarray(values, dtype=float)
    if axis is None and _rliable_iqm is not None:
        return float(_rliable_iqm(values))
    return sps.trim_mean(values, proportiontocut=0.25, axis=axis)


def _statistic(name: str) -> Callable[..., np.ndarray]:
    if name == "mean":
        return lambda x, axis=0: np.mean(x, axis=axis)
    if name == "iqm":
        return lambda x, axis=0: sps.trim_mean(x, 0.25, axis=axis)
    raise ValueError(f"unknown statistic {name!r}: use 'mean' or 'iqm'")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str = "mean",
    *,
    level: float = CI_LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile-bootstrap CI over seeds (axis 0).

    Args:
        values: ``(n_seeds,)`` or ``(n_seeds, k)``; NaNs are not allowed (drop them first).
        statistic: ``"mean"`` or ``"iqm"``.
        level: confidence level.
        n_resamples: bootstrap resamples.
        seed: bootstrap RNG seed (fixed: tables must be reproducible).
    Returns:
        ``(point, low, high)``, each of shape ``values.shape[1:]`` (scalars for 1-D input).
        With one seed the CI is ``(nan, nan)``; if all seeds agree it is ``(v, v)``
        (scipy would flag the degenerate resample distribution and return NaN).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.isnan(x).any():
        raise ValueError("bootstrap_ci got NaN: drop missing seeds before computing a CI")
    stat = _statistic(statistic)
    point = np.asarray(stat(x, axis=0))
    low, high = np.full_like(point, np.nan), np.full_like(point, np.nan)
    if x.shape[0] < 2:
        return point, low, high
    constant = np.all(x == x[:1], axis=0)
    low, high = np.where(constant, point, low), np.where(constant, point, high)
    if not constant.all():
        with warnings.catch_warnings():  # columns that are constant are handled above
            warnings.simplefilter("ignore")
            res = sps.bootstrap(
                (x,), stat, n_resamples=n_resamples, confidence_level=level, method="percentile",
                axis=0, vectorized=True, rng=np.random.default_rng(seed),
            )
        low = np.where(constant, low, res.confidence_interval.low)
        high = np.where(constant, high, res.confidence_interval.high)
    return point, low, high


def first_update_reaching(updates: Sequence[int], curve: Sequence[float], threshold: float) -> int | None:
    """The first update whose value is >= ``threshold`` (None if the curve never gets there).

    ``updates`` and ``curve`` are aligned; ``curve`` is usually the mean over seeds.
    """
    updates, curve = np.asarray(updates), np.asarray(curve, dtype=float)
    if updates.shape != curve.shape:
        raise ValueError(f"updates {updates.shape} and curve {curve.shape} differ in shape")
    hit = np.nonzero(curve >= threshold)[0]
    return None if len(hit) == 0 else int(updates[hit[0]])


def trailing_mean(curve: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (window 1 = the curve itself); the first points average what exists.

    Trailing, not centred, so that "first update reaching X" never uses later updates.
    """
    c = np.asarray(curve, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    csum = np.cumsum(np.insert(c, 0, 0.0))
    idx = np.arange(1, len(c) + 1)
    start = np.maximum(idx - window, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def speedup_vs_baseline(
    updates: Sequence[int], curves: dict[str, np.ndarray], baseline: str, window: int = 1
) -> dict[str, tuple[int | None, float]]:
    """The paper's speed figure: when does each curve first reach the baseline's best value?

    Args:
        updates: update numbers shared by all curves.
        curves: condition -> mean curve (over seeds).
        baseline: which condition sets the threshold (its maximum after smoothing).
        window: trailing moving-average window applied to every curve first.
    Returns:
        condition -> (first update reaching the baseline's best, that update / the baseline's).
        The baseline reaches its own best at its arg-max, so its ratio is 1.
    """
    smooth = {k: trailing_mean(v, window) for k, v in curves.items()}
    threshold = float(np.max(smooth[baseline]))
    base_hit = first_update_reaching(updates, smooth[baseline], threshold)
    out: dict[str, tuple[int | None, float]] = {}
    for cond, curve in smooth.items():
        hit = first_update_reaching(updates, curve, threshold)
        out[cond] = (hit, math.nan if hit is None or not base_hit else hit / base_hit)
    return out


def curve_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of two curves (NaN if either is constant or shorter than 3 points)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when either vector is constant (ranks undefined)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(sps.spearmanr(x, y).statistic)


def permutation_spearman(x: Sequence[float], y: Sequence[float], rng: np.random.Generator, n: int = 20) -> float:
    """Mean Spearman of ``y`` with ``n`` random permutations of ``x``: a chance floor for ``x``'s ranking.

    Uniform credit has no ranking at all (a constant vector), so its rank correlation is
    undefined; "a credit vector with ``x``'s values in random order" is the fair floor.
    """
    x = np.asarray(x, dtype=float)
    vals = [spearman(rng.permutation(x), y) for _ in range(n)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    """Total-variation distance 0.5 * sum |p - q| between two credit distributions (each sums to 1)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def format_ci(point: float, low: float, high: float, digits: int = 2) -> str:
    """``"1.23 [0.98, 1.51]"``; the bracket is dropped when the CI is undefined (one seed)."""
    if point is None or (isinstance(point, float) and math.isnan(point)):
        return "n/a"
    if low is None or math.isnan(low):
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
