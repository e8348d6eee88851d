"""No run lost, none silently corrupted (issue 21): checkpoints, signals, one writer, inputs checked first.

The death tests start the real ``python -m agents`` on the shipped tiny env (2
completions per update) and kill it: SIGKILL at a random point, SIGTERM, a double SIGINT;
each resume must leave every update exactly once in ``metrics.jsonl`` and a model that
loads. The full disk is a patched writer (a small filesystem needs mount rights). The
flag checks run in-process: they must fail before any work, so they are fast.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from agents import checkpoint as ckpt  # noqa: E402
from agents.cli import main  # noqa: E402
from agents.config import TrainConfig  # noqa: E402
from agents.run_lock import DirLock  # noqa: E402
from agents.token_ppo import TokenPPO  # noqa: E402
from agents.training import build_model, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(episodes_per_update=2, minibatch_episodes=2, progress=False, quiet=True)
SMALL_FLAGS = ["--episodes-per-update", "2", "--minibatch-episodes", "2", "--no-progress", "--quiet"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _updates(run: Path) -> list[int]:
    return [json.loads(line)["update"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _csv_rows(run: Path) -> int:
    return len((run / "progress.csv").read_text().splitlines()) - 1  # less the header


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """These tests send real SIGINTs, as a terminal's Ctrl-C does. A runner started in the
    background (``nohup``, ``cmd &`` without job control) ignores SIGINT, and a run
    deliberately keeps an ignored SIGINT ignored (:class:`agents.stopping`): give the tests
    Python's own Ctrl-C handler, as a terminal session has, and put the runner's back after."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _default_sigint() -> None:  # in the child before exec: Python then installs its Ctrl-C handler
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agents", *args], cwd=ROOT, env=ENV, preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"agents.training ended (rc {proc.returncode}) before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.01)


def _lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ----------------------------------------------------------------------------- deaths of a real process


