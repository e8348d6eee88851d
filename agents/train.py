"""Train a token policy with credit-aware RL: ``python -m agents.train --help``.

Python API (used by the benchmarks)::

    from agents.train import TrainConfig, train
    metrics = train(TrainConfig(reward_mode="sparse", n_updates=20, log_dir=None, progress=False))

``train`` returns one dict per update (the JSON lines of ``metrics.jsonl``, keys in
:mod:`agents.metrics`). A run writes ``<log_dir>/<run>/``: ``config.json``, ``metrics.jsonl``,
TensorBoard events and ``progress.csv`` (one row per update), and a checkpoint (``model.zip``
and ``model_hf/``, written atomically: :mod:`agents.checkpoint`) every ``--checkpoint-every``
updates and at the end. ``--resume RUN_DIR`` continues a run from its last checkpoint, in its
directory (history cut back to it; ``--n-updates`` may extend the run); one process at a time
writes a run directory (:mod:`agents.run_lock`). SIGINT (Ctrl-C) and SIGTERM stop the run at the
next step, save it and exit with 130 / 143; a repeated signal waits for the save. The folders
a run writes, and every flag, are checked before any work.
``torchrun --nproc-per-node K -m agents.train ...`` trains with K data-parallel ranks
(:mod:`agents.distributed`, docs/distributed.md); rank 0 alone writes.

Defaults and their reasons: :mod:`agents.config`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.config import TrainConfig, flag_of, parse_env_kwarg
from agents.distributed import LOCAL, DataParallel, check_data_parallel, data_parallel, launched_by_torchrun

__all__ = ["TrainConfig", "build_model", "main", "make_run_dir", "train"]

UpdateHook = Callable[[dict[str, Any]], None]


def build_model(cfg: TrainConfig, tensorboard_log: str | None = None, dp: DataParallel | None = None):
    """The algorithm of ``cfg`` on a batched env of ``episodes_per_update`` rows (one episode each).

    With a data-parallel group ``dp`` (:mod:`agents.distributed`): this rank's ``episodes_per_update / K``
    rows, seeded as the same rows of the single-process env, the model's RNGs offset alike, rank 0's
    weights broadcast and the gradient all-reduce attached.
    """
    from agents.registry import REGISTRY, algorithm_kwargs

    cfg.validate()
    dp = dp or LOCAL
    rows, row_seed = dp.rows_and_seed(cfg.episodes_per_update, cfg.seed)
    env = _make_env(cfg, rows, row_seed)
    cls = REGISTRY[cfg.algo].load()
    model = cls("TransformerPolicy", env, tensorboard_log=tensorboard_log, **algorithm_kwargs(cfg, env))
    _join(model, dp, row_seed)
    return model


def _make_env(cfg: TrainConfig, rows: int, seed: int):
    """The batched token env of ``cfg``: ``rows`` rows seeded ``seed + i``, its reward model on ``cfg.reward_device``."""
    from agents.env_util import make_token_vec_env

    extra = {**(cfg.env_kwargs or {}), **({} if cfg.reward_device is None else {"reward_device": cfg.reward_device})}
    return make_token_vec_env(
        cfg.env_id, num_envs=rows, reward_mode=cfg.reward_mode, beta=cfg.beta, device=cfg.device, seed=seed, **extra
    )


def _join(model: Any, dp: DataParallel, seed: int) -> None:
    """Make ``model`` one rank of ``dp``: RNGs and env rows seeded ``seed``, weights from rank 0, gradients all-reduced."""
    if not dp.active:
        return
    model.set_random_seed(seed)  # SB3 seeded the env with the run's seed: reseed this rank's rows
    model.dp = dp
    dp.attach(model.policy)


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


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM) after saving what it had; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    """The CLI's SIGTERM handler outside :func:`train`: stop as on Ctrl-C."""
    raise Interrupted(signum)


