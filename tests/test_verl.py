"""verl adapter (abc_gym.integrations.verl): its token rewards are the env's for the same episodes.

Needs verl (0.9), installed in its own venv (docs/clients.md); skipped without it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl", reason="verl is not installed: pip install 'abc_gym[verl]' in its own venv (docs/clients.md)")

from transformers import AutoTokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import compute_gae_advantage_return  # noqa: E402
from verl.workers.reward_manager import get_reward_manager_cls  # noqa: E402
from verl.workers.reward_manager.abstract import AbstractRewardManager  # noqa: E402

import abc_gym  # noqa: E402
from abc_gym.integrations.verl import ABCRewardManager  # noqa: E402
from abc_gym.reward_model import RewardModel  # noqa: E402
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH  # noqa: E402
from abc_gym.tasks.sentiment.gold import gold_char_credit  # noqa: E402

TOL = 1e-5


def _load_episodes_helper():
    """tests/episodes.py, loaded by its path: verl's wheel installs a top-level ``tests`` package, which
    shadows this folder's, so ``from tests.episodes import ...`` fails where verl is installed."""
    name = "abc_gym_tests_episodes"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("episodes.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_episodes = _load_episodes_helper()
collect_episodes, verl_batch = _episodes.collect_episodes, _episodes.verl_batch


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(POLICY_PATH)


@pytest.fixture(scope="module")
def reward_model(tokenizer):
    return RewardModel.from_pretrained(REWARD_MODEL_PATH, tokenizer, device="cpu")


def rollout_batch(episodes, tokenizer) -> DataProto:
    """A DataProto as verl's trainer holds it after a rollout (left-padded prompts, right-padded responses)."""
    tensors = verl_batch(episodes, tokenizer.pad_token_id, extra_response=3)
    non_tensors = {
        "data_source": np.array(["abc_gym/Sentiment-v0"] * len(episodes), dtype=object),
        "uid": np.array([str(i) for i in range(len(episodes))], dtype=object),
    }
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def test_the_manager_is_in_verls_registry():
    assert get_reward_manager_cls("abc_gym") is ABCRewardManager
    assert issubclass(ABCRewardManager, AbstractRewardManager)


@pytest.mark.parametrize("mode", abc_gym.reward_modes())
def test_verl_token_rewards_equal_the_envs(mode, reward_model, tokenizer):
    episodes = collect_episodes(mode, 8, seed=4)
    data = rollout_batch(episodes, tokenizer)
    gold = gold_char_credit if abc_gym.credit_scheme(mode).needs_gold_credit else None
    manager = get_reward_manager_cls("abc_gym")(
        tokenizer, num_examine=1, compute_score=None, reward_model=reward_model, reward_mode=mode, gold_credit=gold
    )
    out = manager(data, return_dict=True)
    rewards = out["reward_tensor"]
    assert rewards.shape == data.batch["responses"].shape and rewards.dtype == torch.float32
    assert torch.equal(manager(data), rewards)  # return_dict=False: the tensor alone
    scores = out["reward_extra_info"]["score"]
    for i, e in enumerate(episodes):
        t = len(e.completion_ids)
        np.testing.assert_allclose(rewards[i, :t].numpy(), e.token_rewards, rtol=0, atol=TOL)
        assert not bool(rewards[i, t:].any())  # nothing past the response
        assert scores[i] == pytest.approx(e.score, abs=TOL)
    if mode == "abc":  # dense: the last token does not hold all of R
        lengths = data.batch["response_mask"].sum(-1)
        last = rewards[torch.arange(len(episodes)), lengths - 1]
        assert bool((last - torch.tensor(scores)).abs().gt(1e-3).all())
        assert bool((rewards[:, 0] != 0).all())


def test_verl_gae_reads_the_credit(reward_model, tokenizer):
    """verl's own GAE on the manager's tensor: with gamma = lam = 1 and zero values, each return at t=0 is R."""
    episodes = collect_episodes("abc", 4, seed=5)
    data = rollout_batch(episodes, tokenizer)
    manager = ABCRewardManager(tokenizer, reward_model=reward_model)
    rewards = manager(data)
    mask = data.batch["response_mask"]
    _, returns = compute_gae_advantage_return(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns[:, 0], torch.tensor([e.score for e in episodes]), rtol=0, atol=TOL)


def test_the_manager_refuses_what_it_cannot_serve(reward_model, tokenizer):
    with pytest.raises(TypeError, match="needs reward_model="):
        ABCRewardManager(tokenizer)
    with pytest.raises(ValueError, match="needs gold_credit="):
        ABCRewardManager(tokenizer, reward_model=reward_model, reward_mode="oracle")
    with pytest.raises(ValueError, match="unknown reward_mode"):
        ABCRewardManager(tokenizer, reward_model=reward_model, reward_mode="dense")
    manager = ABCRewardManager(tokenizer, reward_model=reward_model)
    data = rollout_batch(collect_episodes("abc", 2, seed=6), tokenizer)
    with pytest.raises(KeyError, match="lacks \\['prompts'\\]"):
        manager(DataProto.from_dict(tensors={k: v for k, v in data.batch.items() if k != "prompts"}))
