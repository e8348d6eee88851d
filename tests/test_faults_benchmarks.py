"""Faults of the dense-vs-sparse benchmark: --resume with other settings, and SIGINT/SIGTERM with worker processes.

The --resume tests run in-process against the real TrainConfig with a fake train(); the
signal tests start the real CLI (``--smoke --jobs 2``) as a subprocess and signal it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import dense_vs_sparse as bench

ROOT = Path(__file__).resolve().parents[1]


def _agents_importable() -> bool:
    try:
        return importlib.util.find_spec("agents.training") is not None
    except ModuleNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not _agents_importable(), reason="agents.training is not importable (another engineer's work)")


# ----------------------------------------------------------------------------- --resume checks the stored settings


def _stub_agent() -> types.ModuleType:
    """agents.training with the real TrainConfig and a fake, instant train() that records its configs."""
    from agents.training import TrainConfig

    calls: list = []

    def train(cfg) -> list[dict]:
        calls.append(cfg)
        return [dict(update=u, rm_score=float(u + cfg.seed), gold_score=0.1 * u, kl=0.1, value_loss=1.0)
                for u in range(1, cfg.n_updates + 1)]

    mod = types.ModuleType("agents.training")
    mod.TrainConfig, mod.train, mod.calls = TrainConfig, train, calls
    return mod


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = _stub_agent()
    monkeypatch.setitem(sys.modules, "agents.training", mod)
    return mod


def _argv(out: Path, *extra: str) -> list[str]:
    return ["--seeds", "1", "--jobs", "1", "--out", str(out), *extra]


def test_resume_refuses_other_settings_and_names_them(tmp_path: Path, stub: types.ModuleType,
                                                      capsys: pytest.CaptureFixture) -> None:
    # The reported fault: a 3-update run was cut short; `--resume --n-updates 5 --set lr=0.01`
    # kept the stored 3-update run and put it beside new 5-update runs.
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "3", "--modes", "sparse")) == 0
    stored = (out / "results.json").read_text()
    stub.calls.clear()
    capsys.readouterr()

    assert bench.main(_argv(out, "--n-updates", "5", "--modes", "sparse", "abc", "--set", "lr=0.01", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume refused" in err
    assert re.search(r"n_updates: stored 3, now 5 .*--n-updates", err)
    assert re.search(r"lr: stored [0-9.e-]+, now 0\.01 .*--set lr=", err)
    assert stub.calls == [] and (out / "results.json").read_text() == stored  # nothing trained, nothing overwritten

    # a stored run that this command does not plan (abc) is checked too, and the learner is a setting
    assert bench.main(_argv(out, "--n-updates", "3", "--modes", "abc", "--algo", "a2c", "--resume")) == 2
    assert re.search(r"algo: stored 'ppo', now 'a2c' .*--algo", capsys.readouterr().err)


def test_resume_refuses_changed_model_files(tmp_path: Path, stub: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse")) == 0
    monkeypatch.setattr("benchmarks.dense_vs_sparse.training.model_files_hash", lambda: "retrained")
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse", "--resume")) == 2
    assert "model files" in capsys.readouterr().err


def test_resume_with_same_settings_completes_and_records_configs(tmp_path: Path, stub: types.ModuleType) -> None:
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse", "--set", "lr=0.001")) == 0
    stub.calls.clear()
    # other --jobs / --threads-per-job / --log-dir do not change a run's numbers: allowed
    argv = _argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--set", "lr=0.001", "--threads-per-job", "2",
                 "--log-dir", str(tmp_path / "logs"), "--resume")
    assert bench.main(argv) == 0
    assert [(c.reward_mode, c.lr) for c in stub.calls] == [("abc", 0.001)]
    payload = json.loads((out / "results.json").read_text())
    runs = payload["meta"]["runs"]
    assert len(runs) == 2 and {r["config_hash"] for r in payload["rows"]} == {r["hash"] for r in runs.values()}
    config = next(iter(runs.values()))["config"]
    assert config["train"]["n_updates"] == 2 and config["train"]["lr"] == 0.001
    assert (config["env"]["min_new_tokens"], config["env"]["max_new_tokens"]) == (8, 15) and config["model_files"]
    assert len(payload["meta"]["commands"]) == 2  # both commands that made these results


def test_resume_accepts_results_made_in_another_checkout(tmp_path: Path, stub: types.ModuleType) -> None:
    # Moving the checkout (or resuming a colleague's results) used to be refused because the
    # shipped model paths were stored absolute; the files' bytes are what the model hash checks.
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse")) == 0
    payload = json.loads((out / "results.json").read_text())
    env = next(iter(payload["meta"]["runs"].values()))["config"]["env"]
    assert env["policy"] == "abc_gym/tasks/sentiment/models/policy"  # stored relative to the package
    for run in payload["meta"]["runs"].values():  # as an older benchmark wrote it, from elsewhere
        for key in ("policy", "reward_model"):
            run["config"]["env"][key] = "/elsewhere/checkout/" + run["config"]["env"][key]
    (out / "results.json").write_text(json.dumps(payload))
    stub.calls.clear()
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--resume")) == 0
    assert [c.reward_mode for c in stub.calls] == ["abc"]


def _stored_run(out: Path, stub: types.ModuleType, edit: Callable[[dict[str, Any]], None], rehash: bool) -> dict[str, Any]:
    """A 2-update sparse run in ``out`` whose stored run configs ``edit`` rewrites, as an older benchmark
    wrote them (``rehash``: with the hash of the edited config, as that benchmark computed it)."""
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse")) == 0
    payload = json.loads((out / "results.json").read_text())
    for run in payload["meta"]["runs"].values():
        edit(run["config"])
        if rehash:
            run["hash"] = bench.config_hash(run["config"])
    (out / "results.json").write_text(json.dumps(payload))
    stub.calls.clear()
    return payload


def test_resume_accepts_results_written_before_a_trainconfig_field_existed(
    tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture
) -> None:
    # compile_decode was added to TrainConfig after results were written; runs stored without it
    # ran at its default (eager decode), so they resume, and a non-default value is still refused.
    out = tmp_path / "run"

    def drop(config: dict[str, Any]) -> None:
        assert config["train"].pop("compile_decode") is False

    payload = _stored_run(out, stub, drop, rehash=False)
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--resume")) == 0
    assert [c.reward_mode for c in stub.calls] == ["abc"]
    stub.calls.clear()
    (out / "results.json").write_text(json.dumps(payload))
    argv = _argv(out, "--n-updates", "2", "--modes", "sparse", "--resume", "--set", "compile_decode=true")
    assert bench.main(argv) == 2
    assert "compile_decode: stored False, now True" in capsys.readouterr().err
    assert stub.calls == []


def test_resume_refuses_runs_stored_before_a_default_changed(
    tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture
) -> None:
    # fused_activation was added off and became auto (None) later: a run stored without the field ran
    # with transformers' Python GELU, so the new default must not resume it silently with the fused one.
    out = tmp_path / "run"

    def drop(config: dict[str, Any]) -> None:
        assert config["train"].pop("fused_activation") is None

    _stored_run(out, stub, drop, rehash=True)
    assert bench.main(_argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--resume")) == 2
    assert "fused_activation: stored False, now None" in capsys.readouterr().err
    assert stub.calls == []
    argv = _argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--resume", "--set", "fused_activation=false")
    assert bench.main(argv) == 0
    assert [(c.reward_mode, c.fused_activation) for c in stub.calls] == [("abc", False)]


def test_resume_refuses_runs_of_other_arithmetic(
    tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture
) -> None:
    # runs stored before agents.config.NUMERICS_VERSION existed (version 1) gave other numbers for the
    # same seed and config: extending them with today's code would mix two arithmetics in one table
    out = tmp_path / "run"

    def version_1(config: dict[str, Any]) -> None:
        assert config.pop("numerics") >= 2
        config["train"]["fused_activation"] = False  # as then: only the version differs

    _stored_run(out, stub, version_1, rehash=True)
    argv = _argv(out, "--n-updates", "2", "--modes", "sparse", "abc", "--resume", "--set", "fused_activation=false")
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert "numerics: stored 1, now 2" in err and "rerun at the stored commit" in err
    assert stub.calls == []


def test_resume_refuses_results_without_run_configs(tmp_path: Path, stub: types.ModuleType,
                                                    capsys: pytest.CaptureFixture) -> None:
    # results.json written before run configs were stored: its settings cannot be checked
    row = dict(sweep="main", task="Sentiment-v0 (8-15 new tokens)", env_id="abc_gym/Sentiment-v0", condition="sparse",
               baseline="sparse", algo="ppo", reward_mode="sparse", beta=0.8, seed=0, update=1, rm_score=1.0,
               gold_score=0.1, kl=0.1, value_loss=1.0, run_wall_s=1.0)
    bench.save_results([row], {"command": "old"}, tmp_path / "run")
    assert bench.main(_argv(tmp_path / "run", "--n-updates", "1", "--modes", "sparse", "--resume")) == 2
    assert "without a stored run config" in capsys.readouterr().err
    assert stub.calls == []


# ----------------------------------------------------------------------------- signals with worker processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...); None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: no psutil)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited (its new parent just has not reaped it)


def _start_and_signal(out: Path, signum: int) -> tuple[subprocess.CompletedProcess, list[int], float]:
    """Start the smoke benchmark with 2 workers, signal it once a run is stored; return result, workers, exit time."""
    cmd = [sys.executable, "-m", "benchmarks.dense_vs_sparse", "--smoke", "--jobs", "2", "--threads-per-job", "1",
           "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "results.json").exists():  # saved after each finished run
            assert proc.poll() is None, f"benchmark ended before a run was stored: {proc.communicate()}"
            assert time.monotonic() < deadline, "no run finished in 90 s"
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "expected 2 worker processes (and multiprocessing's resource tracker)"
        t0 = time.monotonic()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=20)  # the reported fault: it hung here
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), workers, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _assert_gone(pids: list[int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "worker processes outlived the benchmark"


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find worker processes")


@needs_proc
def test_sigint_stops_workers_keeps_runs_and_resume_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result, workers, exit_s = _start_and_signal(out, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    assert exit_s < 20
    _assert_gone(workers)
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1, result.stderr
    m = re.search(r"kept (\d+) finished run\(s\) of 4 in .*; finish with: (.*)$", lines[0])
    assert m, lines[0]
    rows = json.loads((out / "results.json").read_text())["rows"]
    kept = {(r["condition"], r["seed"]) for r in rows}
    assert len(kept) == int(m[1]) >= 1

    # the printed command resumes and completes the benchmark
    resume = shlex.split(m[2])
    assert resume[:3] == ["python", "-m", "benchmarks.dense_vs_sparse"] and "--resume" in resume
    done = subprocess.run([sys.executable, *resume[1:]], cwd=ROOT, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert f"({len(kept)} already stored)" in done.stdout
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len({(r["condition"], r["seed"]) for r in rows}) == 4 and len(rows) == 4 * 2  # 4 modes x 2 updates


@needs_proc
def test_sigterm_stops_workers(tmp_path: Path) -> None:
    result, workers, exit_s = _start_and_signal(tmp_path / "run", signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    assert exit_s < 20
    _assert_gone(workers)
    assert "kept" in result.stderr and "--resume" in result.stderr


@needs_proc
def test_failed_run_in_a_worker_stops_the_benchmark(tmp_path: Path) -> None:
    # one run's error must end the benchmark with the worker's traceback, not hang or leave the other worker running;
    # a model folder without weights passes TrainConfig's checks and fails only when the worker loads it. It has a
    # config.json: without one, transformers 5.0 guesses the model type from the path ("failed_..." -> LED).
    (tmp_path / "empty_model").mkdir()
    (tmp_path / "empty_model" / "config.json").write_text('{"model_type": "gpt2"}')
    cmd = [sys.executable, "-m", "benchmarks.dense_vs_sparse", "--smoke", "--jobs", "2", "--threads-per-job", "1",
           "--set", f"model={tmp_path / 'empty_model'}", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1
    assert "failed in worker" in done.stderr and "empty_model" in done.stderr


def test_bad_setting_is_a_clean_error_before_training(tmp_path: Path, stub: types.ModuleType,
                                                      capsys: pytest.CaptureFixture) -> None:
    # TrainConfig rejects the value when the parent builds the run configs: exit 2 with its message, nothing trained
    assert bench.main(_argv(tmp_path / "run", "--n-updates", "1", "--modes", "sparse", "--set", "minibatch_episodes=1000")) == 2
    assert "minibatch_episodes" in capsys.readouterr().err and stub.calls == []


# ----------------------------------------------------------------------------- issue 21: checked before any work, one writer


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--quick", "--quick-updates", "0"], "--quick-updates 0: must be >= 1"),
        (["--episodes-per-update", "0"], "--episodes-per-update 0: must be >= 1"),
        (["--threads-per-job", "0"], "--threads-per-job 0: must be >= 1"),
        (["--jobs", "0"], "--jobs 0: must be >= 1"),
        (["--jobs", "-1"], "--jobs -1: must be >= 1"),
        (["--n-updates", "0"], "--n-updates 0: must be >= 1"),
        (["--report-update", "0"], "--report-update 0: must be >= 1"),
        (["--n-updates", "5", "--report-update", "6"], r"--report-update 6: the runs have only 5 updates; use 1 <= --report-update <= 5"),
        (["--smooth", "0"], "--smooth 0: must be >= 1"),
        (["--speed-window", "0"], "--speed-window 0: must be >= 1"),
        (["--seeds", "0"], "--seeds 0: must be >= 1"),
        (["--sweep", "length", "--lengths", "0-0"], r"--lengths 0-0: a completion has at least 1 new token; use MIN-MAX with 1 <= MIN <= MAX"),
        (["--set", "lr=abc"], "--set lr='abc': must be a number, got str"),
        (["--set", "lr=nan"], "--set lr='nan': must be a number, got str"),
        (["--set", "lr=NaN"], "--set lr=nan: must be a finite number"),
        (["--set", "vf_coef=Infinity"], "--set vf_coef=inf: must be a finite number"),
        (["--env-id", "abc_gym/Nope-v0"], "--env-id abc_gym/Nope-v0: no such registered env; use one of abc_gym/"),
        (["--betas", "0.5", "1.5", "--sweep", "beta"], r"--beta\(s\) 1.5: must be in \[0, 1\]"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture,
                                        flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main([*flags, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert re.search(f"error: {message}", err), err
    assert stub.calls == [] and not (tmp_path / "run").exists()


def test_default_report_update_follows_short_runs() -> None:
    assert bench.parse_args(["--n-updates", "5"]).report_update == 5
    assert bench.parse_args([]).report_update == 20


def test_unwritable_out_fails_before_any_work(tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture) -> None:
    assert bench.main(_argv(Path("/dev/full/run"), "--n-updates", "1", "--modes", "sparse")) == 2
    assert "error: --out /dev/full/run: /dev/full is not a directory; pick another --out" in capsys.readouterr().err
    assert bench.main(_argv(tmp_path / "out", "--n-updates", "1", "--modes", "sparse", "--log-dir", "/dev/full")) == 2
    assert "error: --log-dir /dev/full: /dev/full is not a directory" in capsys.readouterr().err
    assert stub.calls == []


def test_a_second_benchmark_on_the_same_out_is_refused(tmp_path: Path, stub: types.ModuleType,
                                                       capsys: pytest.CaptureFixture) -> None:
    from agents.run_lock import DirLock

    out = tmp_path / "run"
    out.mkdir()
    with DirLock(out, "--out folder"):  # as a live benchmark holds it (flock: per open file, so also in-process)
        assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse")) == 2
    assert f"error: --out folder {out} is in use by process {os.getpid()}" in capsys.readouterr().err
    assert stub.calls == [] and not (out / "results.json").exists()
    assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse")) == 0  # released with its holder


def test_resume_refuses_another_env_id(tmp_path: Path, stub: types.ModuleType, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse", "--env-id", "abc_gym/SentimentLong-v0")) == 0
    stored = (out / "results.json").read_text()
    stub.calls.clear()
    assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse", "abc", "--resume")) == 2
    err = capsys.readouterr().err
    assert ("--resume refused: the runs stored in" in err and "are on --env-id abc_gym/SentimentLong-v0, this command's "
            "are on abc_gym/Sentiment-v0; resume with --env-id abc_gym/SentimentLong-v0" in err)
    assert stub.calls == [] and (out / "results.json").read_text() == stored


def test_a_no_op_resume_leaves_results_json_as_it_is(tmp_path: Path, stub: types.ModuleType) -> None:
    out = tmp_path / "run"
    assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse")) == 0
    stored = (out / "results.json").read_bytes()
    assert bench.main(_argv(out, "--n-updates", "1", "--modes", "sparse", "--resume")) == 0
    assert (out / "results.json").read_bytes() == stored  # meta.command is still the command that made the runs


def test_sigint_before_any_run_names_no_missing_file(tmp_path: Path, stub: types.ModuleType,
                                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.dense_vs_sparse import cli

    def interrupted(*args, **kwargs):
        raise bench.Interrupted(signal.SIGINT)

    monkeypatch.setattr(cli, "run_specs", interrupted)
    argv = _argv(tmp_path / "run", "--n-updates", "1", "--modes", "sparse")
    assert bench.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted by SIGINT before any run finished: nothing saved; start again with: {bench.cli.PROG} {shlex.join(argv)}"
    assert not (tmp_path / "run" / "results.json").exists()


def test_from_results_of_a_json_list_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert bench.main(["--from-results", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: --from-results {path}: not a results file of this benchmark")