class _Stop:
    """SIGINT / SIGTERM during a run: stop cleanly at a consistent point, never mid-save.

    The first signal asks the run to stop: during a rollout at the next env step (the rollout
    is dropped), during an update once the update is done; then the model is saved. A second
    one only says so (a double Ctrl-C must not cost the save); a third stops at once without
    saving (the last checkpoint on disk is kept). While a checkpoint is written every signal
    waits for the write to end. Installed only in the main thread, for the signals whose handler
    is Python's Ctrl-C default (or the CLI's); a signal the process ignores stays ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.saving = False
        self.aborted = False
        self.saved_update = -1  # the update of the last checkpoint this process wrote
        self._old: dict[int, Any] = {}

    def install(self, active: bool) -> None:
        if not active or threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) in (signal.default_int_handler, _raise_interrupted):
                self._old[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            print(f"{name}: stopping after the current step, then saving (a third signal stops at once, "
                  "without saving)", file=sys.stderr, flush=True)
        elif self.saving:
            print(f"{name}: saving the checkpoint, please wait", file=sys.stderr, flush=True)
        elif self.count == 2:
            print(f"{name}: already stopping (the current step ends, then the model is saved); a third signal stops "
                  "at once, without saving", file=sys.stderr, flush=True)
        else:
            self.aborted = True
            raise KeyboardInterrupt  # not Interrupted: nothing is saved on the way out

    @property
    def requested(self) -> bool:
        return self.signum is not None


def _stop_callback(stop: _Stop) -> Any:
    """An SB3 callback that ends ``learn`` at the next env step once a stop is requested."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopOnSignal(BaseCallback):
        def _on_step(self) -> bool:
            return not stop.requested

    return StopOnSignal()


