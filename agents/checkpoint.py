"""Checkpoints that survive any death: atomic ``model.zip`` + ``model_hf/``, history cut back on resume.

A checkpoint is the SB3 zip ``model.zip`` (weights, optimiser state, the KL controller, the
update counter and every update's metrics) with two members of its own, which SB3's loader
ignores: ``abc_checkpoint.json`` (format, update count, timesteps, time) and
``rng_state.pt`` (torch, CUDA, numpy and Python RNG states). It is written to a temporary
file in the same directory, flushed to disk, and ``os.replace``-d over the previous one, so a
kill, a full disk or a second signal at any instant leaves either the old or the new
checkpoint, never half of one. ``model_hf/`` (the policy for ``from_pretrained``) is written
to a temporary directory beside it and swapped in; the previous one is removed only once
the new one is complete.

``model.zip`` is the commit point: on ``--resume``, :func:`cut_history` rewrites
``metrics.jsonl`` from the checkpoint's own metrics and cuts ``progress.csv`` to the same
number of updates, so updates after the checkpoint (lost with the process) are redone once,
never duplicated.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

FORMAT = 1
META_MEMBER = "abc_checkpoint.json"
RNG_MEMBER = "rng_state.pt"  # not ".pth": SB3's loader takes every *.pth member for a state dict
_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message names the file and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno N]"


def hf_dir_of(model_path: str | os.PathLike) -> Path:
    """``run/model.zip`` -> ``run/model_hf`` (the ``from_pretrained`` export saved with it)."""
    return Path(os.path.splitext(os.fspath(model_path))[0] + "_hf")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (cheap; some filesystems refuse it: then skip)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """The process's RNG states: torch (CPU and every CUDA device), numpy's global, Python's ``random``."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states (CUDA only when this machine has the same devices)."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(model: Any, path: str | os.PathLike, hf: bool = True) -> float:
    """Atomically write ``model`` to ``path`` (and its policy to ``<stem>_hf/``); returns the seconds taken.

    :raises CheckpointError: the write failed (disk full, read-only, ...); the previous checkpoint
        is untouched and the temporary files are removed. The message says which update it holds.
    """
    import torch

    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    hf_dir = hf_dir_of(path)
    hf_tmp = hf_dir.with_name(f".{hf_dir.name}.tmp-{os.getpid()}")
    updates = int(getattr(model, "_n_completed_updates", len(getattr(model, "update_metrics", []))))
    from agents.config import NUMERICS_VERSION

    meta = {"format": FORMAT, "updates": updates, "num_timesteps": int(model.num_timesteps), "saved_at": time.time(),
            "numerics": NUMERICS_VERSION}
    try:
        with open(tmp, "w+b") as f:
            model.save(f)  # a file object: SB3 would append ".zip" to a temporary name
            f.seek(0)
            with zipfile.ZipFile(f, "a") as archive:
                archive.writestr(META_MEMBER, json.dumps(meta))
                with archive.open(RNG_MEMBER, "w", force_zip64=True) as member:
                    torch.save(rng_state(), member)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the commit point: the old checkpoint until here, the new one after
        _fsync_dir(path.parent)
        if hf:
            shutil.rmtree(hf_tmp, ignore_errors=True)
            model.policy.save_pretrained(str(hf_tmp))
            old = hf_dir.with_name(f".{hf_dir.name}.old-{os.getpid()}")
            if hf_dir.exists():
                os.replace(hf_dir, old)  # a directory cannot be replaced by rename: move the old one aside first
            os.replace(hf_tmp, hf_dir)
            shutil.rmtree(old, ignore_errors=True)
            _fsync_dir(path.parent)
    except BaseException as err:  # an exception raised by a signal handler included: leave no temporary file
        tmp.unlink(missing_ok=True)
        shutil.rmtree(hf_tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(err.errno, _save_failure(path, err, updates)) from err
        raise
    return time.perf_counter() - t0


def _save_failure(path: Path, err: OSError, updates: int) -> str:
    why = "the disk is full" if err.errno in _SPACE_ERRNOS else (err.strerror or str(err))
    try:
        kept = f"the previous checkpoint ({checkpoint_updates(path)} updates) is intact"
    except CheckpointError:
        kept = "there is no previous checkpoint"
    return (
        f"could not save the checkpoint of update {updates} to {path}: {why} ({err.filename or path}); {kept}. "
        f"Free space or pick another --log-dir / --save-path, then --resume the run"
    )


def clean_stale(path: str | os.PathLike) -> None:
    """Remove temporary files a killed save left beside ``path`` (and restore a ``model_hf`` swapped out)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    hf_dir = hf_dir_of(path)
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        p.unlink(missing_ok=True)
    for p in path.parent.glob(f".{hf_dir.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in sorted(path.parent.glob(f".{hf_dir.name}.old-*")):
        if hf_dir.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:  # killed between the two renames: the old export is the one that matches nothing newer
            os.replace(p, hf_dir)


def _read_member(path: Path, name: str) -> bytes | None:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name) if name in archive.namelist() else None


def checkpoint_updates(path: str | os.PathLike) -> int:
    """The number of updates the checkpoint at ``path`` holds, read without loading the model.

    :raises CheckpointError: no file there, or not a checkpoint (names the file and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(errno.ENOENT, f"no {path.name} there ({path})")
    try:
        meta = _read_member(path, META_MEMBER)
        if meta is not None:
            return int(json.loads(meta)["updates"])
        data = json.loads(_read_member(path, "data") or b"{}")  # saved before checkpoints carried their own meta
        return int(data["_n_completed_updates"])
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise CheckpointError(
            errno.EINVAL,
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); it was written by something "
            "else or cut short by an older abc_gym agents: restore it from a copy, or start the run afresh",
        ) from err


def checkpoint_numerics(path: str | os.PathLike) -> int:
    """The :data:`~agents.config.NUMERICS_VERSION` of the code that wrote the checkpoint at ``path``
    (1 for a checkpoint written before the version was recorded)."""
    meta = _read_member(Path(path), META_MEMBER)
    return int(json.loads(meta).get("numerics", 1)) if meta is not None else 1


def load_rng_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The RNG states saved with the checkpoint at ``path`` (None for a checkpoint without them)."""
    import io

    import torch

    raw = _read_member(Path(path), RNG_MEMBER)
    return None if raw is None else torch.load(io.BytesIO(raw), weights_only=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cut_history(run_dir: str | os.PathLike, metrics: list[dict[str, Any]]) -> None:
    """Make ``metrics.jsonl`` and ``progress.csv`` hold exactly the checkpoint's updates ``metrics``.

    ``metrics.jsonl`` is rewritten from the checkpoint's own per-update metrics; ``progress.csv``
    keeps its header and its first ``len(metrics)`` rows. Lines dropped are reported on stderr.
    """
    run_dir = Path(run_dir)
    n = len(metrics)
    jsonl = run_dir / "metrics.jsonl"
    before = len(jsonl.read_text().splitlines()) if jsonl.is_file() else 0
    atomic_write_text(jsonl, "".join(json.dumps(m) + "\n" for m in metrics))
    csv = run_dir / "progress.csv"
    if csv.is_file():
        lines = csv.read_text().splitlines(keepends=True)
        if len(lines) > n + 1:
            atomic_write_text(csv, "".join(lines[: n + 1]))
    if before > n:
        print(
            f"resume: {jsonl} had {before} updates, the last checkpoint {n}: "
            + (f"update {before} is" if before == n + 1 else f"updates {n + 1}-{before} are")
            + " cut and redone",
            file=sys.stderr,
        )
