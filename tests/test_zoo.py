"""RL Zoo (``python -m agents.zoo``): the credit-aware learners trained through rl_zoo3, on the batched env,
from the dense credit; saved models load; ``--optimize`` finishes; the shipped hyperparameter files hold
TrainConfig's defaults. Needs the ``zoo`` extra (``pip install -e ".[zoo]"``)."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("rl_zoo3", reason='rl_zoo3 is not installed: pip install -e ".[zoo]" (the zoo extra)')
yaml = pytest.importorskip("yaml")

from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv  # noqa: E402
from abc_gym.tasks.sentiment import POLICY_PATH  # noqa: E402
from agents import zoo  # noqa: E402
from agents.config import DEFAULTS  # noqa: E402
from agents.registry import REGISTRY, algorithm_kwargs  # noqa: E402

EMBEDDED = ("abc_gym/Sentiment-v0", "abc_gym/Sentiment-MiniLM-v0", "abc_gym/SentimentLong-v0")
ZOO_KEYS = {"n_envs", "n_timesteps", "policy", "policy_kwargs", "env_kwargs"}
# Two rows, completions of 4-6 tokens: one rollout is 2 x (4 to 6) timesteps, so -n 16 is 2 or 3 updates.
TINY = ["--hyperparams", "n_envs:2", "--env-kwargs", "max_new_tokens:6", "min_new_tokens:4"]


@pytest.mark.parametrize("algo", list(REGISTRY))
def test_hyperparameter_files_hold_the_trainconfig_defaults(algo):
    """Each learner's yml has every embedded env and, for each, exactly the keywords ``python -m agents``
    passes with TrainConfig's defaults (batch_size aside: the learner derives it from the env)."""
    path = zoo.hyperparams_path(algo)
    table = yaml.safe_load(path.read_text())
    assert set(table) == set(EMBEDDED)
    expected = algorithm_kwargs(dataclasses.replace(DEFAULTS, algo=algo), None)
    for env_id, params in table.items():
        assert env_id in gym.registry
        learner = {k: v for k, v in params.items() if k not in ZOO_KEYS}
        want = {k: v for k, v in expected.items() if k not in {"seed", "device", "verbose", "batch_size", "policy_kwargs"}}
        assert learner == want, f"{path.name} [{env_id}] differs from TrainConfig's defaults"
        assert eval(params["policy_kwargs"]) == expected["policy_kwargs"]  # rl_zoo3 evaluates the string too
        assert params["policy"] == "TransformerPolicy"
        assert params["env_kwargs"] == {"reward_mode": DEFAULTS.reward_mode, "beta": DEFAULTS.beta}
        assert params["n_envs"] == DEFAULTS.episodes_per_update
        longest = gym.spec(env_id).kwargs["max_new_tokens"]
        assert params["n_timesteps"] == DEFAULTS.n_updates * DEFAULTS.episodes_per_update * longest


@pytest.mark.parametrize("algo", list(REGISTRY))
def test_optimize_sampler_draws_the_learners_own_keywords(algo):
    optuna = pytest.importorskip("optuna")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = zoo.sample_credit_params(trial, 0, 2, {}, algo)
    assert {"learning_rate", "kl_coef"} <= set(params) <= zoo.learner_keywords(algo)
    assert params.get("minibatch_episodes", 1) <= 2


def test_registration_is_undone_after_the_call():
    import rl_zoo3.train
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS
    from stable_baselines3 import PPO as StockPPO

    with zoo.registered():
        assert ALGOS["token_ppo"] is REGISTRY["token_ppo"].load()
        assert ALGOS["ppo"] is REGISTRY["ppo"].load()
        assert rl_zoo3.train.ExperimentManager is zoo.TokenExperimentManager
    assert "token_ppo" not in ALGOS and ALGOS["ppo"] is StockPPO
    assert rl_zoo3.train.ExperimentManager is ExperimentManager


def test_defaults_fill_only_what_the_command_line_leaves_out():
    args = zoo.with_defaults(["--algo", "rloo", "--num-threads=2"])
    assert args == ["--algo", "rloo", "--num-threads=2", "--env", DEFAULTS.env_id]