def train(config: TrainConfig, on_update: UpdateHook | None = None, resume: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Run one training run; returns the per-update metric dicts (same keys as ``metrics.jsonl``).

    :param config: the run's hyperparameters.
    :param on_update: called with each update's metrics (after they are written).
    :param resume: a run directory written by ``train``: load its last checkpoint (``model.zip``)
        and continue up to ``config.n_updates`` updates in it (``metrics.jsonl`` cut back to the
        checkpoint, then appended; update numbers continued).
    :raises Interrupted: (a ``KeyboardInterrupt``) on Ctrl-C, after saving the model and the
        metrics so far (one line says where).
    :raises agents.run_lock.DirectoryLocked: another process is writing the run directory.
    :raises agents.checkpoint.CheckpointError: a checkpoint could not be written (disk full, ...);
        the previous one is intact.

    Under torchrun (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` set) this is one rank of a data-parallel
    run (:mod:`agents.distributed`): every rank returns the same global metrics; rank 0 alone writes.
    """
    import torch
    import transformers

    config.validate()
    check_output_dirs(config, resume)
    torch.set_num_threads(max(1, config.threads))
    transformers.utils.logging.disable_progress_bar()
    with data_parallel(config) as (dp, cfg):
        return _train(cfg, dp, on_update, resume, device_flag=config.device)


def _train(
    cfg: TrainConfig, dp: DataParallel, on_update: UpdateHook | None, resume: str | os.PathLike | None, device_flag: str
) -> list[dict[str, Any]]:
    """:func:`train` on this rank; only the main rank writes and prints.

    ``cfg.device`` is this rank's device; ``device_flag`` the one given (``config.json`` keeps it).
    """
    from agents.checkpoint import atomic_write_text, clean_stale, cut_history
    from agents.run_lock import locked

    if not dp.is_main:  # other ranks write nothing: no run directory, files, model, logger output or summary
        cfg = dataclasses.replace(cfg, log_dir=None, save_path=None, progress=False, quiet=True)
    read_dir = Path(resume) if resume is not None else None
    run_dir = read_dir if not dp.is_main else (read_dir or (make_run_dir(cfg) if cfg.log_dir is not None else None))
    fresh_dir = resume is None and run_dir is not None
    save_path = cfg.save_path or (str(run_dir / "model.zip") if run_dir and dp.is_main else None)
    stop = _Stop()
    # Stopping at the next env step is a local decision: under torchrun the ranks would disagree and hang.
    stop.install(not dp.active)
    model = None
    try:
        with contextlib.ExitStack() as held:
            if run_dir is not None and dp.is_main:
                held.enter_context(locked(run_dir, "run directory"))  # before anything in it is read or written
            if save_path is not None:
                clean_stale(save_path)
            model = _load_run(cfg, read_dir, dp) if read_dir is not None else build_model(cfg, dp=dp)
            if not dp.is_main:
                run_dir = None
            done = len(model.update_metrics)
            stop.saved_update = done if read_dir is not None else -1
            remaining = cfg.n_updates - done
            if resume is not None and remaining < 1 and cfg.steps is None:
                raise ValueError(f"{run_dir}: the run already has {done} updates; pass --n-updates > {done} to extend it")
            if run_dir is not None:
                if resume is not None:
                    cut_history(run_dir, model.update_metrics)
                saved = dataclasses.replace(cfg, device=device_flag)
                atomic_write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(saved), indent=2))
            _set_logger(model, cfg, run_dir, append=resume is not None)
            interrupted = _learn(model, cfg, run_dir, remaining, on_update, resume is not None, save_path, stop)
            n = len(model.update_metrics)
            if save_path and n and stop.saved_update != n:
                _save(model, save_path, stop, cfg)
    except BaseException:
        if fresh_dir and (model is None or not model.update_metrics):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing to keep: no orphan run directory
        if stop.aborted and model is not None:  # a third signal: stopped without saving
            kept = f"the checkpoint of update {stop.saved_update} in {save_path} is kept" if stop.saved_update > 0 else "nothing saved"
            print(f"stopped at once after {len(model.update_metrics)} updates: {kept}", file=sys.stderr)
        raise
    finally:
        stop.restore()
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        if n == 0:
            if fresh_dir:
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing to keep: no orphan run directory
            where = "nothing saved" + (f"; the run directory {run_dir} was removed" if fresh_dir else "")
            print(f"interrupted by {name} before the first update: {where}", file=sys.stderr)
        else:
            metrics_at = f", metrics in {run_dir / 'metrics.jsonl'}" if run_dir else ""
            saved_to = f"model saved to {save_path}" if save_path else "nothing saved (no --log-dir)"
            print(f"interrupted by {name} after {n} updates: {saved_to}{metrics_at}", file=sys.stderr)
        raise Interrupted(interrupted)
    if not cfg.quiet and model.update_metrics:
        first, last = model.update_metrics[0], model.update_metrics[-1]
        print(
            f"{cfg.algo} {cfg.reward_mode}: {n} updates, rm_score {first['rm_score']:.3f} -> "
            f"{last['rm_score']:.3f}, wall {last['wall_time']:.0f}s" + (f", saved {save_path}" if save_path else "")
        )
    return list(model.update_metrics)


def _save(model: Any, save_path: str, stop: _Stop, cfg: TrainConfig) -> None:
    """One atomic checkpoint (:func:`agents.checkpoint.save_checkpoint`); signals wait until it is written."""
    from agents.checkpoint import save_checkpoint

    stop.saving = True
    try:
        seconds = save_checkpoint(model, save_path)
    finally:
        stop.saving = False
    stop.saved_update = len(model.update_metrics)
    if not cfg.quiet and not cfg.progress:
        print(f"checkpoint: update {stop.saved_update} -> {save_path} ({seconds:.2f} s)", flush=True)


def _load_run(cfg: TrainConfig, run_dir: Path, dp: DataParallel = LOCAL):
    """The model of a run directory's last checkpoint, on a fresh env built from ``cfg``.

    Env rows and RNGs are reseeded with ``seed + updates_done * episodes_per_update`` (+ the
    rank's row offset under torchrun), so the resumed part does not replay the prompts the run
    started with; then torch's, numpy's and Python's RNG states saved with the checkpoint are
    restored (one process: the policy samples on as if the run had not stopped).
    """
    from agents.checkpoint import checkpoint_updates, load_rng_state, set_rng_state
    from agents.registry import REGISTRY

    path = Path(cfg.save_path) if cfg.save_path else run_dir / "model.zip"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no {path.name} there (the run stopped before its first checkpoint)")
    checkpoint_updates(path)  # a clear error for a file that is not a checkpoint, before SB3's zip reader
    model = REGISTRY[cfg.algo].load().load(path, device=cfg.device)
    rows, seed = dp.rows_and_seed(cfg.episodes_per_update, cfg.seed + len(model.update_metrics) * cfg.episodes_per_update)
    model.set_env(_make_env(cfg, rows, seed))
    model.set_random_seed(seed)
    state = load_rng_state(path)
    if state is not None and not dp.active:  # ranks draw different streams: their reseeding stands
        set_rng_state(state)
    _join(model, dp, seed)
    return model


def _set_logger(model: Any, cfg: TrainConfig, run_dir: Path | None, append: bool) -> None:
    """SB3's logger: stdout without a progress bar; TensorBoard and ``progress.csv`` in the run directory."""
    from stable_baselines3.common.logger import HumanOutputFormat, Logger, make_output_format

    from agents.compat import append_csv_format

    formats = [HumanOutputFormat(sys.stdout)] if not cfg.quiet and not cfg.progress else []
    if run_dir is not None:
        tb = make_output_format("tensorboard", str(run_dir))
        if append:  # hide the events a killed process logged after the checkpoint: TensorBoard shows no doubled steps
            from torch.utils.tensorboard import SummaryWriter

            tb.writer.close()
            tb.writer = SummaryWriter(log_dir=str(run_dir), purge_step=int(model.num_timesteps) + 1)
        formats.append(tb)
        csv = str(run_dir / "progress.csv")
        formats.append(append_csv_format(csv) if append else make_output_format("csv", str(run_dir)))
    model.set_logger(Logger(str(run_dir) if run_dir else None, formats))


def _learn(
    model: Any, cfg: TrainConfig, run_dir: Path | None, n_updates: int, on_update: UpdateHook | None, resume: bool,
    save_path: str | None, stop: _Stop,
) -> int | None:
    """Run ``n_updates`` updates (or ``cfg.steps`` timesteps), writing metrics and a checkpoint every
    ``cfg.checkpoint_every`` updates; returns the signal number if a signal stopped it, else ``None``."""
    jsonl = open(run_dir / "metrics.jsonl", "a" if resume else "w") if run_dir else None  # noqa: SIM115
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        total = cfg.n_updates if cfg.steps is None else None
        bar = tqdm(total=total, initial=len(model.update_metrics), desc=f"{cfg.algo}/{cfg.reward_mode}", unit="update")

    def hook(m: dict[str, Any]) -> None:
        if jsonl is not None:
            jsonl.write(json.dumps(m) + "\n")
            jsonl.flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rm=f"{m['rm_score']:.3f}", kl=f"{m['kl']:.2f}", vloss=f"{(m['value_loss'] or 0):.3f}")
        if on_update is not None:
            on_update(m)
        every = cfg.checkpoint_every
        if save_path and (stop.requested or (every and m["update"] % every == 0)):
            _save(model, save_path, stop, cfg)
        if stop.requested:
            raise Interrupted(stop.signum)  # at an update boundary: weights, optimiser and metrics agree

    model.on_update = hook
    try:
        kw: dict[str, Any] = dict(reset_num_timesteps=not resume, callback=_stop_callback(stop))
        if cfg.steps is None:
            model.learn(n_updates=n_updates, **kw)
        else:
            model.learn(total_timesteps=cfg.steps, **kw)
        return stop.signum  # a stop during a rollout ends learn() through the callback
    except Interrupted as err:
        return err.signum
    except KeyboardInterrupt:
        if stop.aborted:  # a third signal: leave at once, the last checkpoint stands
            raise
        return signal.SIGINT  # an on_update hook raised it (or no handler of ours was installed): save
    finally:
        if bar is not None:
            bar.close()
        if jsonl is not None:
            jsonl.close()
        model.on_update = None


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
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{flag} {folder}: {existing} is not a directory; pick another {flag}")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise ValueError(
                f"{flag} {folder}: cannot write in {existing} ({err.strerror}); pick another {flag} or make it writable"
            ) from err
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


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    """One flag per ``TrainConfig`` field, typed from its annotation, with its help and default."""
    p = argparse.ArgumentParser(prog="python -m agents.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        raise ValueError(f"--resume {run_dir}: no config.json there (not a run directory written by agents.train)")
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
    old_term = signal.signal(signal.SIGTERM, _raise_interrupted) if main_thread else None
    try:
        train(cfg, resume=resume)
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


class _CallableModule(types.ModuleType):
    """``agents.train`` is this module and, for ``from agents import train``, the function:
    the import system binds the submodule over the package attribute, so the module itself
    calls :func:`train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
