"""Dense (ABC) vs sparse reward on the embedded sentiment task: training runs, sweeps, credit fidelity.

Reproduces the experiments of Chan et al., "Dense Reward for Free in RLHF" (ICML 2024)
on ``abc_gym/Sentiment-v0`` with the project's agents (``agents.train``), and adds two
analyses the paper does not have: gold (VADER) vs proxy (reward model) score, and the
fidelity of ABC's credit to the task's gold per-token credit.

    python -m benchmarks.dense_vs_sparse --quick                 # 3 seeds, sparse/abc/uniform, < 10 min on 2 CPUs
    python -m benchmarks.dense_vs_sparse                         # 5 seeds, sparse/abc/uniform/oracle, paper's 150 updates
    python -m benchmarks.dense_vs_sparse --sweep length          # 8-15, 40-59 (and 90-109) new tokens
    python -m benchmarks.dense_vs_sparse --sweep beta            # ABC with beta in {0, .2, .4, .6, .8, 1}
    python -m benchmarks.dense_vs_sparse --sweep algos           # (ppo, a2c, trpo, maskable_ppo) x (sparse, abc)
    python -m benchmarks.dense_vs_sparse --fidelity              # no training: ABC credit vs gold credit
    python -m benchmarks.dense_vs_sparse --from-results results/dense_vs_sparse/results.json   # redraw only

Every run writes into ``--out``: ``results.json`` (settings + one row per seed and
update), ``results.csv`` (the same rows), ``tables.md`` and PNG learning curves. The
results are saved after every finished run, so an interrupted benchmark keeps what it
has; ``--resume`` skips runs already stored.

Statistics (see :mod:`benchmarks.stats`): means over seeds with 95% percentile-bootstrap
CIs over seeds, the interquartile mean (IQM) over seeds, and the paper's speed figure:
the first update at which a condition's mean curve reaches the best mean of the
baseline (sparse), divided by the update at which sparse itself gets there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/dense_vs_sparse.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks import stats

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- settings

#: Metrics every agent history row must carry (agents.train's documented keys).
METRICS: tuple[str, ...] = ("rm_score", "gold_score", "kl", "value_loss")
METRIC_LABELS = {"rm_score": "RM score", "gold_score": "gold (VADER) score", "kl": "KL to reference", "value_loss": "value loss"}
#: TrainConfig fields this script sets; anything else keeps the agent's default (or --set).
REQUIRED_FIELDS: tuple[str, ...] = (
    "env_id", "algo", "reward_mode", "beta", "seed", "n_updates", "episodes_per_update", "device", "log_dir", "progress",
)
ALGOS = ("ppo", "a2c", "trpo", "maskable_ppo", "token_ppo")
MODES = ("sparse", "abc", "uniform", "oracle")
PAPER_BETA = 0.8
PAPER_BATCH = 16  # completions per PPO update (the paper's batch size)
PAPER_UPDATES = 150  # the paper's IMDb runs: 150 PPO steps
BETA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SWEEP_ALGOS = ("ppo", "a2c", "trpo", "maskable_ppo")

#: Completion lengths of the length sweep -> registered env id. Lengths that have no
#: registered id get one from ``register_length_env`` (Sentiment-v0's kwargs, new range).
LENGTH_ENVS = {(8, 15): "abc_gym/Sentiment-v0", (40, 59): "abc_gym/SentimentLong-v0"}
DEFAULT_LENGTHS = ("8-15", "40-59", "90-109")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a (task, condition, seed) cell of a table.

    ``task`` names the table, ``condition`` its row; ``baseline`` is the condition in
    the same task whose best score sets the speed threshold (sparse, or beta 0).
    """

    sweep: str
    task: str
    env_id: str
    condition: str
    baseline: str
    algo: str
    reward_mode: str
    beta: float
    seed: int

    @property
    def name(self) -> str:
        return slug(f"{self.task}__{self.condition}__seed{self.seed}")


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# ----------------------------------------------------------------------------- environments


