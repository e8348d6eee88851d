"""GPU checks of the fast paths (issue 11): run when CUDA is available, skipped otherwise.

- env credit on CUDA equals the CPU env's within 1e-4 (same seed, same actions);
- the fixed-shape KV cache equals the full forward on CUDA, its decode step eager and compiled
  (``compile_decode``: ``torch.compile`` with CUDA graphs);
- the device-resident rollout equals the numpy rollout on CUDA (same episodes and rewards);
- bf16 on CUDA: cached log-probs within tolerance of float32.

``benchmarks/gpu_check.sh`` runs this file on the lent machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ENV = "abc_gym/Sentiment-v0"


def test_env_credit_on_cuda_equals_cpu() -> None:
    import gymnasium as gym

    runs = {}
    for device in ("cpu", "cuda"):
        venv = gym.make_vec(ENV, num_envs=8, device=device, reward_mode="abc")
        venv.reset(seed=0)
        actions = np.random.default_rng(0).integers(0, venv.single_action_space.n, size=(40, 8))
        credit = []
        for a in actions:
            _, _, term, _, info = venv.step(a)
            final = info.get("final_info", {})
            for row in np.flatnonzero(term):
                credit.append(np.asarray(final["token_rewards"][row], dtype=np.float64))
        runs[device] = credit
    assert len(runs["cpu"]) == len(runs["cuda"]) > 0
    for a, b in zip(runs["cpu"], runs["cuda"]):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_kv_cache_equals_full_forward_on_cuda() -> None:
    from tests.test_agents import kv_cache_gap

    assert kv_cache_gap("cuda") < 1e-4


def test_compiled_decode_step_with_cuda_graphs_equals_full_forward() -> None:
    from agents.policy import _COMPILED_STEPS
    from tests.test_agents import kv_cache_gap

    assert kv_cache_gap("cuda", compile_decode=True) < 1e-4
    assert "reduce-overhead" in _COMPILED_STEPS


def test_device_rollout_equals_numpy_rollout_on_cuda() -> None:
    from stable_baselines3.common.logger import configure

    from agents.env_util import make_token_vec_env
    from agents.token_ppo import TokenPPO

    def rollout(device_rollout: bool):
        env = make_token_vec_env(ENV, num_envs=6, seed=0, device="cuda")
        model = TokenPPO("TransformerPolicy", env, seed=0, device="cuda", n_epochs=1, device_rollout=device_rollout)
        model.set_logger(configure(None, []))
        _, callback = model._setup_learn(10**9, None)
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, 1)
        eps = sorted(model.rollout_buffer.episodes, key=lambda e: e.env_idx)
        return np.stack([e.input_ids for e in eps]), np.concatenate([e.token_rewards for e in eps])

    ids_np, rewards_np = rollout(False)
    ids_dev, rewards_dev = rollout(True)
    assert np.array_equal(ids_np, ids_dev)
    np.testing.assert_allclose(rewards_np, rewards_dev, atol=1e-5, rtol=0)


def test_bf16_cached_log_probs_within_tolerance_on_cuda() -> None:
    from tests.test_device_rollout import bf16_log_prob_gap

    assert bf16_log_prob_gap("cuda") < 0.1
