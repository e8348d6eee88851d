"""Train a token policy with credit-aware RL: ``python -m agents.train --help``.

Python API (used by the benchmarks)::

    from agents.train import TrainConfig, train
    metrics = train(TrainConfig(reward_mode="sparse", n_updates=20, log_dir=None, progress=False))

``train`` returns one dict per update (the JSON lines of ``metrics.jsonl``, keys in
:mod:`agents.metrics`). A run writes ``<log_dir>/<run>/``: ``config.json``, ``metrics.jsonl``,
TensorBoard events and ``progress.csv`` (one row per update), ``model.zip`` and ``model_hf/``.
``--resume RUN_DIR`` continues a run in its directory (``--n-updates`` may extend it).
Ctrl-C saves the model and the metrics so far and exits with status 130.
``torchrun --nproc-per-node K -m agents.train ...`` trains with K data-parallel ranks
(:mod:`agents.distributed`, docs/distributed.md); rank 0 alone writes.

Defaults and their reasons: :mod:`agents.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.config import TrainConfig, flag_of
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

    extra = {} if cfg.reward_device is None else {"reward_device": cfg.reward_device}
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


def train(config: TrainConfig, on_update: UpdateHook | None = None, resume: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Run one training run; returns the per-update metric dicts (same keys as ``metrics.jsonl``).

    :param config: the run's hyperparameters.
    :param on_update: called with each update's metrics (after they are written).
    :param resume: a run directory written by ``train``: load its ``model.zip`` and continue up to
        ``config.n_updates`` updates in it (``metrics.jsonl`` appended, update numbers continued).
    :raises KeyboardInterrupt: after saving the model and the metrics so far (one line says where).

    Under torchrun (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` set) this is one rank of a data-parallel
    run (:mod:`agents.distributed`): every rank returns the same global metrics; rank 0 alone writes.
    """
    import torch
    import transformers

    config.validate()
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
    if not dp.is_main:  # other ranks write nothing: no run directory, files, model, logger output or summary
        cfg = dataclasses.replace(cfg, log_dir=None, save_path=None, progress=False, quiet=True)
    read_dir = Path(resume) if resume is not None else None
    run_dir = read_dir if not dp.is_main else (read_dir or (make_run_dir(cfg) if cfg.log_dir is not None else None))
    fresh_dir = resume is None and run_dir is not None
    model = None
    try:
        model = _load_run(cfg, read_dir, dp) if read_dir is not None else build_model(cfg, dp=dp)
        if not dp.is_main:
            run_dir = None
        done = len(model.update_metrics)
        remaining = cfg.n_updates - done
        if resume is not None and remaining < 1 and cfg.steps is None:
            raise ValueError(f"{run_dir}: the run already has {done} updates; pass --n-updates > {done} to extend it")
        if run_dir is not None:
            saved = dataclasses.replace(cfg, device=device_flag)
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(saved), indent=2))
        _set_logger(model, cfg, run_dir, append=resume is not None)
        interrupted = _learn(model, cfg, run_dir, remaining, on_update, resume is not None)
    except BaseException:
        if fresh_dir and (model is None or not model.update_metrics):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing to keep: no orphan run directory
        raise
    save_path = cfg.save_path or (str(run_dir / "model.zip") if run_dir else None)
    if save_path and model.update_metrics:
        model.save(save_path)
        model.policy.save_pretrained(os.path.splitext(save_path)[0] + "_hf")
    n = len(model.update_metrics)
    if interrupted and fresh_dir and n == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        where = f"model saved to {save_path}" if save_path and n else "nothing saved"
        metrics_at = f", metrics in {run_dir / 'metrics.jsonl'}" if run_dir else ""
        print(f"interrupted after {n} updates: {where}{metrics_at}", file=sys.stderr)
        raise KeyboardInterrupt
    if not cfg.quiet and model.update_metrics:
        first, last = model.update_metrics[0], model.update_metrics[-1]
        print(
            f"{cfg.algo} {cfg.reward_mode}: {n} updates, rm_score {first['rm_score']:.3f} -> "
            f"{last['rm_score']:.3f}, wall {last['wall_time']:.0f}s" + (f", saved {save_path}" if save_path else "")
        )
    return list(model.update_metrics)