def parse_length(text: str) -> tuple[int, int]:
    """``"40-59"`` -> ``(40, 59)``."""
    m = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not m or int(m.group(1)) > int(m.group(2)):
        raise argparse.ArgumentTypeError(f"a length range is MIN-MAX with MIN <= MAX, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def length_env_id(lo: int, hi: int) -> str:
    """Env id for Sentiment-v0 with completions of ``lo``-``hi`` new tokens (registered on demand)."""
    if (lo, hi) in LENGTH_ENVS:
        return LENGTH_ENVS[(lo, hi)]
    return register_length_env(lo, hi)


def register_length_env(lo: int, hi: int) -> str:
    """Register ``abc_bench/Sentiment-{lo}-{hi}-v0``: Sentiment-v0's kwargs with a new length range.

    The id lives in this process only; worker processes call this again (``run_one``).
    Raises if prompt + completion would not fit the policy's or the reward model's positions.
    """
    import gymnasium as gym
    from gymnasium.envs.registration import registry
    from transformers import AutoConfig

    from abc_gym.registration import ENV_IDS
    from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH, load_prompts

    env_id = f"abc_bench/Sentiment-{lo}-{hi}-v0"
    if env_id in registry:
        return env_id
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(POLICY_PATH, local_files_only=True)
    longest_prompt = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in load_prompts())
    limit = min(AutoConfig.from_pretrained(p, local_files_only=True).n_positions for p in (POLICY_PATH, REWARD_MODEL_PATH))
    if longest_prompt + hi > limit:
        raise ValueError(
            f"{lo}-{hi} new tokens + {longest_prompt} prompt tokens exceed the models' {limit} positions: "
            "choose a shorter range for --lengths"
        )
    base = dict(ENV_IDS["abc_gym/Sentiment-v0"])
    base.update(min_new_tokens=lo, max_new_tokens=hi)
    spec = gym.spec("abc_gym/Sentiment-v0")
    gym.register(id=env_id, entry_point=spec.entry_point, vector_entry_point=spec.vector_entry_point, kwargs=base)
    return env_id


def env_label(env_id: str) -> str:
    """Table title for an env: its name and completion length range."""
    import gymnasium as gym

    kw = gym.spec(env_id).kwargs
    return f"{env_id.split('/')[-1]} ({kw.get('min_new_tokens')}-{kw.get('max_new_tokens')} new tokens)"


# ----------------------------------------------------------------------------- run plan


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    """The runs a command asks for, in the order they are launched."""
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    specs: list[RunSpec] = []

    def add(sweep: str, env_id: str, conds: Iterable[tuple[str, str, str, float]], baseline: str, task: str | None = None) -> None:
        task = task or env_label(env_id)
        for seed in seeds:  # seed-major, so a cut-short benchmark has every condition at the first seeds
            for condition, algo, mode, beta in conds:
                specs.append(RunSpec(sweep, task, env_id, condition, baseline, algo, mode, float(beta), seed))

    def mode_label(mode: str) -> str:
        return f"abc (beta {args.beta:g})" if mode == "abc" else mode

    if args.sweep is None:
        conds = [(mode_label(m), args.algo, m, args.beta) for m in args.modes]
        add("main", args.env_id, conds, baseline=mode_label("sparse"))
    elif args.sweep == "length":
        for lo, hi in args.lengths:
            conds = [(mode_label(m), args.algo, m, args.beta) for m in args.modes]
            add("length", length_env_id(lo, hi), conds, baseline=mode_label("sparse"))
    elif args.sweep == "beta":
        # beta 0 is sparse credit computed through the abc path: the natural baseline of the sweep
        conds = [(f"beta {b:g}", args.algo, "abc", b) for b in args.betas]
        add("beta", args.env_id, conds, baseline=f"beta {min(args.betas):g}")
    elif args.sweep == "algos":
        for algo in args.algos:
            conds = [(mode_label(m), algo, m, args.beta) for m in args.modes]
            add("algos", args.env_id, conds, baseline=mode_label("sparse"), task=f"{algo} on {env_label(args.env_id)}")
    else:  # argparse's choices make this unreachable
        raise ValueError(args.sweep)
    if args.sweep != "beta" and not any(s.reward_mode == "sparse" for s in specs):
        print("note: no sparse runs, so the speed column has no baseline", file=sys.stderr)
    return specs


