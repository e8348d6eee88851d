"""Command line: ``python -m benchmarks.dense_vs_sparse`` (see the package docstring or ``--help``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.dense_vs_sparse.defaults import (
    ALGOS,
    BENCH_OVERRIDES,
    BETA_GRID,
    DEFAULT_LENGTHS,
    DEFAULT_MODES,
    KL_GRID,
    KL_SWEEP_FIELDS,
    MODES,
    QUICK,
    SWEEP_ALGOS,
    check_overrides,
    train_config_class,
    train_defaults,
)
from benchmarks.dense_vs_sparse.plan import RunSpec, build_specs, parse_length
from benchmarks.dense_vs_sparse.pool import Interrupted, run_specs, stop_on_signals
from benchmarks.dense_vs_sparse.provenance import run_meta
from benchmarks.dense_vs_sparse.results import ResumeError, check_resume, load_results, row_spec, save_results
from benchmarks.dense_vs_sparse.tables import SPEED_WINDOW, report
from benchmarks.dense_vs_sparse.training import config_hash, parse_set, run_config

PROG = "python -m benchmarks.dense_vs_sparse"
REPORT_UPDATE = 20  # the paper's early update


def _default_text(field: str, defaults: dict[str, Any]) -> str:
    return f"TrainConfig's, now {defaults[field]!r}" if field in defaults else "TrainConfig's"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; defaults that are TrainConfig's are shown as such (read from agents.training)."""
    import benchmarks.dense_vs_sparse as pkg

    defaults = train_defaults()
    departures = "\n".join(f"  {k} = {v!r}: {why} (TrainConfig's default: {defaults.get(k, '?')!r})"
                           for k, (v, why) in BENCH_OVERRIDES.items())
    ap = argparse.ArgumentParser(
        prog=PROG, description=pkg.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Hyperparameters are agents.TrainConfig's defaults, except where the benchmark deliberately "
               "departs from them\n(benchmarks/dense_vs_sparse/defaults.py, BENCH_OVERRIDES):\n" + departures,
    )
    what = ap.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true",
                      help="the README's < 10 min check: token_ppo on Sentiment-v0 (8-15-token completions, where the shipped RM is valid), "
                           "3 seeds, sparse/abc/red, --quick-updates updates")
    what.add_argument("--smoke", action="store_true",
                      help="1 seed x 2 updates (with --quick: its modes): proves imports, tables and plots in "
                           "about a minute; numbers mean nothing (CI runs the README's main job this way)")
    what.add_argument("--sweep", choices=("length", "beta", "algos", "kl"),
                      help="run a sweep instead of the main comparison (kl: every mode at each --kl-coefs coefficient, "
                           "held fixed: RM-vs-KL and gold-vs-KL frontiers)")
    what.add_argument("--fidelity", action="store_true", help="no training: ABC credit vs gold credit on the shipped policy")
    what.add_argument("--from-results", metavar="PATH", help="redraw tables and plots from a results.json/.csv; no training")
    what.add_argument("--resume", action="store_true",
                      help="skip runs already in --out/results.json; refused if they were made with other settings")

    task = ap.add_argument_group("task and conditions")
    task.add_argument("--env-id", default=None, help="task (default abc_gym/Sentiment-v0; --quick: abc_gym/Sentiment-v0)")
    task.add_argument("--modes", nargs="+", choices=MODES, default=None, help="credit modes (default: sparse abc uniform oracle; --quick: sparse abc red)")
    task.add_argument("--beta", type=float, default=None, help=f"ABC mixing weight (default {_default_text('beta', defaults)}; paper: 0.8)")
    task.add_argument("--betas", nargs="+", type=float, default=list(BETA_GRID), help="--sweep beta grid")
    task.add_argument("--lengths", nargs="+", type=parse_length, default=[parse_length(x) for x in DEFAULT_LENGTHS],
                      help="--sweep length: completion length ranges MIN-MAX (default 8-15 40-59 90-109)")
    algo, why = BENCH_OVERRIDES["algo"]
    task.add_argument("--algo", choices=ALGOS, default=None,
                      help=f"learner (default {algo!r}: {why}; --quick: 'token_ppo'; TrainConfig's default is "
                           f"{defaults.get('algo', '?')!r})")
    task.add_argument("--algos", nargs="+", choices=ALGOS, default=list(SWEEP_ALGOS), help="--sweep algos: learners")
    task.add_argument("--kl-coefs", nargs="+", type=float, default=None, metavar="COEF",
                      help="--sweep kl: KL-penalty coefficients, each held fixed for whole runs (kl_coef=COEF, "
                           f"adaptive_kl=False; default {' '.join(f'{c:g}' for c in KL_GRID)}); --resume may add "
                           "coefficients but must name every stored one")

    train = ap.add_argument_group("training (agents.TrainConfig)")
    train.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; --quick: 3)")
    train.add_argument("--seed-offset", type=int, default=0, help="seeds are OFFSET .. OFFSET+SEEDS-1")
    n_updates, why = BENCH_OVERRIDES["n_updates"]
    train.add_argument("--n-updates", type=int, default=None, help=f"updates per run (default {n_updates}: {why})")
    train.add_argument("--quick-updates", type=int, default=50, help="updates per run under --quick")
    train.add_argument("--episodes-per-update", type=int, default=None,
                       help=f"completions per update (default {_default_text('episodes_per_update', defaults)}; paper: 16)")
    train.add_argument("--device", default=None, help=f"torch device (default {_default_text('device', defaults)})")
    train.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                       help="override any other TrainConfig field (JSON value), e.g. --set lr=3e-5 clip_range_vf=null; "
                            "FIELD must be a field of agents.TrainConfig")
    train.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel (processes)")
    train.add_argument("--threads-per-job", type=int, default=None, help="torch threads per run (default cpus // jobs)")
    train.add_argument("--log-dir", default=None, help="pass a per-run log_dir under this folder to the agent")

    rep = ap.add_argument_group("report")
    rep.add_argument("--out", default=None, help="output folder (default results/dense_vs_sparse[_SWEEP] or results/credit_fidelity)")
    rep.add_argument("--report-update", type=int, default=None,
                     help=f"the early update the table reports (default {REPORT_UPDATE}, the paper's, or the last "
                          "update of shorter runs)")
    rep.add_argument("--smooth", type=int, default=1,
                     help="trailing moving-average window for the plots (1 = raw, as the paper)")
    rep.add_argument("--speed-window", type=int, default=SPEED_WINDOW,
                     help="trailing window (updates) smoothing each seed's RM curve before its first update at 50%% / 80%% "
                          "of the way to the best final level is read (the updates-to-reach table)")
    rep.add_argument("--headline", action="store_true",
                     help="with --from-results: also write headline.md, the README headline block (every declared "
                          "comparison with its verdict, negatives included; benchmarks/dense_vs_sparse/docs_blocks.py "
                          "keeps the README's copy in step)")

    fid = ap.add_argument_group("--fidelity")
    fid.add_argument("--fidelity-envs", nargs="+", default=["abc_gym/Sentiment-v0", "abc_gym/Sentiment-MiniLM-v0"])
    fid.add_argument("--fidelity-episodes", type=int, default=512)
    fid.add_argument("--fidelity-batch", type=int, default=64)
    fid.add_argument("--fidelity-seed", type=int, default=0)
    return ap


