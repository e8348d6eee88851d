"""Faults of the agents' training entry points (issue 9): resume, run directories, Ctrl-C, config errors."""

from __future__ import annotations

import functools
import json
import time

import pytest
import torch

torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic

import agents.training as train_module  # noqa: E402
from agents.cli import main  # noqa: E402
from agents.config import TrainConfig  # noqa: E402
from agents.env_util import make_token_vec_env  # noqa: E402
from agents.token_ppo import TokenPPO  # noqa: E402
from agents.training import make_run_dir, train  # noqa: E402

ENV = "abc_gym/Sentiment-v0"
SMALL = dict(episodes_per_update=2, minibatch_episodes=2, progress=False, quiet=True)
SMALL_FLAGS = ["--episodes-per-update", "2", "--minibatch-episodes", "2", "--no-progress", "--quiet"]


def _updates(run_dir) -> list[int]:
    return [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- F1: a saved model trains on


def test_a_saved_model_trains_further_after_load(tmp_path) -> None:
    train(TrainConfig(n_updates=2, log_dir=str(tmp_path), run_name="r", **SMALL))
    model = TokenPPO.load(tmp_path / "r" / "model.zip", env=make_token_vec_env(ENV, num_envs=2, seed=1), device="cpu")
    assert model.max_updates is None  # the finished run's horizon is not saved with the model
    model.learn(60)
    assert len(model.update_metrics) > 2 and model.update_metrics[2]["update"] == 3


def test_resume_continues_the_run_in_its_directory(tmp_path) -> None:
    main(["--n-updates", "2", "--log-dir", str(tmp_path), "--run-name", "r", *SMALL_FLAGS])
    run = tmp_path / "r"
    main(["--resume", str(run), "--n-updates", "3"])
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    assert _updates(run) == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["n_updates"] == 3
    assert len((run / "progress.csv").read_text().splitlines()) == 1 + 3  # header + one row per update
    with pytest.raises(SystemExit, match="--gamma 0.9 differs from the run's 1.0"):
        main(["--resume", str(run), "--n-updates", "4", "--gamma", "0.9"])
    with pytest.raises(SystemExit, match="already has 3 updates; pass --n-updates > 3"):
        main(["--resume", str(run)])
    assert _updates(run) == [1, 2, 3]


# ----------------------------------------------------------------------------- F2: parallel runs never collide


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "strftime", lambda *_: "20260101-000000")
    cfg = TrainConfig(n_updates=1, log_dir=str(tmp_path), **SMALL)
    assert make_run_dir(cfg) != make_run_dir(cfg)
    train(cfg)
    train(cfg)
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == [f"token_ppo_abc_seed0_20260101-000000{s}" for s in ("", "-1", "-2", "-3")]
    assert [_updates(tmp_path / d) for d in dirs[2:]] == [[1], [1]]


# ----------------------------------------------------------------------------- F3: Ctrl-C saves and exits 130


def _interrupt_after(n: int):
    def hook(m: dict) -> None:
        if m["update"] >= n:
            raise KeyboardInterrupt

    return hook


def test_keyboard_interrupt_saves_model_and_metrics(tmp_path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(n_updates=5, log_dir=str(tmp_path), run_name="r", **SMALL), on_update=_interrupt_after(2))
    run = tmp_path / "r"
    assert (run / "model.zip").is_file() and _updates(run) == [1, 2]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted by SIGINT after 2 updates: model saved to {run / 'model.zip'}, metrics in {run / 'metrics.jsonl'}"]
    assert TokenPPO.load(run / "model.zip", device="cpu").update_metrics[-1]["update"] == 2


def test_cli_exits_130_on_keyboard_interrupt(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "train", functools.partial(train, on_update=_interrupt_after(1)))
    with pytest.raises(SystemExit) as exc:
        main(["--n-updates", "3", "--log-dir", str(tmp_path), "--run-name", "r", *SMALL_FLAGS])
    assert exc.value.code == 130
    assert (tmp_path / "r" / "model.zip").is_file() and _updates(tmp_path / "r") == [1]


# ----------------------------------------------------------------------------- F4: clear config errors


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_epochs", 0, "--n-epochs 0: must be >= 1"),
        ("model", "/nonexistent", "--model /nonexistent: the path does not exist"),
        ("seed", -1, r"--seed -1: must be in \[0, 4294967295\]"),
        ("gamma", 2.0, r"--gamma 2.0: must be in \[0.0, 1.0\]"),
        ("clip_range", -1.0, "--clip-range -1.0: must be > 0.0"),
        ("episodes_per_update", 0, "--episodes-per-update 0: must be >= 1"),
    ],
)
def test_bad_values_name_flag_value_and_range(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_cuda_without_cuda_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available.*--device cpu or --device auto"):
        TrainConfig(device="cuda").validate()
    TrainConfig(device="auto").validate()


def test_n_epochs_0_is_refused_by_the_class() -> None:
    with pytest.raises(ValueError, match="n_epochs must be >= 1"):
        TokenPPO("TransformerPolicy", make_token_vec_env(ENV, num_envs=2), n_epochs=0)


def test_failed_cli_runs_leave_no_run_directory(tmp_path) -> None:
    logs = tmp_path / "runs"
    for flags in (["--n-epochs", "0"], ["--model", "/nonexistent"], ["--seed", "-1"], ["--gamma", "2"], ["--clip-range", "-1"]):
        with pytest.raises(SystemExit, match="error: " + flags[0]):
            main([*flags, "--log-dir", str(logs), *SMALL_FLAGS])
    assert not logs.exists()
    # valid config, but the model directory holds no model: the run fails before its first update
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json in that directory"):  # refused before any work
        train(TrainConfig(model=str(tmp_path / "empty"), log_dir=str(logs), **SMALL))
    assert not logs.exists()
