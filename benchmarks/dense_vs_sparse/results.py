"""Results on disk (``results.json`` + ``results.csv``) and the ``--resume`` check of stored runs.

``results.json`` holds ``meta`` (command, settings, provenance, and ``runs``: the run
config and its hash for every stored run) and ``rows`` (one per run and update; each row
carries its run's ``config_hash``).

:func:`save_raw` stores the same results compactly for the repository (``docs/raw/*.json.gz``:
gzip'd JSON, one list per column, byte-identical for identical results), and
:func:`load_results` reads all three forms.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.dense_vs_sparse.defaults import FIELD_FLAGS, train_defaults
from benchmarks.dense_vs_sparse.plan import RunSpec
from benchmarks.dense_vs_sparse.training import config_hash, portable_ref


class ResumeError(Exception):
    """``--resume`` found stored runs it must not mix with the runs this command would make."""


def jsonable(value: Any) -> Any:
    """NaN -> None (valid JSON), numpy scalars -> Python scalars."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


def save_results(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    """Write ``results.json`` (meta + rows) and ``results.csv`` (rows) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {"meta": meta, "rows": [{k: jsonable(v) for k, v in r.items()} for r in rows]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=jsonable))
    tmp.replace(path)  # atomic: a crash or a signal mid-write never leaves half a results file
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    return path


def save_raw(
    rows: list[dict[str, Any]] | pd.DataFrame, meta: dict[str, Any], path: str | os.PathLike, significant: int | None = 7
) -> Path:
    """Write results as gzip'd column-wise JSON (``{"meta": ..., "columns": {name: [values]}}``).

    Column-wise because the per-update rows repeat their run's labels. Floats keep
    ``significant`` digits (None: all): the metrics come out of float32 tensors, which carry
    about 7, and the other 10 digits of a float64 repr are what gzip cannot compress (a
    50-run x 150-update experiment: 1.3 MB with all digits, 0.6 MB with 7). No timestamp in
    the gzip header, so the same results give the same bytes.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)

    def cell(v: Any) -> Any:
        v = jsonable(v)
        return float(f"{v:.{significant}g}") if significant and isinstance(v, float) and math.isfinite(v) else v

    columns = {str(c): [cell(v) for v in df[c].tolist()] for c in df.columns}
    data = json.dumps({"meta": meta, "columns": columns}, separators=(",", ":"), default=jsonable).encode()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return p


def load_results(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and meta from a ``results.json`` / ``results.csv`` / ``*.json.gz`` (or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json" if (p / "results.json").exists() else p / "results.csv"
    if not p.exists():
        raise FileNotFoundError(f"no results at {p}: pass a results.json / results.csv / *.json.gz or its directory")
    if p.suffix == ".csv":
        return pd.read_csv(p), {}
    if p.suffix == ".gz":
        payload = json.loads(gzip.decompress(p.read_bytes()))
        return pd.DataFrame(payload["columns"]), payload.get("meta", {})
    payload = json.loads(p.read_text())
    return pd.DataFrame(payload["rows"]), payload.get("meta", {})


def row_spec(row: dict[str, Any]) -> RunSpec:
    """The RunSpec a stored row belongs to (JSON types cast back, so its config hashes as it did).

    A field with a default (``fixed_kl_coef``) may be absent or NaN (rows of other sweeps, or
    pandas' fill in a mixed table): the default then.
    """
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(RunSpec):
        value = row.get(f.name) if f.default is not dataclasses.MISSING else row[f.name]
        if f.default is not dataclasses.MISSING and (value is None or (isinstance(value, float) and math.isnan(value))):
            value = f.default
        kw[f.name] = value
    kw.update(beta=float(kw["beta"]), seed=int(kw["seed"]))
    if kw["fixed_kl_coef"] is not None:
        kw["fixed_kl_coef"] = float(kw["fixed_kl_coef"])
    return RunSpec(**kw)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _flag_for(key: str) -> str:
    """The command-line flag that sets a flattened run-config key."""
    section, _, name = key.partition(".")
    if section == "train":
        return FIELD_FLAGS.get(name, f"--set {name}=VALUE")
    if section == "numerics":
        return ("the learners' arithmetic changed (agents.config.NUMERICS_VERSION, CHANGELOG.md): the same seed gives "
                "other numbers; rerun at the stored commit (meta.git) to extend these results")
    if section == "env":
        return "--env-id / --lengths (env " + name + ")"
    return "the shipped model files under abc_gym/tasks/sentiment/models changed"


def _portable_env(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its env model references made checkout-independent (see ``portable_ref``)."""
    env = {k: portable_ref(v) if k in ("policy", "reward_model") else v for k, v in config.get("env", {}).items()}
    return {**config, "env": env} if "env" in config else config


# TrainConfig fields whose default changed after they were added: the value a stored run that lacks
# the field ran with (its default then), not today's default.
BEFORE_ADDED = {"fused_activation": False}


def _with_later_fields(stored: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the TrainConfig fields added since it was written filled in with the behaviour it ran with.

    A field added to TrainConfig defaults to the behaviour before it (e.g. ``compile_decode``
    off), so a stored run lacking it ran at that default, except for a field whose default has
    changed since (:data:`BEFORE_ADDED`: ``fused_activation`` was off until 2026-11-30); a fresh
    value other than that still differs and is reported."""
    if "numerics" in now and "numerics" not in stored:  # written before the version was stored: version 1
        stored = {**stored, "numerics": 1}
    train_now, train_stored = now.get("train"), stored.get("train")
    if not isinstance(train_now, dict) or not isinstance(train_stored, dict):
        return stored
    defaults = {**json.loads(json.dumps(train_defaults(), default=str)), **BEFORE_ADDED}
    added = {k: defaults[k] for k in train_now if k not in train_stored and k in defaults}
    return {**stored, "train": {**train_stored, **added}} if added else stored


def check_resume(payload: dict[str, Any], fresh_config: Callable[[RunSpec], dict[str, Any]], path: Path) -> None:
    """Raise :class:`ResumeError` unless every stored run has the run config this command would give it.

    ``fresh_config(spec)`` is the config under the current settings. The message names
    each differing setting with its stored and new value and the flag that sets it.
    """
    rows, meta = payload.get("rows", []), payload.get("meta", {})
    specs = {s.name: s for s in map(row_spec, rows)}
    stored = meta.get("runs") or {}
    unchecked = sorted(set(specs) - set(stored))
    if unchecked:
        raise ResumeError(
            f"--resume: {path} has {len(unchecked)} run(s) without a stored run config (written by an older "
            f"benchmark), e.g. {unchecked[0]}, so their settings cannot be checked. Drop --resume or pick another --out."
        )
    diffs: dict[str, tuple[Any, Any]] = {}
    for name, spec in specs.items():
        now = fresh_config(spec)
        # results written before model paths became portable stored the checkout's absolute paths
        before_cfg = _with_later_fields(_portable_env(stored[name]["config"]), now)
        if config_hash(now) in (stored[name]["hash"], config_hash(before_cfg)):
            continue
        before, after = _flatten(before_cfg), _flatten(now)
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                diffs.setdefault(key, (before.get(key), after.get(key)))
    if diffs:
        lines = [f"  {key.split('.')[-1]}: stored {a!r}, now {b!r}  ({_flag_for(key)})" for key, (a, b) in diffs.items()]
        raise ResumeError(
            f"--resume refused: the runs stored in {path} were made with other settings than this command's:\n"
            + "\n".join(lines)
            + f"\nStored command: {meta.get('command', '?')}\n"
            "Resume with the stored settings, or drop --resume (or pick another --out) to start afresh."
        )