# ----------------------------------------------------------------------------- training


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["learning_rate=1e-4", "target_kl=null"]`` -> ``{"learning_rate": 1e-4, "target_kl": None}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def make_train_config(spec: RunSpec, settings: dict[str, Any], log_dir: str | None) -> Any:
    """Build ``agents.train.TrainConfig`` for one run, checking the fields this script relies on.

    Fields not set here keep the agent's defaults (the paper's PPO settings); ``--set``
    overrides any field by name.
    """
    from agents.train import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = [f for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise RuntimeError(
            f"agents.train.TrainConfig lacks field(s) {missing} that the benchmark sets; "
            f"it has {sorted(names)}. Update agents/ or REQUIRED_FIELDS in benchmarks/dense_vs_sparse.py."
        )
    overrides = dict(settings.get("set") or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise RuntimeError(f"--set names unknown TrainConfig field(s) {unknown}; known fields: {sorted(names)}")
    kwargs = dict(
        env_id=spec.env_id, algo=spec.algo, reward_mode=spec.reward_mode, beta=spec.beta, seed=spec.seed,
        n_updates=settings["n_updates"], episodes_per_update=settings["episodes_per_update"],
        device=settings["device"], log_dir=log_dir, progress=False,
    )
    # optional fields: one torch pool per run (parallel runs must not oversubscribe), no per-run chatter
    optional = {"threads": settings["threads_per_job"], "quiet": True}
    kwargs.update({k: v for k, v in optional.items() if k in names})
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def history_rows(spec: RunSpec, history: Sequence[dict[str, Any]], wall_s: float) -> list[dict[str, Any]]:
    """Flatten one run's per-update history into table rows (spec fields + numeric metrics).

    A metric the agent did not report becomes NaN with a warning: a long run's other
    numbers are still worth keeping, and the tables show "n/a" rather than a fake zero.
    """
    if not history:
        raise RuntimeError(f"{spec.name}: train() returned no updates")
    absent = [m for m in METRICS if history[0].get(m) is None]
    if absent:
        print(f"warning: {spec.name}: agent history has no value for {absent}; stored as NaN", file=sys.stderr)
    rows = []
    for i, h in enumerate(history):
        row: dict[str, Any] = asdict(spec)
        row["update"] = int(h.get("update", i + 1))
        for key, value in h.items():
            if key != "update" and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                row[key] = float(value)
        for m in METRICS:  # always present, so tables and CSV columns never depend on what one agent reported
            row.setdefault(m, math.nan)
        row["run_wall_s"] = wall_s
        rows.append(row)
    return rows


def run_one(spec: RunSpec, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one (condition, seed) and return its rows. Runs in a worker process when --jobs > 1."""
    import torch

    torch.set_num_threads(settings["threads_per_job"])
    if spec.env_id.startswith("abc_bench/"):  # ids registered by this script exist per process
        lo, hi = map(int, re.findall(r"(\d+)-(\d+)", spec.env_id)[0])
        register_length_env(lo, hi)
    else:
        import abc_gym  # noqa: F401  registers the abc_gym ids

    from agents.train import train

    log_dir = None if settings.get("log_root") is None else str(Path(settings["log_root"]) / spec.name)
    cfg = make_train_config(spec, settings, log_dir)
    t0 = time.perf_counter()
    history = train(cfg)
    return history_rows(spec, history, time.perf_counter() - t0)


def run_specs(specs: list[RunSpec], settings: dict[str, Any], jobs: int, on_done) -> None:
    """Run every spec (in ``jobs`` processes), calling ``on_done(spec, rows)`` as each finishes."""
    if jobs <= 1:  # in-process: simplest to debug, and what the tests use
        for spec in specs:
            on_done(spec, run_one(spec, settings))
        return
    import multiprocessing as mp

    # spawn, not fork: torch's thread pools do not survive a fork safely
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, spec, settings): spec for spec in specs}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())


# ----------------------------------------------------------------------------- results I/O


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def save_results(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    """Write ``results.json`` (meta + rows) and ``results.csv`` (rows) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {"meta": meta, "rows": [{k: _jsonable(v) for k, v in r.items()} for r in rows]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)  # atomic: a crash mid-write never leaves half a results file
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    return path


def load_results(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and meta from a ``results.json`` / ``results.csv`` (or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json" if (p / "results.json").exists() else p / "results.csv"
    if not p.exists():
        raise FileNotFoundError(f"no results at {p}: pass a results.json / results.csv or its directory")
    if p.suffix == ".csv":
        return pd.read_csv(p), {}
    payload = json.loads(p.read_text())
    return pd.DataFrame(payload["rows"]), payload.get("meta", {})


# ----------------------------------------------------------------------------- analysis


def seed_matrix(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(updates, values)`` with ``values[seed, update]`` for one condition, on updates every seed has."""
    wide = df.pivot_table(index="seed", columns="update", values=metric, aggfunc="mean").dropna(axis=1)
    return wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def _at_update(updates: np.ndarray, values: np.ndarray, u: int) -> tuple[int, np.ndarray]:
    """Values at update ``u`` (or the last update before it, for short runs)."""
    idx = int(np.searchsorted(updates, u, side="right")) - 1
    idx = max(idx, 0)
    return int(updates[idx]), values[:, idx]


def _ci(values: np.ndarray, statistic: str = "mean", digits: int = 2) -> str:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return "n/a"
    point, low, high = stats.bootstrap_ci(v, statistic)
    return stats.format_ci(float(point), float(low), float(high), digits)


def task_tables(df: pd.DataFrame, report_update: int, smooth: int) -> str:
    """Markdown tables for one task (one row per condition)."""
    conds = list(dict.fromkeys(df["condition"]))  # first-seen order = launch order
    baseline = df["baseline"].iloc[0]
    curves, mats = {}, {}
    for c in conds:
        updates, rm = seed_matrix(df[df.condition == c], "rm_score")
        mats[c] = (updates, rm)
        curves[c] = rm.mean(axis=0)
    common = sorted(set.intersection(*(set(u.tolist()) for u, _ in mats.values())))
    speed: dict[str, tuple[int | None, float]] = {}
    if baseline in curves and common:
        aligned = {c: curves[c][np.isin(mats[c][0], common)] for c in conds}
        speed = stats.speedup_vs_baseline(common, aligned, baseline, window=smooth)

    last_u = int(max(u[-1] for u, _ in mats.values()))
    u_rep = min(report_update, last_u)
    smooth_note = "" if smooth == 1 else f", {smooth}-update trailing mean"
    lines = [
        f"| condition | seeds | RM @ update {u_rep} | RM @ last update | IQM RM @ last | RM mean over run | "
        f"first update >= {baseline}'s best{smooth_note} | / {baseline}'s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in conds:
        updates, rm = mats[c]
        _, at_rep = _at_update(updates, rm, u_rep)
        hit, ratio = speed.get(c, (None, math.nan))
        hit_s = "never" if hit is None else str(hit)
        if not speed:
            hit_s = "n/a"
        lines.append(
            f"| {c} | {rm.shape[0]} | {_ci(at_rep)} | {_ci(rm[:, -1])} (u{int(updates[-1])}) | {_ci(rm[:, -1], 'iqm')} | "
            f"{_ci(rm.mean(axis=1))} | {hit_s} | {'n/a' if math.isnan(ratio) else f'{ratio:.2f}'} |"
        )
    if speed and baseline in speed and speed[baseline][0] is not None:
        thr = float(np.max(stats.trailing_mean(aligned[baseline], smooth)))
        lines.append(f"\nSpeed threshold: {baseline}'s best mean RM score {thr:.2f} (reached at update {speed[baseline][0]}).")

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
            f"| {c} | {_ci(g_rep, digits=3)} | {_ci(gold[:, -1], digits=3)} | "
            f"{_ci(kl[:, -1]) if kl.size else 'n/a'} | {_ci(vl.mean(axis=1), digits=3) if vl.size else 'n/a'} | "
            f"{_ci(corr)} | {'n/a' if math.isnan(ratio) else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def all_tables(df: pd.DataFrame, report_update: int, smooth: int) -> str:
    """Tables for every task in the results, each under a heading."""
    parts = []
    for task in dict.fromkeys(df["task"]):
        parts.append(f"### {task}\n\n{task_tables(df[df.task == task], report_update, smooth)}")
    notes = (
        "Mean over seeds [95% percentile-bootstrap CI over seeds]; IQM = interquartile mean over seeds "
        "(equals the mean for fewer than 4 seeds). 'first update >= best': first update at which the "
        "condition's mean curve reaches the baseline's best mean (the paper's speed figure); the last "
        "column divides it by the baseline's own update. corr(RM, gold): Pearson correlation of the RM "
        "and gold curves of each seed, mean [CI] over seeds; near 1 means the gold score rises with the "
        "proxy, low or negative means the proxy is being over-optimised."
    )
    return "\n\n".join(parts) + "\n\n" + notes + "\n"


# ----------------------------------------------------------------------------- plots


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
                mean, low, high = stats.bootstrap_ci(vals)
                (line,) = ax.plot(updates, mean, label=f"{c} (n={vals.shape[0]})", lw=1.4)
                if vals.shape[0] > 1:
                    ax.fill_between(updates, low, high, color=line.get_color(), alpha=0.18, lw=0)
            ax.set_xlabel("update")
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        sm = "" if smooth == 1 else f"; {smooth}-update trailing mean"
        fig.suptitle(f"{task}: mean over seeds, 95% bootstrap CI{sm}", fontsize=9)
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


def report(df: pd.DataFrame, out: Path, report_update: int, smooth: int, header: str = "") -> str:
    """Write ``tables.md`` and the PNGs into ``out``; return the tables (also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    text = header + all_tables(df, report_update, smooth)
    (out / "tables.md").write_text(text)
    for task in dict.fromkeys(df["task"]):
        plot_task(df[df.task == task], out, task, smooth)
    return text


# ----------------------------------------------------------------------------- credit fidelity


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
    from abc_gym.tasks.sentiment import POLICY_PATH

    env = gym.make_vec(
        env_id, num_envs=batch, vectorization_mode="vector_entry_point",
        reward_mode="sparse", record_attention=True, device=device,
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
                    episodes.append({k: final[k][row] for k in final if not k.startswith("_")})
                pending &= ~terminated
    env.close()
    return episodes[:n_episodes]


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
    onehot = np.zeros(t)
    onehot[-1] = 1.0
    credit = {
        "abc_attention": a,  # beta = 1
        f"abc_beta{beta:g}": beta * a + (1 - beta) * onehot,
        "sparse": onehot,
        "uniform": np.full(t, 1.0 / t),
    }
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
        out[f"tv_{name}"] = stats.total_variation(w, g)
    return out


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
            f"| {env_id} | {r['used']} / {r['episodes']} | {_ci(rho, digits=3)} | {_ci(d['spearman_perm'].to_numpy(), digits=3)} | "
            f"{_ci(d['spearman_recency'].to_numpy(), digits=3)} | {r['spearman_undefined']} | {_ci(d['top1_abc'].to_numpy())} | "
            f"{_ci(d['attention_last_token'].to_numpy())} |"
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
        lines.append(f"| {env_id} | (share of tokens gold credits) | {_ci(d['gold_tokens'].to_numpy() / d['length'].to_numpy())} | |")
        for name in ("abc_attention", f"abc_beta{args.beta:g}", "sparse", "uniform"):
            lines.append(f"| {env_id} | {name} | {_ci(d['mass_' + name].to_numpy())} | {_ci(d['tv_' + name].to_numpy())} |")
        lines.append(f"| {env_id} | oracle | 1.00 | 0.00 |")
    wall = time.perf_counter() - t0
    text = "\n".join(lines) + (
        "\n\nMean [95% bootstrap CI over episodes]. Episodes whose completion has no word the gold rule credits "
        "(gold credit = uniform fallback), or that the reward model's scored row cannot see (ABC sparse fallback), "
        "are skipped and counted. Uniform credit is a constant vector, so its rank "
        "correlation is undefined (NaN); its floor is the chance level, estimated by correlating gold with ABC's own "
        "weights in random order (20 permutations per episode). 'abc_attention' is a_t alone (beta = 1); "
        f"'abc_beta{args.beta:g}' the credit the env hands out (beta a_t + (1 - beta) [t = T]).\n"
        f"\nRun time: {wall:.0f} s.\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(args, wall)
    (out / "fidelity.json").write_text(json.dumps({"meta": meta, "summary": results, "episodes": per_episode}, indent=1, default=_jsonable))
    (out / "fidelity.md").write_text(text)
    return text


# ----------------------------------------------------------------------------- provenance


def artefact_hashes() -> dict[str, str]:
    """Short sha256 of the shipped model weights: results belong to one build of the task."""
    from abc_gym.tasks.sentiment import MINILM_HEAD_PATH, POLICY_PATH, REWARD_MODEL_PATH

    out = {}
    for name, path in (("policy", POLICY_PATH / "model.safetensors"), ("reward_gpt2", REWARD_MODEL_PATH / "model.safetensors"),
                       ("reward_minilm_head", MINILM_HEAD_PATH / "head.safetensors")):
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "missing"
    return out


def run_meta(args: argparse.Namespace, wall_s: float | None) -> dict[str, Any]:
    """Command, settings, versions and artefacts: enough to rerun and to know what was run."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    return {
        "command": "python -m benchmarks.dense_vs_sparse " + " ".join(shlex.quote(a) for a in args.argv),
        "settings": {k: v for k, v in vars(args).items() if k != "argv"},
        "wall_s": wall_s,
        "git": {"commit": commit, "dirty": dirty},
        "artefacts": artefact_hashes(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "cuda": torch.cuda.is_available(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true",
                      help="3 seeds, sparse/abc/uniform, --quick-updates updates: the README's < 10 min check")
    what.add_argument("--smoke", action="store_true",
                      help="1 seed x 2 updates (with --quick: its modes): proves imports, tables and plots in "
                           "about a minute; numbers mean nothing (CI runs the README's main job this way)")
    what.add_argument("--sweep", choices=("length", "beta", "algos"), help="run a sweep instead of the main comparison")
    what.add_argument("--fidelity", action="store_true", help="no training: ABC credit vs gold credit on the shipped policy")
    what.add_argument("--from-results", metavar="PATH", help="redraw tables and plots from a results.json/.csv; no training")
    what.add_argument("--resume", action="store_true", help="skip runs already in --out/results.json")

    task = ap.add_argument_group("task and conditions")
    task.add_argument("--env-id", default="abc_gym/Sentiment-v0")
    task.add_argument("--modes", nargs="+", choices=MODES, default=None, help="credit modes (default: all four; --quick: sparse abc uniform)")
    task.add_argument("--beta", type=float, default=PAPER_BETA, help="ABC mixing weight (paper: 0.8)")
    task.add_argument("--betas", nargs="+", type=float, default=list(BETA_GRID), help="--sweep beta grid")
    task.add_argument("--lengths", nargs="+", type=parse_length, default=[parse_length(x) for x in DEFAULT_LENGTHS],
                      help="--sweep length: completion length ranges MIN-MAX (default 8-15 40-59 90-109)")
    task.add_argument("--algo", choices=ALGOS, default="ppo")
    task.add_argument("--algos", nargs="+", choices=ALGOS, default=list(SWEEP_ALGOS), help="--sweep algos: learners")

    train = ap.add_argument_group("training (agents.train.TrainConfig)")
    train.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; --quick: 3)")
    train.add_argument("--seed-offset", type=int, default=0, help="seeds are OFFSET .. OFFSET+SEEDS-1")
    train.add_argument("--n-updates", type=int, default=None, help=f"updates per run (default {PAPER_UPDATES}, the paper's)")
    train.add_argument("--quick-updates", type=int, default=30, help="updates per run under --quick")
    train.add_argument("--episodes-per-update", type=int, default=PAPER_BATCH, help="completions per update (paper: 16)")
    train.add_argument("--device", default="cpu")
    train.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                       help="override any other TrainConfig field (JSON value), e.g. --set learning_rate=1e-4")
    train.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel (processes)")
    train.add_argument("--threads-per-job", type=int, default=None, help="torch threads per run (default cpus // jobs)")
    train.add_argument("--log-dir", default=None, help="pass a per-run log_dir under this folder to the agent")

    rep = ap.add_argument_group("report")
    rep.add_argument("--out", default=None, help="output folder (default results/dense_vs_sparse[_SWEEP] or results/credit_fidelity)")
    rep.add_argument("--report-update", type=int, default=20, help="the early update the table reports (paper: 20)")
    rep.add_argument("--smooth", type=int, default=1,
                     help="trailing moving-average window for the speed column and plots (1 = raw, as the paper)")

    fid = ap.add_argument_group("--fidelity")
    fid.add_argument("--fidelity-envs", nargs="+", default=["abc_gym/Sentiment-v0", "abc_gym/Sentiment-MiniLM-v0"])
    fid.add_argument("--fidelity-episodes", type=int, default=512)
    fid.add_argument("--fidelity-batch", type=int, default=64)
    fid.add_argument("--fidelity-seed", type=int, default=0)

    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seeds = 3 if args.seeds is None else args.seeds
        args.modes = args.modes or ["sparse", "abc", "uniform"]
        args.n_updates = args.n_updates or args.quick_updates
    if args.smoke:
        args.seeds, args.n_updates = 1, 2
        args.report_update = min(args.report_update, args.n_updates)
    args.seeds = 5 if args.seeds is None else args.seeds
    args.modes = args.modes or (["sparse", "abc"] if args.sweep == "algos" else list(MODES))
    args.n_updates = args.n_updates or PAPER_UPDATES
    args.threads_per_job = args.threads_per_job or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    if args.out is None:
        if args.from_results:
            args.out = str(Path(args.from_results).parent if Path(args.from_results).is_file() else args.from_results)
        elif args.fidelity:
            args.out = "results/credit_fidelity"
        else:
            args.out = "results/dense_vs_sparse" + (f"_{args.sweep}" if args.sweep else "") + ("_smoke" if args.smoke else "")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)

    if args.fidelity:
        print(run_fidelity(args))
        print(f"total run time: {time.perf_counter() - t0:.0f} s -> {out}")
        return 0

    if args.from_results:
        df, meta = load_results(args.from_results)
        header = f"Results from `{meta.get('command', args.from_results)}`" + (
            f", run time {meta['wall_s']:.0f} s.\n\n" if meta.get("wall_s") else ".\n\n")
        print(report(df, out, args.report_update, args.smooth, header))
        print(f"redrawn in {time.perf_counter() - t0:.1f} s -> {out}")
        return 0

    import abc_gym  # noqa: F401  registers the env ids (the plan reads their length ranges)

    try:
        import agents.train  # noqa: F401
    except ImportError as err:
        print(f"agents.train is not importable ({err}); training benchmarks need it. "
              "`--fidelity` and `--from-results` work without it.", file=sys.stderr)
        return 2

    specs = build_specs(args)
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    if args.resume and (out / "results.json").exists():
        old, _ = load_results(out / "results.json")
        rows = old.to_dict("records")
        done = {RunSpec(**{f.name: r[f.name] for f in dataclasses.fields(RunSpec)}).name for r in rows}
    todo = [s for s in specs if s.name not in done]
    settings = {
        "n_updates": args.n_updates, "episodes_per_update": args.episodes_per_update, "device": args.device,
        "set": parse_set(args.set), "threads_per_job": args.threads_per_job, "log_root": args.log_dir,
    }
    print(f"{len(todo)} runs ({len(specs) - len(todo)} already stored): seeds "
          f"{list(range(args.seed_offset, args.seed_offset + args.seeds))}, {args.n_updates} updates x "
          f"{args.episodes_per_update} completions, {args.jobs} job(s) x {args.threads_per_job} thread(s)", flush=True)

    def on_done(spec: RunSpec, new_rows: list[dict[str, Any]]) -> None:
        rows.extend(new_rows)
        last = new_rows[-1]
        print(f"[{time.perf_counter() - t0:6.0f} s] {spec.name}: final RM {last.get('rm_score', math.nan):.2f}, "
              f"gold {last.get('gold_score', math.nan):.3f} ({last['run_wall_s']:.0f} s)", flush=True)
        save_results(rows, run_meta(args, time.perf_counter() - t0), out)

    run_specs(todo, settings, args.jobs, on_done)
    wall = time.perf_counter() - t0
    meta = run_meta(args, wall)
    save_results(rows, meta, out)
    header = f"Command: `{meta['command']}`; run time {wall:.0f} s.\n\n"
    print(report(pd.DataFrame(rows), out, args.report_update, args.smooth, header))
    print(f"total run time: {wall:.0f} s ({wall / 60:.1f} min) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