def _train(monkeypatch, tmp_path, reward_mode: str):
    """``python -m agents.zoo --algo token_ppo`` in this process, two updates; returns the trained model."""
    trained = []
    learn = zoo.TokenExperimentManager.learn

    def keep(self, model):  # the zoo drops its model after saving: keep it for the checks
        trained.append(model)
        return learn(self, model)

    monkeypatch.setattr(zoo.TokenExperimentManager, "learn", keep)
    zoo.main([
        "--algo", "token_ppo", "--env", "abc_gym/Sentiment-v0", "-n", "16", "--seed", "0", "--eval-freq", "-1",
        "-f", str(tmp_path), "--device", "cpu", *TINY, f"reward_mode:{reward_mode!r}",
    ])
    (model,) = trained
    return model


@pytest.mark.parametrize("reward_mode", ["abc", "sparse"])
def test_zoo_trains_a_credit_aware_learner_on_the_batched_env(monkeypatch, tmp_path, reward_mode):
    """Two updates of TokenPPO through the zoo: the batched env with the shipped policy, the reward mode
    from --env-kwargs, the credit written back (non-zero before the last token in abc mode, zero in
    sparse mode), and the saved model loads."""
    model = _train(monkeypatch, tmp_path, reward_mode)
    cls = REGISTRY["token_ppo"].load()
    assert type(model) is cls
    assert type(model.env.unwrapped) is TokenGenerationSB3VecEnv and model.n_envs == 2
    assert model.policy.model_name_or_path == str(POLICY_PATH)  # the shipped policy, named by nobody
    assert len(model.update_metrics) >= 2

    buffer = model.rollout_buffer  # the last rollout (flattened by the update: index with flat_index)
    kl_coef = model.update_metrics[-1]["kl_coef"]
    heads, trained_heads = [], []
    for ep in buffer.episodes:
        credit = ep.token_rewards
        rewards = buffer.rewards[buffer.flat_index(ep.slots, ep.env_idx)].reshape(-1)
        assert math.isclose(credit.sum(), ep.score, rel_tol=1e-5, abs_tol=1e-5)  # R, spread or not
        assert math.isclose(rewards.sum(), ep.score - kl_coef * ep.kl, rel_tol=1e-5, abs_tol=1e-5)
        heads.append(credit[:-1])
        trained_heads.append(rewards[:-1])
    heads, trained_heads = np.concatenate(heads), np.concatenate(trained_heads)
    assert len(heads) > 0
    if reward_mode == "abc":
        assert np.mean(np.abs(heads) > 1e-4) > 0.5, "abc credit is zero before the last token: the sparse reward"
        # what the learner trained on before the last token is the credit (less a KL penalty that is small after two updates)
        np.testing.assert_allclose(trained_heads, heads, atol=0.05)
    else:
        assert np.all(heads == 0.0)

    run = tmp_path / "token_ppo" / "abc_gym-Sentiment-v0_1"
    assert (run / "monitor.csv").is_file()
    loaded = cls.load(run / "abc_gym-Sentiment-v0.zip", device="cpu")
    assert loaded.update_metrics == model.update_metrics
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values()):
        assert np.array_equal(a.cpu().numpy(), b.cpu().numpy()), name


def test_zoo_optimize_with_a_two_trial_budget(tmp_path):
    import pandas as pd

    zoo.main([
        "--algo", "rloo", "-n", "16", "--seed", "0", "-f", str(tmp_path), "--device", "cpu", *TINY,
        "--optimize", "--n-trials", "2", "--n-jobs", "1", "--sampler", "random", "--pruner", "none",
        "--no-optim-plots", "--eval-episodes", "2",
    ])
    (report,) = (tmp_path / "rloo").glob("report_*.csv")
    trials = pd.read_csv(report)
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert np.isfinite(trials["value"]).all()  # an evaluation ran: mean R of the eval episodes
    assert {"params_learning_rate", "params_kl_coef", "params_minibatch_episodes"} <= set(trials.columns)
