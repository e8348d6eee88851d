"""The algorithm registry: a learner is its module plus one entry, built-in or defined outside the package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.a2c import A2C
from agents.config import ALGOS, TrainConfig
from agents.registry import REGISTRY, AlgoSpec, register_algorithm
from agents.rloo import leave_one_out_advantages
from agents.training import train

torch.set_num_threads(1)


class HalfLrA2C(A2C):
    """A learner defined outside the package: A2C whose optimiser runs at half the configured rate."""

    def __init__(self, *args, learning_rate=1e-4, **kwargs):
        super().__init__(*args, learning_rate=learning_rate / 2, **kwargs)


def test_every_entry_loads_and_lists_itself():
    assert set(ALGOS) == set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert isinstance(spec.load(), type), name
        assert spec.summary, f"{name}: one line for --help and the docs"


def test_a_user_algorithm_trains_end_to_end():
    spec = AlgoSpec("tests.test_algo_registry", "HalfLrA2C", lambda cfg, env: dict(ent_coef=cfg.ent_coef), summary="test")
    register_algorithm("half_lr_a2c", spec)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_algorithm("half_lr_a2c", spec)
        history = train(TrainConfig(algo="half_lr_a2c", n_updates=2, episodes_per_update=2, minibatch_episodes=2,
                                    log_dir=None, progress=False, quiet=True, seed=0, device="cpu"))
        assert [m["update"] for m in history] == [1, 2] and np.isfinite([m["rm_score"] for m in history]).all()
    finally:
        REGISTRY.pop("half_lr_a2c")
    with pytest.raises(ValueError, match="unknown algorithm 'half_lr_a2c'"):
        TrainConfig(algo="half_lr_a2c").validate()


def test_leave_one_out_baseline_by_hand():
    # 3 episodes of lengths 3, 2, 1; returns-to-go per step
    g = torch.tensor([[3.0, 2.0, 1.0], [6.0, 4.0, 0.0], [9.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    adv = leave_one_out_advantages(g, valid)
    expect = torch.tensor([
        [3 - (6 + 9) / 2, 2 - 4, 1 - 0],  # step 2: no other episode reached it -> baseline 0
        [6 - (3 + 9) / 2, 4 - 2, 0],
        [9 - (3 + 6) / 2, 0, 0],
    ])
    torch.testing.assert_close(adv, expect)


def test_rloo_moves_towards_higher_advantage_tokens():
    """One RLOO step raises the log-prob of the rollout's above-baseline completion relative to the others."""
    from stable_baselines3.common.logger import configure

    from agents.training import build_model

    cfg = TrainConfig(algo="rloo", reward_mode="abc", episodes_per_update=4, minibatch_episodes=2, n_updates=1,
                      log_dir=None, progress=False, quiet=True, seed=2, device="cpu", lr=1e-3, normalize_advantage=True)
    model = build_model(cfg)
    model.set_logger(configure(None, []))
    model.learn(n_updates=1)
    data = model.rollout_buffer.episode_tensors("cpu")
    adv = leave_one_out_advantages(data["returns"], data["valid"])
    with torch.no_grad():
        _, new_lp, _, valid = model.policy.evaluate_episodes(
            data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"], eos_allowed=data["eos_allowed"])
    delta = (new_lp - data["old_log_prob"][:, : valid.shape[1]])[valid]
    a = adv[:, : valid.shape[1]][valid]
    # the policy-gradient step correlates with the advantages it was given
    assert torch.corrcoef(torch.stack([delta, a]))[0, 1] > 0.2, (delta, a)
