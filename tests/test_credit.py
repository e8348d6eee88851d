"""Credit functions: hand examples and hypothesis properties (sum = R, >= 0 weights, masks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from abc_gym.credit import REWARD_MODES, abc_credit, sparse_credit, token_rewards, uniform_credit


def test_hand_example_abc():
    # prompt 2 tokens, completion 3 tokens, 1 pad; attention also leaks onto the prompt (dropped).
    mask = torch.tensor([[0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    attn = torch.tensor([[0.4, 0.1, 0.1, 0.2, 0.2, 0.0]])
    r = abc_credit(torch.tensor([2.0]), attn, mask, beta=0.8)
    a = np.array([0.2, 0.4, 0.4])  # renormalised over the completion
    expected = 0.8 * a * 2.0 + 0.2 * 2.0 * np.array([0, 0, 1])
    np.testing.assert_allclose(r[0, 2:5].numpy(), expected, atol=1e-12)
    assert r[0, [0, 1, 5]].abs().sum() == 0


def test_hand_example_sparse_uniform():
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    np.testing.assert_allclose(sparse_credit(torch.tensor([-3.0]), mask)[0].numpy(), [0, 0, 0, 0, -3.0, 0, 0])
    np.testing.assert_allclose(uniform_credit(torch.tensor([4.0]), mask)[0].numpy(), [0, 1, 1, 1, 1, 0, 0])


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    length = draw(st.integers(2, 12))
    rows_mask, rows_attn, rows_gold = [], [], []
    for _ in range(b):
        plen = draw(st.integers(0, length - 1))
        clen = draw(st.integers(1, length - plen))
        m = [0] * plen + [1] * clen + [0] * (length - plen - clen)
        rows_mask.append(m)
        w = st.floats(1e-3, 10.0, allow_nan=False)
        rows_attn.append([draw(w) for _ in range(length)])
        rows_gold.append([draw(w) for _ in range(length)])
    score = [draw(st.floats(-50, 50, allow_nan=False)) for _ in range(b)]
    return (
        torch.tensor(score, dtype=torch.float64),
        torch.tensor(rows_mask, dtype=torch.bool),
        torch.tensor(rows_attn, dtype=torch.float64),
        torch.tensor(rows_gold, dtype=torch.float64),
    )


@settings(max_examples=200, deadline=None)
@given(batches(), st.sampled_from(REWARD_MODES), st.floats(0.0, 1.0))
def test_total_is_score_and_outside_gets_nothing(batch, mode, beta):
    score, mask, attn, gold = batch
    prefix = torch.log(attn).cumsum(-1)  # any finite per-position scores (used by 'red')
    r = token_rewards(mode, score, mask, beta=beta, attention=attn, gold_weights=gold, prefix_scores=prefix)
    np.testing.assert_allclose(r.sum(-1).numpy(), score.numpy(), rtol=1e-12, atol=1e-9)
    assert (r[~mask] == 0).all(), "prompt and padding positions must get exactly zero"


@settings(max_examples=100, deadline=None)
@given(batches(), st.floats(0.0, 1.0))
def test_abc_weights_nonnegative_and_beta_zero_is_sparse(batch, beta):
    score, mask, attn, _ = batch
    positive = score.abs() + 1e-3  # R > 0: every credit has R's sign iff the weights are >= 0
    r = abc_credit(positive, attn, mask, beta=beta)
    assert (r[mask] >= -1e-12).all()
    torch.testing.assert_close(abc_credit(score, attn, mask, beta=0.0), sparse_credit(score, mask))
    # beta = 1 is pure attention: the credit is proportional to the renormalised attention.
    r1 = abc_credit(positive, attn, mask, beta=1.0)
    a = torch.where(mask, attn, 0.0)
    torch.testing.assert_close(r1, a / a.sum(-1, keepdim=True) * positive.unsqueeze(-1))


@pytest.mark.parametrize("mode", ["bogus", "ABC", ""])
def test_unknown_mode(mode):
    with pytest.raises(ValueError, match="unknown reward_mode"):
        token_rewards(mode, torch.ones(1), torch.ones(1, 2, dtype=torch.bool))


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must be in"):
        abc_credit(torch.ones(1), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), beta=beta)


def test_missing_inputs_and_degenerate_attention_are_errors():
    mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="needs the reward model's attention"):
        token_rewards("abc", torch.ones(1), mask)
    with pytest.raises(ValueError, match="gold per-token credit"):
        token_rewards("oracle", torch.ones(1), mask)
    with pytest.raises(ValueError, match="zero mass on the completion"):
        abc_credit(torch.ones(1), torch.tensor([[1.0, 0.0, 0.0]]), mask)
    with pytest.raises(ValueError, match="NaN"):
        abc_credit(torch.ones(1), torch.tensor([[0.0, float("nan"), 1.0]]), mask)
    with pytest.raises(ValueError, match="at least one completion token"):
        sparse_credit(torch.ones(1), torch.zeros(1, 3, dtype=torch.bool))
