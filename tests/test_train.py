"""Tests of the training entry points: public API, TrainConfig / CLI, horizon and schedules, logging, device."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic

import agents  # noqa: E402
from agents import compat  # noqa: E402
from agents.cli import _parser, main  # noqa: E402
from agents.config import DEFAULTS, TrainConfig  # noqa: E402
from agents.registry import REGISTRY  # noqa: E402
from agents.training import build_model, train  # noqa: E402

ENV = "abc_gym/Sentiment-v0"
SMALL = dict(episodes_per_update=2, minibatch_episodes=2, progress=False, quiet=True)


# ----------------------------------------------------------------------------- public API


def test_import_agents_is_light() -> None:
    code = "import sys, agents; print(sorted(m for m in ('stable_baselines3', 'sb3_contrib', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api_names() -> None:
    from agents import A2C, PPO, TRPO, MaskablePPO, TokenPPO, TransformerActorCriticPolicy
    from agents import TrainConfig as TC
    from agents import train as train_fn
    from agents.algorithms import ALGORITHMS, make_token_vec_env  # the old module still re-exports

    assert TC is TrainConfig and train_fn is train  # a plain function, not a callable module
    assert list(inspect.signature(train_fn).parameters) == ["config", "on_update", "resume"]
    assert issubclass(TokenPPO, PPO) and ALGORITHMS["trpo"] is TRPO and ALGORITHMS["a2c"] is A2C
    assert MaskablePPO.__module__ == "agents.maskable_ppo" and TransformerActorCriticPolicy.__module__ == "agents.policy"
    assert callable(make_token_vec_env)
    assert {"ppo", "a2c", "trpo", "maskable_ppo", "token_ppo", "rloo"} <= set(REGISTRY)
    assert {name: spec.load().__name__ for name, spec in REGISTRY.items()}["token_ppo"] == "TokenPPO"
    with pytest.raises(AttributeError):
        agents.NoSuchThing  # noqa: B018


def test_class_defaults_come_from_trainconfig() -> None:
    from agents import A2C, PPO, TRPO, MaskablePPO

    for cls in (PPO, A2C, TRPO, MaskablePPO):
        params = inspect.signature(cls.__init__).parameters
        assert params["learning_rate"].default == DEFAULTS.lr, cls
        assert params["gamma"].default == DEFAULTS.gamma and params["kl_coef"].default == DEFAULTS.kl_coef
        assert params["device"].default == DEFAULTS.device == "auto"
    assert inspect.signature(PPO.__init__).parameters["n_epochs"].default == DEFAULTS.n_epochs
    assert inspect.signature(PPO.__init__).parameters["batch_size"].default is None  # minibatch_episodes' worth
    assert inspect.signature(MaskablePPO.__init__).parameters["top_k"].default == DEFAULTS.top_k


def test_every_field_has_a_help_line_and_a_flag() -> None:
    text = _parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert f.metadata["help"].split(" (")[0] in " ".join(text.split()), f.name
    for flag in ("--env", "--episodes-per-update", "--no-adaptive-kl", "--no-progress", "--log-dir", "--resume", "--n-updates"):
        assert flag in text
    args = vars(_parser().parse_args(["--env", ENV, "--log-dir", "None", "--clip-range-vf", "none", "--no-adaptive-kl", "--lr", "3e-4"]))
    assert args == {"resume": None, "env_id": ENV, "log_dir": None, "clip_range_vf": None, "adaptive_kl": False, "lr": 3e-4}


def test_help_runs_from_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "agents", "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m agents") and "completions per rollout" in out


# ----------------------------------------------------------------------------- B1: schedules span --n-updates


def test_linear_lr_schedule_reaches_its_final_value_at_the_last_update() -> None:
    metrics = train(TrainConfig(lr=1e-3, lr_final=1e-4, n_updates=3, log_dir=None, **SMALL))
    assert [m["learning_rate"] for m in metrics] == pytest.approx([1e-3, 5.5e-4, 1e-4])


def test_learn_n_updates_is_the_horizon_of_every_schedule() -> None:
    model = build_model(TrainConfig(algo="ppo", log_dir=None, **SMALL))
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    seen: list[float] = []
    model.on_update = lambda m: seen.append(compat.progress_remaining(model))
    model.learn(n_updates=3)
    assert seen == pytest.approx([1.0, 0.5, 0.0]) and len(model.update_metrics) == 3


# ----------------------------------------------------------------------------- B2: one log row per update


def test_progress_csv_has_one_row_per_update(tmp_path) -> None:
    train(TrainConfig(algo="ppo", n_updates=3, log_dir=str(tmp_path), run_name="r", **SMALL))
    with open(tmp_path / "r" / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert [float(r["rlhf/episodes"]) for r in rows] == [2.0, 2.0, 2.0]  # each row holds its update's numbers
    assert all(r["train/value_loss"] and r["time/total_timesteps"] for r in rows)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["update"] for x in lines] == [1, 2, 3]


# ----------------------------------------------------------------------------- B5: device "auto"


def test_device_auto_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import PPO
    from agents.env_util import make_token_vec_env, resolve_device

    assert TrainConfig().device == "auto"
    TrainConfig(device="auto").validate()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    model = PPO("TransformerPolicy", make_token_vec_env(ENV, num_envs=2, device="auto"), device="auto")
    assert model.device.type == expected and next(model.policy.parameters()).device.type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_cli_runs_a_short_training(tmp_path, capsys: pytest.CaptureFixture) -> None:
    main(["--algo", "token_ppo", "--n-updates", "2", "--episodes-per-update", "2", "--minibatch-episodes", "2",
          "--log-dir", str(tmp_path), "--run-name", "cli", "--no-progress"])
    assert "2 updates" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model.zip").is_file() and (tmp_path / "cli" / "model_hf").is_dir()
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["n_updates"] == 2 and saved["device"] == "auto"


def test_train_restores_the_callers_threads_and_progress_bars() -> None:
    """train() sets TrainConfig.threads and silences loading bars for the run only (issue 17: no side effects)."""
    import transformers

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    transformers.utils.logging.enable_progress_bar()
    try:
        train(TrainConfig(n_updates=1, log_dir=None, seed=0, device="cpu", threads=1, **SMALL))
        assert torch.get_num_threads() == 3
        assert transformers.utils.logging.is_progress_bar_enabled()
    finally:
        torch.set_num_threads(before)
        transformers.utils.logging.disable_progress_bar()
