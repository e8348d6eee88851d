"""One training run: its TrainConfig, its run config (what ``--resume`` checks), and its rows."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import NUMERICS_VERSION
from benchmarks.dense_vs_sparse.defaults import (
    KL_SWEEP_FIELDS,
    METRICS,
    NON_RESULT_FIELDS,
    REQUIRED_FIELDS,
    check_overrides,
    train_config_class,
)
from benchmarks.dense_vs_sparse.plan import RunSpec, ensure_env
from benchmarks.dense_vs_sparse.provenance import model_files_hash


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-4", "clip_range_vf=null"]`` -> ``{"lr": 1e-4, "clip_range_vf": None}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def make_train_config(spec: RunSpec, settings: dict[str, Any], log_dir: str | None) -> Any:
    """Build ``agents.TrainConfig`` for one run, checking the fields this script relies on.

    Fields not set here keep TrainConfig's defaults; ``--set`` overrides the others by name.
    A run of ``--sweep kl`` (``spec.fixed_kl_coef`` set) gets ``kl_coef`` = that coefficient
    and ``adaptive_kl=False``; ``--set`` may not change those two there.
    """
    cls = train_config_class()
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [f for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise RuntimeError(
            f"agents.TrainConfig lacks field(s) {missing} that the benchmark sets; "
            f"it has {sorted(names)}. Update agents/ or REQUIRED_FIELDS in benchmarks/dense_vs_sparse/defaults.py."
        )
    overrides = dict(settings.get("set") or {})
    try:
        check_overrides(overrides, names)
    except ValueError as err:
        raise RuntimeError(str(err)) from None
    kwargs = dict(
        env_id=spec.env_id, algo=spec.algo, reward_mode=spec.reward_mode, beta=spec.beta, seed=spec.seed,
        n_updates=settings["n_updates"], episodes_per_update=settings["episodes_per_update"],
        device=settings["device"], log_dir=log_dir, progress=False,
    )
    # optional fields: one torch pool per run (parallel runs must not oversubscribe), no per-run chatter
    optional = {"threads": settings["threads_per_job"], "quiet": True}
    kwargs.update({k: v for k, v in optional.items() if k in names})
    if spec.fixed_kl_coef is not None:
        clash = sorted(set(overrides) & set(KL_SWEEP_FIELDS))
        if clash:
            raise RuntimeError(f"--set {clash[0]}: --sweep kl sets {' and '.join(KL_SWEEP_FIELDS)} per run; use --kl-coefs")
        absent = [f for f in KL_SWEEP_FIELDS if f not in names]
        if absent:
            raise RuntimeError(f"agents.TrainConfig lacks field(s) {absent} that --sweep kl sets; it has {sorted(names)}")
        kwargs.update(kl_coef=float(spec.fixed_kl_coef), adaptive_kl=False)
    kwargs.update(overrides)
    return cls(**kwargs)


def portable_ref(ref: Any) -> Any:
    """A path to a shipped model (under ``abc_gym/tasks/sentiment/models/``) as that relative path,
    anything else unchanged.

    Those files' bytes are hashed separately (``model_files``), so where the checkout lives
    must not decide whether ``--resume`` accepts a results file. Other paths stay absolute:
    nothing else checks their contents.
    """
    if not isinstance(ref, str):
        return ref
    marker = "abc_gym/tasks/sentiment/models/"
    path = ref.replace("\\", "/")
    return marker + path.split("/" + marker, 1)[1] if "/" + marker in path else ref


def _describe(value: Any) -> Any:
    """A model reference as JSON: paths and hub ids as text, factories by qualified name."""
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return None if value is None else portable_ref(str(value))


def run_config(spec: RunSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides a run's numbers, as plain JSON (so stored and fresh configs compare equal).

    TrainConfig after overrides (less :data:`NON_RESULT_FIELDS`), the env id with its
    length range and model references, and the hash of the shipped model files.
    """
    import gymnasium as gym

    ensure_env(spec.env_id)
    train_cfg = make_train_config(spec, settings, log_dir=None)
    if hasattr(train_cfg, "validate"):  # a bad --set value fails in the parent, before any worker starts
        train_cfg.validate()
    cfg = asdict(train_cfg)
    kw = gym.spec(spec.env_id).kwargs
    config = {
        "train": {k: v for k, v in cfg.items() if k not in NON_RESULT_FIELDS},
        "env": {"id": spec.env_id, "min_new_tokens": kw.get("min_new_tokens"), "max_new_tokens": kw.get("max_new_tokens"),
                "policy": _describe(kw.get("policy")), "reward_model": _describe(kw.get("reward_model"))},
        "model_files": model_files_hash(),
        "numerics": NUMERICS_VERSION,
    }
    return json.loads(json.dumps(config, default=str))


def config_hash(config: dict[str, Any]) -> str:
    """Short, order-independent hash of a run config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        if row["fixed_kl_coef"] is None:  # only the kl sweep's rows carry it: other sweeps' rows stay as they were
            del row["fixed_kl_coef"]
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
    ensure_env(spec.env_id)  # length variants are registered per process
    from agents.training import train

    log_dir = None if settings.get("log_root") is None else str(Path(settings["log_root"]) / spec.name)
    cfg = make_train_config(spec, settings, log_dir)
    t0 = time.perf_counter()
    history = train(cfg)
    return history_rows(spec, history, time.perf_counter() - t0)
