"""Speed paths of the update (issue 18): exact ones change no number, opt-in ones say what they change.

- ``entropy_grad``: at ``ent_coef == 0`` TokenPPO and RLOO evaluate the entropy without autograd (its
  gradient is zeros): the weights after several minibatch steps are bit for bit the same.
- ``fused_activation`` (the default ``None`` fuses wherever it can): GPT-2's Python tanh GELU on
  torch's fused kernel in the actor, the value trunk and the KL reference; the same function within
  float rounding; kept through save / load; ``False`` keeps transformers' formula; ``True`` is an
  error, naming the flag, for a model it would not change, which the default leaves as it is.
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

    plain = _token_ppo(policy_kwargs={"separate_value_model": True, "fused_activation": False})
    fused = _token_ppo(policy_kwargs={"separate_value_model": True})  # the default: fused where it can
    assert fused.policy.fused_activation is None and fused.policy.fused_activations == 8  # 4 blocks x 2 trunks
    for model in (plain.policy.lm, plain.policy.value_model, plain.ref_model):
        assert _gelus(model) == {"NewGELUActivation"}
    for model in (fused.policy.lm, fused.policy.value_model, fused.ref_model):
        assert _gelus(model) == {"GELUTanh"} or _gelus(model) == {"PytorchGELUTanh"}
    ep = _episodes(fused)
    with torch.no_grad():
        out_plain = plain.policy.evaluate_episodes(*ep)
        out_fused = fused.policy.evaluate_episodes(*ep)
    valid = out_plain[3]
    for a, b, name in zip(out_plain[:3], out_fused[:3], ("values", "log_prob", "entropy")):
        torch.testing.assert_close(a[valid], b[valid], rtol=0, atol=1e-4, msg=name)
    assert not torch.equal(out_plain[1][valid], out_fused[1][valid]), "not bit for bit: hence the False switch"
    for model, name in ((fused, "fused"), (plain, "plain")):
        model.save(tmp_path / f"{name}.zip")
        loaded = TokenPPO.load(tmp_path / f"{name}.zip", env=model.env, device="cpu")
        assert loaded.policy.fused_activation is model.policy.fused_activation
        assert _gelus(loaded.policy.lm) == _gelus(model.policy.lm) and _gelus(loaded.ref_model) == _gelus(model.ref_model)


def test_fused_activation_on_a_model_without_a_python_gelu(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from abc_gym.tasks.sentiment import POLICY_PATH

    relu = AutoModelForCausalLM.from_pretrained(POLICY_PATH, activation_function="relu")
    relu.save_pretrained(tmp_path / "relu")
    path = str(tmp_path / "relu")
    with pytest.raises(ValueError, match="fused_activation=True, but .* no transformers Python tanh-GELU"):
        _token_ppo(policy_kwargs={"model_name_or_path": path, "fused_activation": True})
    default = _token_ppo(policy_kwargs={"model_name_or_path": path})  # the default leaves it as it is
    assert default.policy.fused_activations == 0 and not _gelus(default.policy.lm)


def test_the_cli_flag_reaches_the_policy() -> None:
    from agents.cli import _parser
    from agents.config import TrainConfig
    from agents.registry import common_kwargs

    assert TrainConfig().fused_activation is None
    assert "fused_activation" not in common_kwargs(TrainConfig())["policy_kwargs"]
    for flag, value in (("--fused-activation", True), ("--no-fused-activation", False)):
        args = {k: v for k, v in vars(_parser().parse_args([flag])).items() if k != "resume"}
        assert common_kwargs(TrainConfig(**args))["policy_kwargs"]["fused_activation"] is value


def _categorical_reference(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = torch.distributions.Categorical(logits=logits)
    return dist.log_prob(actions), dist.entropy()


@pytest.mark.parametrize("seed", range(4))
def test_log_prob_and_entropy_equal_categoricals_with_their_gradients(seed: int) -> None:
    """One log_softmax instead of torch's Categorical: the same log-probs, entropies and gradients within
    float rounding, for wide logits, masked (-inf and lowest-float) entries and several row shapes."""
    from agents.policy import log_prob_and_entropy

    g = torch.Generator().manual_seed(seed)
    n, v = 7 + 5 * seed, 3 + 97 * seed
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * (1 + 10 * seed)
    logits[0, 0] = float("-inf")  # masked by -inf
    logits[1, v - 1] = torch.finfo(torch.float64).min  # masked as mask_eos does
    actions = torch.randint(1, v - 1, (n,), generator=g) if v > 2 else torch.ones(n, dtype=torch.long)
    weights = torch.randn(n, generator=g, dtype=torch.float64)
    grads = []
    outs = []
    for fn in (_categorical_reference, lambda x, a: log_prob_and_entropy(x, a, entropy_grad=True)):
        x = logits.clone().requires_grad_()
        log_prob, entropy = fn(x, actions)
        ((log_prob + 0.1 * entropy) * weights).sum().backward()
        outs.append((log_prob.detach(), entropy.detach()))
        grads.append(torch.nan_to_num(x.grad))
    for (a, b) in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_non_finite_logits_in_the_update_raise_instead_of_training_on_nan() -> None:
    model = _token_ppo()
    ep = _episodes(model)
    lm_head = model.policy.lm.get_output_embeddings()
    with torch.no_grad():
        lm_head.weight[0, 0] = float("nan")  # every logit of token 0 is NaN
    with pytest.raises(RuntimeError, match="evaluate_episodes: a non-finite log-prob"):
        model.policy.evaluate_episodes(*ep)


def test_the_rollout_step_reports_the_log_prob_and_entropy_of_the_token_it_drew() -> None:
    model = _token_ppo()
    obs = {k: torch.as_tensor(v) for k, v in model.env.reset().items()}  # SB3 VecEnv: obs only
    torch.manual_seed(0)
    with torch.no_grad():
        actions, _, log_prob = model.policy(obs)
        logits, _ = model.policy._heads(obs, need_vf=False)
    ref_log_prob, ref_entropy = _categorical_reference(logits, actions)
    torch.testing.assert_close(log_prob, ref_log_prob, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.policy.last_rollout_entropy, ref_entropy, rtol=0, atol=1e-5)