def _load_run(cfg: TrainConfig, run_dir: Path, dp: DataParallel = LOCAL):
    """The model of a run directory, on a fresh env built from ``cfg``.

    Env rows and RNGs are reseeded with ``seed + updates_done * episodes_per_update`` (+ the
    rank's row offset under torchrun), so the resumed part does not replay the prompts the run
    started with.
    """
    from agents.registry import REGISTRY

    path = Path(cfg.save_path) if cfg.save_path else run_dir / "model.zip"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no {path.name} there (a run saves it at its end or on Ctrl-C)")
    model = REGISTRY[cfg.algo].load().load(path, device=cfg.device)
    rows, seed = dp.rows_and_seed(cfg.episodes_per_update, cfg.seed + len(model.update_metrics) * cfg.episodes_per_update)
    model.set_env(_make_env(cfg, rows, seed))
    model.set_random_seed(seed)
    _join(model, dp, seed)
    return model


def _set_logger(model: Any, cfg: TrainConfig, run_dir: Path | None, append: bool) -> None:
    """SB3's logger: stdout without a progress bar; TensorBoard and ``progress.csv`` in the run directory."""
    from stable_baselines3.common.logger import HumanOutputFormat, Logger, make_output_format

    from agents.compat import append_csv_format

    formats = [HumanOutputFormat(sys.stdout)] if not cfg.quiet and not cfg.progress else []
    if run_dir is not None:
        formats.append(make_output_format("tensorboard", str(run_dir)))
        csv = str(run_dir / "progress.csv")
        formats.append(append_csv_format(csv) if append else make_output_format("csv", str(run_dir)))
    model.set_logger(Logger(str(run_dir) if run_dir else None, formats))


def _learn(model: Any, cfg: TrainConfig, run_dir: Path | None, n_updates: int, on_update: UpdateHook | None, resume: bool) -> bool:
    """Run ``n_updates`` updates (or ``cfg.steps`` timesteps), writing metrics; ``True`` if interrupted."""
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

    model.on_update = hook
    try:
        if cfg.steps is None:
            model.learn(n_updates=n_updates, reset_num_timesteps=not resume)
        else:
            model.learn(total_timesteps=cfg.steps, reset_num_timesteps=not resume)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        if bar is not None:
            bar.close()
        if jsonl is not None:
            jsonl.close()
        model.on_update = None


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


def _none_or(base: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        return None if text.lower() == "none" else base(text)

    convert.__name__ = base.__name__  # argparse names the type in its error messages
    return convert


def _resume_config(run_dir: str, given: dict[str, Any]) -> TrainConfig:
    """The run's own config; flags that differ from it are an error, except ``--n-updates`` (extends the run)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no config.json there (not a run directory written by agents.train)")
    saved = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    for name, value in given.items():
        if name != "n_updates" and value != getattr(cfg, name):
            raise ValueError(
                f"{flag_of(name)} {value} differs from the run's {getattr(cfg, name)} ({path}): a resumed run keeps its "
                "config; drop the flag (only --n-updates may change, to extend the run)"
            )
    if "n_updates" in given:
        cfg.n_updates = given["n_updates"]
    metrics = Path(run_dir) / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    if cfg.steps is None and cfg.n_updates <= done:
        raise ValueError(f"--resume {run_dir}: the run already has {done} updates; pass --n-updates > {done} to extend it")
    return cfg


def main(argv: list[str] | None = None) -> None:
    """CLI entry point. Exit status: 0, 1 with ``error: ...`` for a bad config, 130 on Ctrl-C."""
    args = vars(_parser().parse_args(argv))
    resume = args.pop("resume")
    try:
        cfg = _resume_config(resume, args) if resume else TrainConfig(**args)
        cfg.validate()  # before any run directory exists
        if launched_by_torchrun():
            check_data_parallel(cfg, int(os.environ["WORLD_SIZE"]))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        train(cfg, resume=resume)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


class _CallableModule(types.ModuleType):
    """``agents.train`` is this module and, for ``from agents import train``, the function:
    the import system binds the submodule over the package attribute, so the module itself
    calls :func:`train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
