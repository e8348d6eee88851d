"""Speed paths of the update (issue 18): exact ones change no number, opt-in ones say what they change.

- ``entropy_grad``: at ``ent_coef == 0`` TokenPPO and RLOO evaluate the entropy without autograd (its
  gradient is zeros): the weights after several minibatch steps are bit for bit the same.
- ``fused_activation`` (opt-in): GPT-2's Python tanh GELU on torch's fused kernel in the actor, the
  value trunk and the KL reference; the same function within float rounding; kept through save /
  load; an error, naming the flag, for a model it would not change.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic

import transformers  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

transformers.utils.logging.disable_progress_bar()
ENV = "abc_gym/Sentiment-v0"
# EOS allowed from the first token: episodes of mixed lengths, several per env within one rollout.
ENV_KWARGS = {"min_new_tokens": 1, "max_new_tokens": 6}


def _token_ppo(**kwargs):
    return _learner("token_ppo", **kwargs)


def _learner(algo: str, **kwargs):
    """TokenPPO (2 epochs of minibatches of 2 episodes) or RLOO (minibatches of 2, one step) on 4 envs."""
    from agents.env_util import make_token_vec_env
    from agents.rloo import RLOO
    from agents.token_ppo import TokenPPO

    env = make_token_vec_env(ENV, num_envs=4, seed=0, **ENV_KWARGS)
    options = dict(seed=0, device="cpu", minibatch_episodes=2, n_steps=8, learning_rate=3e-3)
    if algo == "token_ppo":
        model = TokenPPO("TransformerPolicy", env, n_epochs=2, **{**options, **kwargs})
    else:
        model = RLOO("TransformerPolicy", env, **{**options, **kwargs})
    model.set_logger(configure(None, []))
    return model


def _train_once(model) -> dict[str, torch.Tensor]:
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert len({e.gen_len for e in model.rollout_buffer.episodes}) > 1, "episodes of several lengths expected"
    model.train()
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("algo", ["token_ppo", "rloo"])
def test_entropy_without_autograd_leaves_the_weights_bit_for_bit_the_same(algo: str) -> None:
    skipped = _learner(algo)  # ent_coef 0 (TrainConfig's and SB3's default): the entropy is not differentiated
    assert skipped.ent_coef == 0 and not skipped._entropy_grad()
    before = {k: v.detach().clone() for k, v in skipped.policy.state_dict().items()}
    after_skip = _train_once(skipped)  # each build reseeds the RNGs: build, train, then the next
    differentiated = _learner(algo)
    differentiated._entropy_grad = lambda: True  # the previous path: autograd through the entropy too
    after_full = _train_once(differentiated)
    assert any(not torch.equal(before[k], after_skip[k]) for k in before), "the update should change the weights"
    for key in after_skip:
        assert torch.equal(after_skip[key], after_full[key]), key


def test_entropy_is_differentiated_when_it_has_a_weight() -> None:
    model = _token_ppo(ent_coef=0.01)
    assert model._entropy_grad()
    ep = _episodes(model)
    _, _, entropy, _ = model.policy.evaluate_episodes(*ep, entropy_grad=True)
    _, log_prob, entropy_off, _ = model.policy.evaluate_episodes(*ep, entropy_grad=False)
    assert entropy.requires_grad and not entropy_off.requires_grad and log_prob.requires_grad
    torch.testing.assert_close(entropy.detach(), entropy_off, rtol=0, atol=0)


def _episodes(model) -> tuple[torch.Tensor, ...]:
    """A rollout's episodes as ``evaluate_episodes`` arguments (ids, mask, prompt_len, gen_len)."""
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    data = model.episode_tensors()
    return data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"]


def _gelus(module: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if "GELU" in type(m).__name__}


def test_fused_activation_is_the_same_function_in_every_copy_and_survives_save_load(tmp_path) -> None:
    from agents.token_ppo import TokenPPO

    plain = _token_ppo(policy_kwargs={"separate_value_model": True})
    fused = _token_ppo(policy_kwargs={"separate_value_model": True, "fused_activation": True})
    assert _gelus(plain.policy.lm) == {"NewGELUActivation"}
    for model in (fused.policy.lm, fused.policy.value_model, fused.ref_model):
        assert _gelus(model) == {"GELUTanh"} or _gelus(model) == {"PytorchGELUTanh"}
    ep = _episodes(fused)
    with torch.no_grad():
        out_plain = plain.policy.evaluate_episodes(*ep)
        out_fused = fused.policy.evaluate_episodes(*ep)
    valid = out_plain[3]
    for a, b, name in zip(out_plain[:3], out_fused[:3], ("values", "log_prob", "entropy")):
        torch.testing.assert_close(a[valid], b[valid], rtol=0, atol=1e-4, msg=name)
    fused.save(tmp_path / "fused.zip")
    loaded = TokenPPO.load(tmp_path / "fused.zip", env=fused.env, device="cpu")
    assert loaded.policy.fused_activation and _gelus(loaded.policy.lm) == _gelus(fused.policy.lm)


def test_fused_activation_on_a_model_without_a_python_gelu_is_an_error(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from abc_gym.tasks.sentiment import POLICY_PATH

    relu = AutoModelForCausalLM.from_pretrained(POLICY_PATH, activation_function="relu")
    relu.save_pretrained(tmp_path / "relu")
    with pytest.raises(ValueError, match="fused_activation=True, but .* no transformers Python tanh-GELU"):
        _token_ppo(policy_kwargs={"model_name_or_path": str(tmp_path / "relu"), "fused_activation": True})


def test_the_cli_flag_reaches_the_policy() -> None:
    from agents.config import TrainConfig
    from agents.registry import common_kwargs

    assert common_kwargs(TrainConfig(fused_activation=True))["policy_kwargs"]["fused_activation"] is True
    assert "fused_activation" not in common_kwargs(TrainConfig())["policy_kwargs"]
