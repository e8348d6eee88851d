"""A run's folders: a fresh run directory, and the checks that the folders a run writes can take it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from agents.config import TrainConfig


def make_run_dir(cfg: TrainConfig) -> Path:
    """Create a fresh run directory under ``cfg.log_dir``; never one another run already has.

    The name is ``cfg.run_name`` or ``<algo>_<mode>_seed<seed>_<time>``; on a collision (two
    runs started in the same second, or a reused name) ``-1``, ``-2``, ... is appended. The
    directory is created exclusively, so two processes can never both get it.
    """
    assert cfg.log_dir is not None
    base = cfg.run_name or f"{cfg.algo}_{cfg.reward_mode}_seed{cfg.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        path = Path(cfg.log_dir) / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory named {base}-N under {cfg.log_dir}")


def check_output_dirs(cfg: TrainConfig, resume: str | os.PathLike | None = None) -> None:
    """Before any work: the folders a run writes are directories (or can be made), writable, with room
    for a checkpoint. Raises ``ValueError`` naming the flag, the folder and the fix."""
    targets: list[tuple[str, Path]] = []
    if resume is not None:
        targets.append(("--resume", Path(resume)))
    elif cfg.log_dir is not None:
        targets.append(("--log-dir", Path(cfg.log_dir)))
    if cfg.save_path is not None:
        targets.append(("--save-path", Path(cfg.save_path).absolute().parent))
    if not targets:
        return
    need = _checkpoint_bytes(cfg, resume)
    for flag, folder in targets:
        existing = check_writable(flag, folder)
        free = shutil.disk_usage(existing).free
        if need and free < need:
            raise ValueError(
                f"{flag} {folder}: {free / 1e6:.1f} MB free on its filesystem, a checkpoint (model.zip + model_hf/) "
                f"needs about {need / 1e6:.1f} MB; free space or pick another {flag}"
            )


def _checkpoint_bytes(cfg: TrainConfig, resume: str | os.PathLike | None) -> int:
    """About the bytes one more checkpoint needs (the previous one stays until the new one is complete):
    the current checkpoint's size on resume, else 4x the policy's weights (weights, Adam's two moments,
    the export); 0 when the weights are not local files."""
    from agents.checkpoint import hf_dir_of

    if resume is not None:
        zip_path = Path(cfg.save_path) if cfg.save_path else Path(resume) / "model.zip"
        files = [zip_path, *hf_dir_of(zip_path).glob("*")]
        return sum(p.stat().st_size for p in files if p.is_file())
    source = cfg.model
    if source is None:
        import gymnasium as gym

        source = gym.spec(cfg.env_id).kwargs.get("policy")
    folder = Path(str(source)) if isinstance(source, (str, os.PathLike)) else None
    if folder is None or not folder.is_dir():
        return 0
    return 4 * sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


def check_writable(flag: str, folder: Path, create: bool = False) -> Path:
    """``folder`` is a directory, or can be made one, that this process can write in; returns the
    folder the check wrote in (``folder`` itself, or with ``create=False`` its closest existing
    ancestor). ``ValueError`` naming the flag, the folder and the fix otherwise."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {folder}: {existing} is not a directory; pick another {flag}")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"{flag} {folder}: cannot create it ({err.strerror}); pick another {flag}") from err
        existing = folder
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(
            f"{flag} {folder}: cannot write in {existing} ({err.strerror}); pick another {flag} or make it writable"
        ) from err
    return existing
