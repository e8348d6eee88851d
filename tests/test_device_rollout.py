"""CPU tests of the fast paths (issue 11): batched decoding for scoring, the fixed-shape KV cache,
bf16 log-probs, and the device-resident rollout (same episodes and rewards as the numpy path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abc_gym.alignment import batch_token_char_spans, char_weights_to_tokens, decode_texts, token_char_spans


def _reference_char_weights(char_weights, spans) -> torch.Tensor:
    out = torch.zeros(len(spans), dtype=torch.float64)
    for s, e, w in char_weights:
        hit = [i for i, (ts, te) in enumerate(spans) if ts < e and s < te]
        for i in hit:
            out[i] += w / len(hit)
    return out


def _random_rows(tokenizer, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    specials = [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    rows = []
    for _ in range(n):
        ids = rng.integers(0, len(tokenizer), size=int(rng.integers(1, 30))).tolist()
        if specials and rng.random() < 0.5:
            ids[int(rng.integers(len(ids)))] = specials[0]
        rows.append(ids)
    rows.append(tokenizer("café naïve — 日本語 ok", add_special_tokens=False)["input_ids"])  # multi-byte characters
    return rows


@pytest.mark.parametrize("which", ["policy", "minilm"])
def test_batch_spans_equal_per_row_spans(which, request) -> None:
    tokenizer = request.getfixturevalue(f"{which}_tokenizer")
    rows = _random_rows(tokenizer, 40, seed=1)
    texts, spans = batch_token_char_spans(tokenizer, rows)
    for ids, text, row_spans in zip(rows, texts, spans):
        assert (text, row_spans) == token_char_spans(tokenizer, ids)
    assert decode_texts(tokenizer, rows) == texts


def test_char_weights_vectorised_equals_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        ends = np.cumsum(rng.integers(0, 4, size=int(rng.integers(0, 12))))
        spans = list(zip([0, *ends[:-1].tolist()], ends.tolist()))
        cw = [(int(s), int(s + rng.integers(0, 6)), float(rng.random())) for s in rng.integers(0, 30, size=int(rng.integers(0, 5)))]
        assert torch.allclose(char_weights_to_tokens(cw, spans), _reference_char_weights(cw, spans), atol=1e-12)


# ----------------------------------------------------------------------------- device rollout == numpy rollout

ENV = "abc_gym/Sentiment-v0"


def _two_rollouts(device_rollout: bool, n_steps: int = 1, **env_kwargs):
    from stable_baselines3.common.logger import configure

    from agents.env_util import make_token_vec_env
    from agents.token_ppo import TokenPPO

    env = make_token_vec_env(ENV, num_envs=5, seed=0, **env_kwargs)
    model = TokenPPO(
        "TransformerPolicy", env, seed=0, device="cpu", n_epochs=1, minibatch_episodes=2, device_rollout=device_rollout,
        n_steps=n_steps,
    )
    model.set_logger(configure(None, []))
    _, callback = model._setup_learn(10**9, None)
    out = []
    for _ in range(2):  # the second rollout starts from the first one's env and RNG state
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, 1)
        buf = model.rollout_buffer
        eps = sorted(buf.episodes, key=lambda e: (e.env_idx, int(e.slots[0])))
        out.append(
            {
                "ids": np.stack([e.input_ids for e in eps]),
                "rewards": np.concatenate([e.token_rewards for e in eps]),
                "scores": np.array([e.score for e in eps]),
                "kl": np.array([e.kl for e in eps]),
                "valid": buf.valid.copy(),
                "obs_ids": np.where(buf.valid[..., None], buf.observations["input_ids"], -1),
                "obs_mask": np.where(buf.valid[..., None], buf.observations["attention_mask"], -1),
                "actions": np.where(buf.valid[..., None], buf.actions, -1),
                "values": np.where(buf.valid, buf.values, 0.0),
                "log_probs": np.where(buf.valid, buf.log_probs, 0.0),
                "advantages": np.where(buf.valid, buf.advantages, 0.0),
                "entropy": np.array(buf.step_entropy),
                "timesteps": model.num_timesteps,
            }
        )
        model._update()
    return out


@pytest.mark.parametrize(
    "env_kwargs",
    [{}, {"min_new_tokens": 6, "max_new_tokens": 6}, {"n_steps": 20}],
    ids=["eos-ends-episodes", "fixed-length", "several-episodes-per-env"],
)
def test_device_rollout_equals_numpy_rollout(env_kwargs) -> None:
    numpy_path = _two_rollouts(False, **env_kwargs)
    device_path = _two_rollouts(True, **env_kwargs)
    for a, b in zip(numpy_path, device_path):
        assert a.keys() == b.keys()
        for key in a:
            if key in ("ids", "valid", "timesteps", "obs_ids", "obs_mask", "actions"):
                assert np.array_equal(a[key], b[key]), key
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)


def test_device_rollout_is_used_only_where_exact() -> None:
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.env_util import make_token_vec_env
    from agents.rollout_sources import device_rollout_supported
    from agents.token_ppo import TokenPPO

    env = make_token_vec_env(ENV, num_envs=2, seed=0)
    model = TokenPPO("TransformerPolicy", env, seed=0, device="cpu")
    assert model.device_rollout and device_rollout_supported(model, model.env)
    assert not device_rollout_supported(model, VecMonitor(env))


# ----------------------------------------------------------------------------- bf16


def bf16_log_prob_gap(device: str) -> float:
    """Largest |log-prob| gap of a bf16 policy (KV cache) to the float32 policy (full forward), same actions."""
    from agents.env_util import make_token_vec_env
    from agents.policy import TransformerActorCriticPolicy

    env = make_token_vec_env(ENV, num_envs=4, seed=0, device=device)
    path = env.get_attr("policy_name_or_path")[0]

    def make(**kw):
        p = TransformerActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model_name_or_path=path, **kw)
        p.set_training_mode(False)
        return p.to(device)

    p32, p16 = make(use_cache=False), make(model_kwargs={"dtype": torch.bfloat16})
    obs = env.reset()
    torch.manual_seed(0)
    worst = 0.0
    for _ in range(20):
        o = {k: torch.as_tensor(v, device=device) for k, v in obs.items()}
        with torch.no_grad():
            actions, _, lp32 = p32(o)
            logits16, _ = p16._heads(o)
        lp16 = torch.log_softmax(logits16.float(), -1).gather(1, actions.view(-1, 1)).squeeze(1)
        worst = max(worst, (lp16 - lp32).abs().max().item())
        obs, _, _, _ = env.step(actions.cpu().numpy())
    return worst


def test_bf16_cached_log_probs_within_tolerance() -> None:
    gap = bf16_log_prob_gap("cpu")
    assert 0 < gap < 0.1  # bf16 keeps 8 bits of mantissa: log-probs agree to a few hundredths
