"""Deferred values (issue 18): with a separate value trunk the rollout skips its per-step KV-cached
value decode and fills each finished episode's values from one value-trunk forward over its final
sequence. The buffer must hold the per-step path's values (within float32 rounding), on the device
path and the numpy path, for TokenPPO and TRPO (whose default is a separate value trunk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic

import transformers  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

transformers.utils.logging.disable_progress_bar()
ENV = "abc_gym/Sentiment-v0"
# Several episodes per env, ended by EOS or by max_new_tokens: mixed lengths within one batch of finishes.
ENV_KWARGS = {"min_new_tokens": 1, "max_new_tokens": 6}
N_STEPS = 8


def _model(algo: str, defer: bool, device_rollout: bool, env_kwargs: dict | None = None, n_steps: int = N_STEPS,
           minibatch: int = 2):
    from agents.env_util import make_token_vec_env
    from agents.token_ppo import TokenPPO
    from agents.trpo import TRPO

    env = make_token_vec_env(ENV, num_envs=4, seed=0, **(ENV_KWARGS if env_kwargs is None else env_kwargs))
    if algo == "token_ppo":  # minibatch < the 4 envs: values at each episode's end (not left to the update)
        model = TokenPPO(
            "TransformerPolicy", env, seed=0, device="cpu", n_epochs=1, minibatch_episodes=minibatch, n_steps=n_steps,
            device_rollout=device_rollout, policy_kwargs={"separate_value_model": True},
        )
    else:
        model = TRPO("TransformerPolicy", env, seed=0, device="cpu", n_steps=n_steps, n_critic_updates=1)
    assert model.policy.value_model is not None
    model.defer_values = defer
    model.set_logger(configure(None, []))
    return model


def _rollout(model) -> dict[str, np.ndarray]:
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buf = model.rollout_buffer
    assert model._values_deferred == (model.defer_values and model.policy.value_model is not None)
    return {
        "valid": buf.valid.copy(),
        "actions": np.where(buf.valid[..., None], buf.actions, -1),
        "values": np.where(buf.valid, buf.values, 0.0),
        "log_probs": np.where(buf.valid, buf.log_probs, 0.0),
        "returns": np.where(buf.valid, buf.returns, 0.0),
        "advantages": np.where(buf.valid, buf.advantages, 0.0),
        "gen_len": np.array(sorted(e.gen_len for e in buf.episodes)),
    }


@pytest.mark.parametrize(
    ("algo", "device_rollout"),
    [("token_ppo", True), ("token_ppo", False), ("trpo", False)],
    ids=["token_ppo-device", "token_ppo-numpy", "trpo-numpy"],
)
def test_deferred_values_equal_per_step_values(algo: str, device_rollout: bool) -> None:
    from agents.rollout_sources import EngineSteps

    a = _rollout(_model(algo, False, device_rollout))  # each model seeds the global RNG: build, then roll out
    deferred = _model(algo, True, device_rollout)
    assert isinstance(deferred._step_source(deferred.env, True), EngineSteps) == device_rollout
    b = _rollout(deferred)
    assert len(set(b["gen_len"].tolist())) > 1, "the rollout should hold episodes of several lengths"
    # The value trunk draws no random numbers: the same seed gives the same actions either way.
    for key in ("valid", "actions", "gen_len"):
        assert np.array_equal(a[key], b[key]), key
    np.testing.assert_allclose(a["log_probs"], b["log_probs"], rtol=0, atol=1e-6)
    assert b["valid"].sum() > 20 and np.abs(b["values"]).max() > 0
    np.testing.assert_allclose(a["values"], b["values"], rtol=0, atol=2e-5, err_msg="values")
    np.testing.assert_allclose(a["returns"], b["returns"], rtol=0, atol=2e-5, err_msg="returns")
    np.testing.assert_allclose(a["advantages"], b["advantages"], rtol=0, atol=2e-5, err_msg="advantages")
    deferred.update()  # learning still runs on deferred values
    assert np.isfinite(deferred.logger.name_to_value["train/value_loss"])


def test_episode_values_equal_the_teacher_forced_values() -> None:
    """The deferred values are evaluate_episodes' values of the stored episodes (the update's own path)."""
    model = _model("token_ppo", True, True)
    _rollout(model)
    data = model.episode_tensors()
    policy = model.policy
    with torch.no_grad():
        values, _, _, valid = policy.evaluate_episodes(data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"])
    torch.testing.assert_close(data["old_values"][valid], values[valid], rtol=0, atol=1e-5)


def test_shared_trunk_defers_nothing_and_placeholders_are_refused() -> None:
    from agents.env_util import make_token_vec_env
    from agents.token_ppo import TokenPPO

    env = make_token_vec_env(ENV, num_envs=2, seed=0, **ENV_KWARGS)
    model = TokenPPO("TransformerPolicy", env, seed=0, device="cpu", n_epochs=1, minibatch_episodes=2)
    model.set_logger(configure(None, []))
    out = _rollout(model)
    assert not model._values_deferred and np.isfinite(out["values"]).all()
    with pytest.raises(ValueError, match="separate_value_model=True"):
        model.policy.episode_values(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3), torch.tensor([2]), torch.tensor([1]))
    buf = model.rollout_buffer
    buf.values[buf.valid.nonzero()[0][0], buf.valid.nonzero()[1][0]] = np.nan  # a value never written back
    with pytest.raises(RuntimeError, match="no value written back"):
        buf.compute_returns_and_advantage()


@pytest.mark.parametrize("fixed", [True, False], ids=["one-episode-per-env", "several-episodes-per-env"])
@pytest.mark.parametrize("device_rollout", [True, False], ids=["device", "numpy"])
def test_values_left_to_the_update_equal_per_step_values(fixed: bool, device_rollout: bool) -> None:
    """One minibatch of every episode (the peer setting): the rollout runs no value forward, the update's
    first forward gives the old values, then GAE. Same buffer and same update as the per-step path. With
    several episodes per env the first minibatch cannot hold them all: one value forward over all of them."""
    kwargs, n_steps = ({"min_new_tokens": 5, "max_new_tokens": 5}, 5) if fixed else (ENV_KWARGS, N_STEPS)
    models = {}
    for defer in (False, True):
        model = _model("token_ppo", defer, device_rollout, kwargs, n_steps, minibatch=4)
        _, callback = model._setup_learn(10**9, None)
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        buf = model.rollout_buffer
        assert buf.values_pending == defer  # defer False: the per-step values, GAE at the rollout's end
        if defer:
            assert np.isnan(buf.values[buf.valid]).all() and (len(buf.episodes) == 4) == fixed
            with pytest.raises(RuntimeError, match="left to the update's first forward"):
                buf.episode_tensors("cpu")  # returns / advantages are not computed yet: never read as zeros
        np.random.seed(0)  # the update's minibatch order
        model.update()
        assert not buf.values_pending
        models[defer] = model
    a, b = (models[d].rollout_buffer for d in (False, True))
    assert len(set(e.gen_len for e in b.episodes)) > 1 or fixed
    for key in ("values", "returns", "advantages"):
        np.testing.assert_allclose(getattr(a, key)[a.valid_flat], getattr(b, key)[b.valid_flat], rtol=0, atol=2e-5, err_msg=key)
    logged = [models[d].logger.name_to_value for d in (False, True)]
    for key in ("train/value_loss", "train/policy_gradient_loss", "train/explained_variance"):
        assert logged[1][key] == pytest.approx(logged[0][key], rel=1e-4, abs=1e-6), key


def test_a_dropout_value_trunk_keeps_its_values_in_the_rollout() -> None:
    """A training-mode forward with dropout would give other values than the rollout's: not left to the update."""
    model = _model("token_ppo", True, True, {"min_new_tokens": 5, "max_new_tokens": 5}, 5, minibatch=4)
    assert model._values_in_update(model.env)
    next(m for m in model.policy.value_model.modules() if isinstance(m, torch.nn.Dropout)).p = 0.1
    assert not model._values_in_update(model.env)


def test_episode_sequences_are_episode_tensors_fields_before_and_after_flattening() -> None:
    """The update's pre-GAE view of the episodes (values pending) reads what episode_tensors reads."""
    model = _model("token_ppo", True, True, {"min_new_tokens": 4, "max_new_tokens": 5}, 5, minibatch=2)
    _rollout(model)
    buf = model.rollout_buffer
    before = buf.episode_sequences("cpu")
    assert not before["eos_allowed"][:, :3].any() and before["eos_allowed"][:, 3:].all()  # EOS masked before 4 tokens
    tensors = buf.episode_tensors("cpu")  # flattens the buffer
    after = buf.episode_sequences("cpu")
    valid = tensors["valid"]
    for key in before:
        assert torch.equal(before[key], after[key]), key
        if key == "eos_allowed":
            assert torch.equal(before[key][valid], tensors[key][valid])
        else:
            assert torch.equal(before[key], tensors[key]), key
