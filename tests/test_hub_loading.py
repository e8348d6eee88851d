"""The hub-id loading path (IMDb-GPT2-v0) on tiny local models of the same architectures."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from abc_gym.hub import load_pretrained
from abc_gym.infos import episode_token_rewards
from tests.conftest import tiny_gpt2_config


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, policy_tokenizer):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config(policy_tokenizer)).save_pretrained(root / "policy")
    policy_tokenizer.save_pretrained(root / "policy")
    rm = GPT2ForSequenceClassification(
        tiny_gpt2_config(policy_tokenizer, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    )
    rm.config.pad_token_id = None  # like many hub reward models: the adapter must supply one
    rm.save_pretrained(root / "rm")
    policy_tokenizer.save_pretrained(root / "rm")
    return root


def test_imdb_env_loads_local_copies(tiny_dirs):
    env = gym.make(
        "abc_gym/IMDb-GPT2-v0",
        policy=str(tiny_dirs / "policy"),
        reward_model=str(tiny_dirs / "rm"),
        prompts=["this movie was", "I watched it"],
        device="cpu",
    )
    assert env.unwrapped.reward_model.model.config.pad_token_id is not None
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, r, done, _, info = env.step(int(np.random.default_rng(0).integers(100, 200)))
    assert np.isclose(r, info["score"]) and np.count_nonzero(episode_token_rewards(info)) == info["num_tokens"]


def test_imdb_prompts_offline_is_a_clear_error(tiny_dirs):
    with pytest.raises((OSError, ImportError), match="prompts="):
        gym.make("abc_gym/IMDb-GPT2-v0", policy=str(tiny_dirs / "policy"), reward_model=str(tiny_dirs / "rm"), device="cpu")


def test_missing_hub_id_names_the_fix():
    from transformers import AutoTokenizer

    with pytest.raises(OSError, match="pass that folder instead"):
        load_pretrained(AutoTokenizer, "nobody/no-such-model")