def _abc_default_beta() -> float:
    """abc_gym's own default beta (for --fidelity when agents.training is not importable)."""
    import inspect

    from abc_gym.credit import abc_credit

    return float(inspect.signature(abc_credit).parameters["beta"].default)


#: Lower bounds of the integer flags (``None``: not given, a default applies later).
_AT_LEAST = {
    "seeds": 1, "seed_offset": 0, "n_updates": 1, "quick_updates": 1, "episodes_per_update": 1, "jobs": 1,
    "threads_per_job": 1, "report_update": 1, "smooth": 1, "speed_window": 1, "fidelity_episodes": 1,
    "fidelity_batch": 1, "fidelity_seed": 0,
}


def _check_ranges(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag, the value and the allowed range for the first bad one."""
    for name, low in _AT_LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be >= {low}")
    for lo, hi in args.lengths:
        if lo < 1:
            raise ValueError(f"--lengths {lo}-{hi}: a completion has at least 1 new token; use MIN-MAX with 1 <= MIN <= MAX")
    for beta in [*args.betas, *([] if args.beta is None else [args.beta])]:
        if not 0.0 <= beta <= 1.0:  # also refuses NaN
            raise ValueError(f"--beta(s) {beta}: must be in [0, 1]")
    if args.kl_coefs is not None:
        if args.sweep != "kl":
            raise ValueError("--kl-coefs is the grid of --sweep kl; add --sweep kl (or use --set kl_coef=VALUE "
                             "adaptive_kl=false for one fixed coefficient)")
        for coef in args.kl_coefs:
            if not 0.0 <= coef < math.inf:  # also refuses NaN
                raise ValueError(f"--kl-coefs {coef}: a KL coefficient is finite and >= 0")
        if len(set(args.kl_coefs)) != len(args.kl_coefs):
            raise ValueError(f"--kl-coefs {' '.join(f'{c:g}' for c in args.kl_coefs)}: a coefficient is repeated; "
                             "name each once")


def _check_set_values(overrides: dict[str, Any]) -> None:
    """Each ``--set FIELD=VALUE`` of TrainConfig's type and finite, named as the user wrote it."""
    from agents.config import check_types

    cls = train_config_class()
    for key, value in overrides.items():
        try:
            check_types(cls(**{key: value}))
        except ValueError as err:
            raise ValueError(f"--set {key}={value!r}: {str(err).split(': ', 1)[-1]}") from err


def _check_env_id(env_id: str) -> None:
    """``--env-id`` a registered id (abc_gym's, or a length variant ``<name>-MIN-MAX-vN``)."""
    from gymnasium.envs.registration import registry

    from benchmarks.dense_vs_sparse.plan import ensure_env

    try:
        ensure_env(env_id)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--env-id {env_id}: {err}") from err
    if env_id not in registry:
        known = ", ".join(k for k in registry if k.startswith("abc_gym/"))
        raise ValueError(f"--env-id {env_id}: no such registered env; use one of {known}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and complete the arguments: presets (--quick, --smoke) and TrainConfig's defaults filled in."""
    ap = build_parser()
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    defaults = train_defaults()
    try:  # every value before any work: a 0 would otherwise fall back to a default below, or fail after training
        _check_ranges(args)
    except ValueError as err:
        ap.error(str(err))
    if args.set:
        if not defaults:
            ap.error("--set needs agents.training (TrainConfig), which is not importable")
        try:
            overrides = parse_set(args.set)
            check_overrides(overrides, {f.name for f in dataclasses.fields(train_config_class())})
            _check_set_values(overrides)
            clash = [k for k in KL_SWEEP_FIELDS if k in overrides]
            if args.sweep == "kl" and clash:
                raise ValueError(f"--set {clash[0]}: --sweep kl sets {' and '.join(KL_SWEEP_FIELDS)} per run "
                                 "(kl_coef from --kl-coefs, adaptive_kl=False); use --kl-coefs")
        except (ValueError, argparse.ArgumentTypeError) as err:
            ap.error(str(err))
    if args.quick:
        args.seeds = 3 if args.seeds is None else args.seeds
        args.modes = args.modes or list(QUICK["modes"])
        args.n_updates = args.n_updates or args.quick_updates
        args.algo = args.algo or QUICK["algo"]
        args.env_id = args.env_id or QUICK["env_id"]
    if args.smoke:
        args.seeds, args.n_updates = 1, 2
    args.seeds = 5 if args.seeds is None else args.seeds
    if args.sweep == "kl" and args.kl_coefs is None:
        args.kl_coefs = list(KL_GRID)
    args.modes = args.modes or (["sparse", "abc"] if args.sweep == "algos" else list(DEFAULT_MODES))
    args.algo = args.algo or BENCH_OVERRIDES["algo"][0]
    args.env_id = args.env_id or "abc_gym/Sentiment-v0"
    args.n_updates = args.n_updates or BENCH_OVERRIDES["n_updates"][0]
    # TrainConfig's defaults, recorded so results.json says what was run; None when the
    # field is absent (make_train_config then names the missing field)
    args.episodes_per_update = args.episodes_per_update or defaults.get("episodes_per_update")
    args.device = args.device or defaults.get("device") or "cpu"  # "cpu": --fidelity without agents installed
    if args.beta is None:
        args.beta = defaults["beta"] if "beta" in defaults else _abc_default_beta()
    args.threads_per_job = args.threads_per_job or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    if args.report_update is None:
        args.report_update = REPORT_UPDATE if args.from_results else min(REPORT_UPDATE, args.n_updates)
    elif args.report_update > args.n_updates and not (args.fidelity or args.from_results or args.smoke):
        ap.error(f"--report-update {args.report_update}: the runs have only {args.n_updates} updates; "
                 f"use 1 <= --report-update <= {args.n_updates}")
    if not (args.fidelity or args.from_results):
        try:
            _check_env_id(args.env_id)
        except ValueError as err:
            ap.error(str(err))
    if args.out is None:
        if args.from_results and args.from_results.endswith(".json.gz"):  # raw results in docs/raw: redraw elsewhere
            args.out = "results/from_raw/" + Path(args.from_results).name.split(".")[0]
        elif args.from_results:
            args.out = str(Path(args.from_results).parent if Path(args.from_results).is_file() else args.from_results)
        elif args.fidelity:
            args.out = "results/credit_fidelity"
        else:
            args.out = "results/dense_vs_sparse" + (f"_{args.sweep}" if args.sweep else "") + ("_smoke" if args.smoke else "")
    return args


def train_benchmark(args: argparse.Namespace, t0: float) -> int:
    """Plan, (resume,) train and report; saves results.json after every finished run."""
    out = Path(args.out)
    path = out / "results.json"
    specs = build_specs(args)
    settings = {
        "n_updates": args.n_updates, "episodes_per_update": args.episodes_per_update, "device": args.device,
        "set": parse_set(args.set), "threads_per_job": args.threads_per_job, "log_root": args.log_dir,
    }
    try:  # builds every TrainConfig: a bad --set value fails here, before any training
        configs = {s.name: run_config(s, settings) for s in specs}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # before any training: the folders are writable, and no other benchmark writes --out
        if args.log_dir is not None:
            _check_writable("--log-dir", Path(args.log_dir))
        _check_writable("--out", out)
        from agents.run_lock import DirectoryLocked, DirLock

        try:
            lock = DirLock(out, "--out folder")
        except DirectoryLocked as err:
            raise ValueError(str(err)) from None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        rows: list[dict[str, Any]] = []
        runs: dict[str, dict[str, Any]] = {}  # run name -> its run config and hash (what --resume checks)
        commands: list[str] = []
        if args.resume and path.exists():
            payload = json.loads(path.read_text())

            def fresh_config(spec: RunSpec) -> dict[str, Any]:
                """A stored run's config under this command's settings (also for stored runs it does not plan)."""
                if spec.name in configs:
                    return configs[spec.name]
                if args.sweep != "algos":  # outside the algos sweep the learner is one setting for all runs
                    spec = dataclasses.replace(spec, algo=args.algo)
                return run_config(spec, settings)

            try:
                _check_resume_tasks(payload, specs, args, path)
                check_resume(payload, fresh_config, path)
            except ResumeError as err:
                print(err, file=sys.stderr)
                return 2
            rows = load_results(path)[0].to_dict("records")  # NaN, not None, for metrics an agent did not report
            runs = dict(payload["meta"]["runs"])
            commands = list(payload["meta"].get("commands", []))
        done = {row_spec(r).name for r in rows}
        todo = [s for s in specs if s.name not in done]
        print(f"{len(todo)} runs to do ({len(specs) - len(todo)} already stored): seeds "
              f"{list(range(args.seed_offset, args.seed_offset + args.seeds))}, {args.algo}, {args.n_updates} updates x "
              f"{args.episodes_per_update} completions, {args.jobs} job(s) x {args.threads_per_job} thread(s)", flush=True)

        def meta(wall: float) -> dict[str, Any]:
            m = run_meta(args, wall)
            return {**m, "commands": [*commands, m["command"]], "runs": runs}

        def on_done(spec: RunSpec, new_rows: list[dict[str, Any]]) -> None:
            key = config_hash(configs[spec.name])
            for r in new_rows:
                r["config_hash"] = key
            runs[spec.name] = {"hash": key, "config": configs[spec.name]}
            rows.extend(new_rows)
            last = new_rows[-1]
            print(f"[{time.perf_counter() - t0:6.0f} s] {spec.name}: final RM {last.get('rm_score', math.nan):.2f}, "
                  f"gold {last.get('gold_score', math.nan):.3f} ({last['run_wall_s']:.0f} s)", flush=True)
            save_results(rows, meta(time.perf_counter() - t0), out)

        with stop_on_signals():  # inside it, a second Ctrl-C cannot cut the clean-up short
            try:
                run_specs(todo, settings, args.jobs, on_done)
            except Interrupted as stop:
                kept = len({row_spec(r).name for r in rows})
                stopped = " (worker processes stopped)" if args.jobs > 1 and len(todo) > 1 else ""
                if not rows:  # no results.json to point at: the same command starts afresh
                    print(f"interrupted by {stop}{stopped} before any run finished: nothing saved; start again with: "
                          f"{PROG} {shlex.join(args.argv)}", file=sys.stderr, flush=True)
                    return stop.exit_code
                save_results(rows, meta(time.perf_counter() - t0), out)  # again: the signal may have cut a save short
                argv = args.argv if "--resume" in args.argv else [*args.argv, "--resume"]
                print(f"interrupted by {stop}{stopped}: kept {kept} finished run(s) of {len(specs)} in {path}; "
                      f"finish with: {PROG} {shlex.join(argv)}", file=sys.stderr, flush=True)
                return stop.exit_code
        wall = time.perf_counter() - t0
        if not todo and args.resume and path.exists():  # nothing run: results.json (and its meta.command) stay as they are
            m = json.loads(path.read_text())["meta"]
            header = f"Command: `{m.get('command', '?')}`; run time {m.get('wall_s', math.nan):.0f} s.\n\n"
        else:
            m = meta(wall)
            save_results(rows, m, out)
            header = f"Command: `{m['command']}`; run time {wall:.0f} s.\n\n"
        print(report(pd.DataFrame(rows), out, args.report_update, args.smooth, header, args.speed_window))
        print(f"total run time: {wall:.0f} s ({wall / 60:.1f} min) -> {out}")
        return 0
    finally:
        lock.release()


def _check_writable(flag: str, folder: Path) -> None:
    """``folder`` is (or is made) a writable directory; ``ValueError`` naming the flag and the fix otherwise."""
    from agents.run_dir import check_writable  # the agents' one check (the benchmark trains with agents)

    check_writable(flag, folder, create=True)


def _check_resume_tasks(payload: dict[str, Any], specs: list[RunSpec], args: argparse.Namespace, path: Path) -> None:
    """Refuse a ``--resume`` whose sweep or task is not the stored one: the tables would mix two tasks.

    :func:`check_resume` compares each stored run with its own env; this compares the stored
    runs' env ids with the one this command trains (``--env-id``; a length sweep may add lengths).
    """
    stored = {(r.get("sweep"), r.get("env_id")) for r in payload.get("rows", [])}
    planned_sweep = args.sweep or "main"
    sweeps = sorted({str(sw) for sw, _ in stored} - {planned_sweep})
    if sweeps:
        raise ResumeError(f"--resume refused: {path} holds runs of --sweep {sweeps[0]}, this command is "
                          f"--sweep {planned_sweep}; resume with the stored sweep or pick another --out")
    if planned_sweep == "length":
        return
    if planned_sweep == "kl":
        # the sweep's grid is its Holm family: a resume may add coefficients, never silently keep unnamed ones
        stored_coefs = {float(r["fixed_kl_coef"]) for r in payload.get("rows", []) if r.get("fixed_kl_coef") is not None}
        missing = sorted(stored_coefs - {float(c) for c in args.kl_coefs})
        if missing:
            union = " ".join(f"{c:g}" for c in sorted(stored_coefs | set(map(float, args.kl_coefs))))
            raise ResumeError(f"--resume refused: {path} holds runs at KL coefficient(s) "
                              f"{', '.join(f'{c:g}' for c in missing)}, which --kl-coefs does not name; resume with "
                              f"--kl-coefs {union}, or pick another --out")
    envs = sorted({str(env) for _, env in stored} - {s.env_id for s in specs})
    if envs:
        raise ResumeError(f"--resume refused: the runs stored in {path} are on --env-id {envs[0]}, this command's are "
                          f"on {args.env_id}; resume with --env-id {envs[0]}, or pick another --out")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: bad settings, 128 + signal number: interrupted)."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)

    if args.fidelity:
        from benchmarks.dense_vs_sparse.fidelity import run_fidelity

        print(run_fidelity(args))
        print(f"total run time: {time.perf_counter() - t0:.0f} s -> {out}")
        return 0

    if args.from_results:
        try:
            df, meta = load_results(args.from_results)
        except FileNotFoundError as err:
            print(f"error: --from-results {args.from_results}: {err}", file=sys.stderr)
            return 2
        except (TypeError, KeyError, AttributeError, ValueError, UnicodeDecodeError) as err:  # a JSON list, another file
            print(f"error: --from-results {args.from_results}: not a results file of this benchmark (a results.json "
                  f"object with 'meta' and 'rows', or a results.csv; {type(err).__name__}: {err}); pass one, or the "
                  "folder holding it", file=sys.stderr)
            return 2
        header = f"Results from `{meta.get('command', args.from_results)}`" + (
            f", run time {meta['wall_s']:.0f} s.\n\n" if meta.get("wall_s") else ".\n\n")
        print(report(df, out, args.report_update, args.smooth, header, args.speed_window))
        if args.headline:
            from benchmarks.dense_vs_sparse.tables import headline

            src = Path(args.from_results)
            name = src.name.split(".")[0] if src.suffix == ".gz" else (src.parent.name if src.is_file() else src.name)
            text = headline([(name, df)], speed_window=args.speed_window)
            (out / "headline.md").write_text(text)
            print(text)
        print(f"redrawn in {time.perf_counter() - t0:.1f} s -> {out}")
        return 0

    import abc_gym  # noqa: F401  registers the env ids (the plan reads their length ranges)

    try:
        import agents.training  # noqa: F401
    except ImportError as err:
        print(f"agents.training is not importable ({err}); training benchmarks need it. "
              "`--fidelity` and `--from-results` work without it.", file=sys.stderr)
        return 2
    return train_benchmark(args, t0)