def test_sigterm_double_sigint_sigkill_then_resume_keeps_each_update_once(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    run = tmp_path / "r"
    why = f"(random seed {seed})"

    # 1. SIGTERM (a scheduler, a preempted machine): stop at the next step, save, exit 143
    p = _start("--n-updates", "40", "--checkpoint-every", "2", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r")
    _wait_for(p, lambda: _lines(run) >= rng.randint(1, 3), "the first updates")
    time.sleep(rng.uniform(0.0, 0.3))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Traceback" not in err and f"interrupted by SIGTERM after {_lines(run)} updates: model saved to" in err
    assert ckpt.checkpoint_updates(run / "model.zip") == _lines(run) == _csv_rows(run), why

    # 2. resumed; a second --resume of the live run is refused naming it; a double Ctrl-C 50 ms apart still saves
    done = _lines(run)
    p = _start("--resume", str(run))
    _wait_for(p, lambda: (run / ".lock").read_text().strip() == str(p.pid), "the resumed run's lock")
    with pytest.raises(SystemExit, match=rf"error: run directory {run} is in use by process {p.pid}"):
        main(["--resume", str(run)])
    _wait_for(p, lambda: _lines(run) > done, "a new update")
    time.sleep(rng.uniform(0.0, 0.3))
    p.send_signal(signal.SIGINT)
    time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGINT after" in err and "model saved to" in err
    assert ckpt.checkpoint_updates(run / "model.zip") == _lines(run), why
    assert _updates(run) == list(range(1, _lines(run) + 1)), why

    # 3. SIGKILL at a random point (perhaps mid-save): the last whole checkpoint survives
    done = _lines(run)
    p = _start("--resume", str(run))
    kill_after = done + rng.randint(1, 4)
    _wait_for(p, lambda: _lines(run) >= kill_after, f"{kill_after} updates")
    time.sleep(rng.uniform(0.0, 0.3))
    p.kill()
    p.communicate()
    kept = ckpt.checkpoint_updates(run / "model.zip")  # a whole checkpoint, not half of one
    assert done <= kept <= _lines(run), why

    # 4. resume to the end (in-process): each update exactly once, and the model loads with them all
    target = max(_lines(run), kept) + 2
    main(["--resume", str(run), "--n-updates", str(target)])
    assert _updates(run) == list(range(1, target + 1)) and _csv_rows(run) == target, why
    assert not list(run.glob(".model*")), why  # the killed save's temporary files are gone
    model = TokenPPO.load(run / "model.zip", device="cpu")
    assert [m["update"] for m in model.update_metrics] == list(range(1, target + 1))
    assert (run / "model_hf" / "config.json").is_file()


def test_sigint_before_the_first_update_names_no_removed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    from agents import training as train_module

    real = train_module.build_model

    def interrupted_while_building(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, while the model loads
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "build_model", interrupted_while_building)
    with pytest.raises(SystemExit) as exc:
        main(["--n-updates", "5", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert f"interrupted by SIGINT before the first update: nothing saved; the run directory {tmp_path / 'r'} was removed" in err
    assert "metrics in" not in err and not (tmp_path / "r").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # train() put Python's handler back


def test_an_ignored_sigint_stays_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started under ``nohup`` (SIGINT ignored) is not stopped by SIGINT: it trains to the end."""
    from agents import training as train_module

    real = train_module.build_model

    def interrupted_while_building(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "build_model", interrupted_while_building)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the autouse fixture restores the runner's handler
    main(["--n-updates", "2", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert _updates(tmp_path / "r") == [1, 2]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


# ----------------------------------------------------------------------------- a full disk (patched writer)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(TrainConfig(n_updates=1, **SMALL))
    path = tmp_path / "model.zip"
    ckpt.save_checkpoint(model, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    hf_before = (tmp_path / "model_hf" / "model.safetensors").read_bytes()

    def full_disk(self, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device", str(f.name))

    monkeypatch.setattr(type(model), "save", full_disk)
    with pytest.raises(ckpt.CheckpointError) as exc:
        ckpt.save_checkpoint(model, path)
    message = str(exc.value)
    assert "\n" not in message and "the disk is full" in message and "the previous checkpoint (0 updates) is intact" in message
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert (tmp_path / "model_hf" / "model.safetensors").read_bytes() == hf_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip", "model_hf"]  # no temporary file left


def test_disk_full_mid_run_is_one_line_and_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    real = ckpt.save_checkpoint
    calls = []

    def second_save_fails(model, path, hf=True):
        calls.append(path)
        if len(calls) == 2:
            raise ckpt.CheckpointError(errno.ENOSPC, ckpt._save_failure(Path(path), OSError(errno.ENOSPC, "x"), 4))
        return real(model, path, hf)

    monkeypatch.setattr(ckpt, "save_checkpoint", second_save_fails)
    with pytest.raises(SystemExit) as exc:
        main(["--n-updates", "6", "--checkpoint-every", "2", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert str(exc.value.code).startswith("error: could not save the checkpoint of update 4") and "\n" not in str(exc.value.code)
    assert "the previous checkpoint (2 updates) is intact" in str(exc.value.code)
    run = tmp_path / "r"
    assert ckpt.checkpoint_updates(run / "model.zip") == 2
    monkeypatch.setattr(ckpt, "save_checkpoint", real)
    main(["--resume", str(run), "--n-updates", "5"])
    assert _updates(run) == [1, 2, 3, 4, 5] and _csv_rows(run) == 5
    assert "updates 3-4 are cut and redone" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one writer per directory


def test_a_locked_run_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "r"
    train(TrainConfig(n_updates=1, log_dir=str(tmp_path), run_name="r", **SMALL))
    before = (run / "metrics.jsonl").read_text()
    with DirLock(run, "run directory"):  # as another live process would hold it (flock: per open file)
        with pytest.raises(SystemExit, match=rf"run directory {run} is in use by process {os.getpid()}.*kill {os.getpid()}"):
            main(["--resume", str(run), "--n-updates", "2"])
    assert (run / "metrics.jsonl").read_text() == before
    main(["--resume", str(run), "--n-updates", "2"])  # released: the lock dies with its holder
    assert _updates(run) == [1, 2]


# ----------------------------------------------------------------------------- agents.training: inputs checked first


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "inf"], "error: --lr inf: must be a finite number"),
        (["--vf-coef", "inf"], "error: --vf-coef inf: must be a finite number"),
        (["--kl-coef", "inf"], "error: --kl-coef inf: must be a finite number"),
        (["--lr", "nan"], "error: --lr nan: must be a finite number"),
        (["--kl-target=-inf"], "error: --kl-target -inf: must be a finite number"),
        (["--run-name", "../escape"], "error: --run-name '../escape': must be a plain directory name inside --log-dir"),
        (["--run-name", "/abs/path"], "error: --run-name '/abs/path': must be a plain directory name"),
        (["--run-name", "a/b/c"], "error: --run-name 'a/b/c': must be a plain directory name"),
        (["--env", "abc_gym/Nope-v0"], "error: --env abc_gym/Nope-v0: no such registered env; use one of abc_gym/"),
        (["--env-kwarg", "min_new_tokens=48"], "error: --env-kwarg min_new_tokens=48: min_new_tokens must be an int in"),
        (["--env-kwarg", "beta=0.5"], r"error: --env-kwarg beta=...: use --beta"),
        (["--env-kwarg", "bogus=1"], "error: --env-kwarg bogus=1: .*bogus"),
        (["--checkpoint-every", "-1"], "error: --checkpoint-every -1: must be >= 0"),
        (["--device", "meta"], "error: --device meta: agents train on the CPU or CUDA; use auto, cpu, cuda or cuda:N"),
        (["--model", "/"], "error: --model /: no config.json in that directory, so it is not a Hugging Face model"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path: Path, flags: list[str], message: str) -> None:
    logs = tmp_path / "logs"
    with pytest.raises(SystemExit, match=message) as exc:
        main([*flags, *SMALL_FLAGS, "--log-dir", str(logs)])
    assert "\n" not in str(exc.value.code)
    assert not logs.exists()


def test_log_dir_that_is_a_file_or_full_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="error: --log-dir /dev/full: /dev/full is not a directory; pick another --log-dir"):
        main([*SMALL_FLAGS, "--log-dir", "/dev/full"])
    monkeypatch.setattr("shutil.disk_usage", lambda _: type("Usage", (), {"free": 1_000_000})())
    with pytest.raises(SystemExit, match=r"--log-dir .*: 1.0 MB free on its filesystem, a checkpoint .* needs about \d"):
        main([*SMALL_FLAGS, "--log-dir", str(tmp_path / "logs")])
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_log_dir_fails_before_any_work(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SystemExit, match=r"error: --log-dir .*: cannot write in .*pick another --log-dir"):
            main([*SMALL_FLAGS, "--log-dir", str(tmp_path / "logs")])
    finally:
        tmp_path.chmod(0o700)


@pytest.fixture(scope="module")
def one_update_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    train(TrainConfig(n_updates=1, log_dir=str(logs), run_name="r", env_kwargs={"min_new_tokens": 10}, **SMALL))
    return logs / "r"


def test_env_kwarg_reaches_the_env_and_is_part_of_the_resumed_config(one_update_run: Path) -> None:
    saved = json.loads((one_update_run / "config.json").read_text())
    assert saved["env_kwargs"] == {"min_new_tokens": 10}
    model = build_model(TrainConfig(**{**saved, "log_dir": None}))
    assert model.env.get_attr("min_new_tokens")[0] == 10
    with pytest.raises(SystemExit, match=r"--env-kwarg \{'min_new_tokens': 12\} differs from the run's"):
        main(["--resume", str(one_update_run), "--n-updates", "2", "--env-kwarg", "min_new_tokens=12"])


@pytest.mark.parametrize("flags", [["--quiet"], ["--threads", "2"], ["--no-progress"], ["--device", "cpu"],
                                   ["--checkpoint-every", "1"]])
def test_flags_that_cannot_change_results_are_allowed_on_resume(one_update_run: Path, flags: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import training as train_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # `auto` is then `cpu`
    ran = []
    monkeypatch.setattr(train_module, "train", lambda cfg, resume: ran.append((cfg, resume)))
    main(["--resume", str(one_update_run), "--n-updates", "2", *flags])
    assert len(ran) == 1 and ran[0][0].device == "auto"  # the run keeps its own device name


def test_resume_without_or_with_a_corrupt_model_zip_is_one_line(one_update_run: Path, tmp_path: Path) -> None:
    for name, content in (("none", None), ("corrupt", (one_update_run / "model.zip").read_bytes()[:50_000])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text((one_update_run / "config.json").read_text())
        if content is not None:
            (run / "model.zip").write_bytes(content)
        with pytest.raises(SystemExit) as exc:
            main(["--resume", str(run), "--n-updates", "3"])
        text = str(exc.value.code)
        assert "\n" not in text and "Traceback" not in text
        if content is None:
            assert text.startswith(f"error: --resume {run}: no model.zip there: the run stopped before its first checkpoint")
        else:
            assert "model.zip is not a readable checkpoint (" in text and "start the run afresh" in text


def test_disk_full_while_writing_metrics_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import training as train_module

    real_dumps = json.dumps

    def dumps(obj, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("update") == 3:  # the third update's metrics.jsonl line
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "metrics.jsonl"))
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(train_module, "json", type("json", (), {"dumps": staticmethod(dumps), "loads": json.loads}))
    with pytest.raises(SystemExit) as exc:
        main(["--n-updates", "4", "--checkpoint-every", "2", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert exc.value.code == (f"error: could not write {tmp_path / 'r' / 'metrics.jsonl'}: No space left on device; "
                              "the last checkpoint of the run is intact: free space, then --resume the run")
    assert ckpt.checkpoint_updates(tmp_path / "r" / "model.zip") == 2


def test_signals_during_a_save_wait_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    real = ckpt.save_checkpoint

    def save_under_fire(model, path, hf=True):
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):  # real signals, in the middle of the save
            os.kill(os.getpid(), signum)
        return real(model, path, hf)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_under_fire)
    with pytest.raises(SystemExit) as exc:
        main(["--n-updates", "6", "--checkpoint-every", "2", *SMALL_FLAGS, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert exc.value.code == 130
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("SIGINT: stopping after the current step, then saving")
    assert err[1:3] == ["SIGINT: saving the checkpoint, please wait", "SIGTERM: saving the checkpoint, please wait"]
    assert err[3].startswith("interrupted by SIGINT after 2 updates: model saved to")
    run = tmp_path / "r"
    assert ckpt.checkpoint_updates(run / "model.zip") == 2 == _lines(run)
    assert TokenPPO.load(run / "model.zip", device="cpu").update_metrics[-1]["update"] == 2


def test_a_run_saved_before_checkpoints_had_their_own_meta_resumes(one_update_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "old"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "progress.csv"):
        (run / name).write_bytes((one_update_run / name).read_bytes())
    TokenPPO.load(one_update_run / "model.zip", device="cpu").save(run / "model.zip")  # SB3's zip, no meta, no RNG states
    assert ckpt.checkpoint_updates(run / "model.zip") == 1 and ckpt.load_rng_state(run / "model.zip") is None
    main(["--resume", str(run), "--n-updates", "2"])
    assert _updates(run) == [1, 2] and _csv_rows(run) == 2


def test_resuming_a_checkpoint_of_other_arithmetic_warns(one_update_run: Path, tmp_path: Path) -> None:
    """A checkpoint written before agents.config.NUMERICS_VERSION changed (or before it was recorded: version 1)
    resumes, with a warning that the resumed updates are not those its own code would have made."""
    import zipfile

    from agents.config import NUMERICS_VERSION

    assert ckpt.checkpoint_numerics(one_update_run / "model.zip") == NUMERICS_VERSION
    run = tmp_path / "old_numerics"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "progress.csv"):
        (run / name).write_bytes((one_update_run / name).read_bytes())
    with zipfile.ZipFile(one_update_run / "model.zip") as src, zipfile.ZipFile(run / "model.zip", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == ckpt.META_MEMBER:
                meta = json.loads(data)
                del meta["numerics"]  # as written before the version was recorded
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    assert ckpt.checkpoint_numerics(run / "model.zip") == 1
    with pytest.warns(UserWarning, match=f"arithmetic is version 1, this code's is {NUMERICS_VERSION}"):
        main(["--resume", str(run), "--n-updates", "2"])
    assert _updates(run) == [1, 2] and ckpt.checkpoint_numerics(run / "model.zip") == NUMERICS_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same version: no warning
        main(["--resume", str(run), "--n-updates", "3"])
