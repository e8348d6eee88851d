"""``train(config)``: a credit-aware RL run from a :class:`~agents.config.TrainConfig`; the CLI is
``python -m agents`` (:mod:`agents.cli`).

Python API (used by the benchmarks)::

    from agents import TrainConfig, train
    metrics = train(TrainConfig(reward_mode="sparse", n_updates=20, log_dir=None, progress=False))

``train`` returns one dict per update (the JSON lines of ``metrics.jsonl``, keys in
:mod:`agents.metrics`). A run writes ``<log_dir>/<run>/``: ``config.json``, ``metrics.jsonl``,
TensorBoard events and ``progress.csv`` (one row per update), and a checkpoint (``model.zip``
and ``model_hf/``, written atomically: :mod:`agents.checkpoint`) every ``--checkpoint-every``
updates and at the end. ``resume=RUN_DIR`` continues a run from its last checkpoint, in its
directory (history cut back to it); one process at a time writes a run directory
(:mod:`agents.run_lock`). SIGINT (Ctrl-C) and SIGTERM stop the run at the next step and save it
(:mod:`agents.stopping`). ``torchrun --nproc-per-node K -m agents ...`` trains with K
data-parallel ranks (:mod:`agents.distributed`, docs/distributed.md); rank 0 alone writes.

Defaults and their reasons: :mod:`agents.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from agents.distributed import LOCAL, DataParallel, data_parallel
from agents.run_dir import check_output_dirs, make_run_dir
from agents.stopping import Interrupted, StopRequest, stop_callback

__all__ = ["Interrupted", "TrainConfig", "build_model", "make_run_dir", "train"]

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
    # The run's own settings (TrainConfig.threads; no loading bars in a run's output), restored after:
    # the caller's process keeps its thread count and its transformers verbosity.
    threads, bars = torch.get_num_threads(), transformers.utils.logging.is_progress_bar_enabled()
    torch.set_num_threads(max(1, config.threads))
    transformers.utils.logging.disable_progress_bar()
    try:
        with data_parallel(config) as (dp, cfg):
            return _train(cfg, dp, on_update, resume, device_flag=config.device)
    finally:
        torch.set_num_threads(threads)
        if bars:
            transformers.utils.logging.enable_progress_bar()


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
    stop = StopRequest()
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


def _save(model: Any, save_path: str, stop: StopRequest, cfg: TrainConfig) -> None:
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
    from agents.checkpoint import checkpoint_numerics, checkpoint_updates, load_rng_state, set_rng_state
    from agents.config import NUMERICS_VERSION
    from agents.registry import REGISTRY

    path = Path(cfg.save_path) if cfg.save_path else run_dir / "model.zip"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no {path.name} there (the run stopped before its first checkpoint)")
    checkpoint_updates(path)  # a clear error for a file that is not a checkpoint, before SB3's zip reader
    written_by = checkpoint_numerics(path)
    if written_by != NUMERICS_VERSION:
        import warnings

        warnings.warn(
            f"--resume {run_dir}: its checkpoint was written by code whose arithmetic is version {written_by}, this "
            f"code's is {NUMERICS_VERSION} (agents.config.NUMERICS_VERSION; CHANGELOG.md says what changed): the "
            "resumed updates differ within float rounding from those the run would have made on its own code. "
            "Resume with that commit for bit-for-bit continuity",
            stacklevel=2,
        )
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
    save_path: str | None, stop: StopRequest,
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
        kw: dict[str, Any] = dict(reset_num_timesteps=not resume, callback=stop_callback(stop))
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


