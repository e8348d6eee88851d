"""Train a token policy with credit-aware RL: ``python -m agents --help``.

A run writes ``<log_dir>/<run>/``: config.json, metrics.jsonl (one line per update),
TensorBoard events, progress.csv, and an atomic checkpoint (model.zip, model_hf/) every
--checkpoint-every updates and at the end. --resume RUN_DIR continues a run from its last
checkpoint in its directory (history cut back to it; --n-updates may extend it); one process
at a time writes a run directory. SIGINT (Ctrl-C) and SIGTERM stop the run at the next step,
save it and exit with 130 / 143. Every flag, and the folders a run writes, are checked before
any work. The same run from Python: ``agents.train(TrainConfig(...))`` (:mod:`agents.training`).
``torchrun --nproc-per-node K -m agents ...`` trains with K data-parallel ranks
(:mod:`agents.distributed`, docs/distributed.md); rank 0 alone writes.

Defaults and their reasons: :mod:`agents.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import signal
import threading
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents import training
from agents.config import TrainConfig, flag_of, parse_env_kwarg
from agents.distributed import check_data_parallel, launched_by_torchrun
from agents.run_dir import check_output_dirs
from agents.stopping import raise_interrupted


def _parser() -> argparse.ArgumentParser:
    """One flag per ``TrainConfig`` field, typed from its annotation, with its help and default."""
    p = argparse.ArgumentParser(prog="python -m agents", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (its config.json; --n-updates may extend it)")
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    # SUPPRESS: only the flags actually given land in the namespace (--resume compares exactly those).
    for f in dataclasses.fields(TrainConfig):
        base, optional = _unwrap_optional(hints[f.name])
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {default})")
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is dict:  # --env-kwarg KEY=VALUE, repeatable; main() makes the pairs a dict
            kw.update(action="append", type=_env_kwarg, metavar="KEY=VALUE")
        else:
            kw["type"] = _none_or(base) if optional else base
            kw["metavar"] = base.__name__.upper() + ("|None" if optional else "")
            if "choices" in f.metadata:
                kw["choices"], kw["metavar"] = f.metadata["choices"], None
        p.add_argument(flag_of(f.name), **kw)
    return p


def _unwrap_optional(tp: Any) -> tuple[type, bool]:
    """``int | None`` -> ``(int, True)``; ``float`` -> ``(float, False)``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _env_kwarg(text: str) -> tuple[str, Any]:
    try:
        return parse_env_kwarg(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _none_or(base: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        return None if text.lower() == "none" else base(text)

    convert.__name__ = base.__name__  # argparse names the type in its error messages
    return convert


#: Flags a resumed run may change: they cannot change its numbers (``--n-updates`` extends the run).
RESUME_MAY_CHANGE = ("n_updates", "quiet", "threads", "progress", "checkpoint_every")


def _same_device(a: str, b: str) -> bool:
    """Whether two ``--device`` values mean the same device here (``auto`` is ``cpu`` on a CPU-only machine)."""
    from agents.env_util import resolve_device

    da, db = resolve_device(a), resolve_device(b)
    return da.type == db.type and (da.index or 0) == (db.index or 0)


def _resume_config(run_dir: str, given: dict[str, Any]) -> TrainConfig:
    """The run's own config; a flag that would change the run's numbers and differs from it is an error.

    Also checks, before any work, that the run has a readable checkpoint short of ``--n-updates``.
    """
    from agents.checkpoint import CheckpointError, checkpoint_updates

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no config.json there (not a run directory written by python -m agents)")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--resume {run_dir}: {path} is not valid JSON ({err}); restore it or start the run afresh") from err
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    for name, value in given.items():
        if name in RESUME_MAY_CHANGE:
            setattr(cfg, name, value)
        elif name == "device" and _same_device(value, cfg.device):
            continue  # the same device by another name: the run keeps its own
        elif value != getattr(cfg, name):
            raise ValueError(
                f"{flag_of(name)} {value} differs from the run's {getattr(cfg, name)} ({path}): a resumed run keeps its "
                f"config; drop the flag (only {', '.join(map(flag_of, RESUME_MAY_CHANGE))} may change)"
            )
    model_path = Path(cfg.save_path) if cfg.save_path else Path(run_dir) / "model.zip"
    try:
        done = checkpoint_updates(model_path)
    except CheckpointError as err:
        if not model_path.exists():
            metrics = Path(run_dir) / "metrics.jsonl"
            lines = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            raise ValueError(
                f"--resume {run_dir}: no {model_path.name} there: the run stopped before its first checkpoint "
                f"(metrics.jsonl has {lines} updates, --checkpoint-every {cfg.checkpoint_every}); start it afresh "
                "without --resume"
            ) from err
        raise ValueError(f"--resume {run_dir}: {err}") from err
    if cfg.steps is None and cfg.n_updates <= done:
        raise ValueError(f"--resume {run_dir}: the run already has {done} updates; pass --n-updates > {done} to extend it")
    return cfg


def main(argv: list[str] | None = None) -> None:
    """CLI entry point. Exit status: 0; 1 with one ``error: ...`` line for a bad config, a run directory
    in use or a checkpoint that could not be written; 130 on SIGINT, 143 on SIGTERM (after saving)."""
    from agents.checkpoint import CheckpointError
    from agents.run_lock import DirectoryLocked

    args = vars(_parser().parse_args(argv))
    resume = args.pop("resume")
    if "env_kwargs" in args:
        args["env_kwargs"] = dict(args["env_kwargs"])
    try:
        cfg = _resume_config(resume, args) if resume else TrainConfig(**args)
        cfg.validate()  # before any run directory exists
        check_output_dirs(cfg, resume)
        if launched_by_torchrun():
            check_data_parallel(cfg, int(os.environ["WORLD_SIZE"]))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    # SIGTERM (a scheduler, a preempted machine, `kill`) stops the run as Ctrl-C does: saved, then exit 143
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, raise_interrupted) if main_thread else None
    try:
        training.train(cfg, resume=resume)  # looked up here: tests and wrappers may replace it
    except KeyboardInterrupt as err:
        raise SystemExit(128 + getattr(err, "signum", signal.SIGINT)) from None
    except (DirectoryLocked, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        # the disk filled (or went read-only) while metrics or logs were written, between checkpoints
        model = Path(cfg.save_path) if cfg.save_path else (Path(resume) / "model.zip" if resume else None)
        raise SystemExit(
            f"error: could not write {err.filename or 'the run files'}: {err.strerror}; the last checkpoint"
            + (f" ({model})" if model else " of the run")
            + " is intact: free space, then --resume the run"
        ) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
