"""Tests of the agents package: policy, credit write-back, algorithms, fast path, CLI API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic

import transformers  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

from abc_gym.infos import unpad_episode  # noqa: E402
from agents.algorithms import ALGORITHMS, PPO, make_token_vec_env, nlpo_mask  # noqa: E402
from agents.policy import TransformerActorCriticPolicy, as_token_ids  # noqa: E402
from agents.token_ppo import TokenPPO, ppo_loss  # noqa: E402
from agents.training import TrainConfig, build_model, train  # noqa: E402
from tests.conftest import has_cxx_compiler  # noqa: E402

transformers.utils.logging.disable_progress_bar()
ENV = "abc_gym/Sentiment-v0"


def _model(algo: str = "ppo", reward_mode: str = "abc", n: int = 4, **kw):
    kw.setdefault("minibatch_episodes", min(n, 2))
    cfg = TrainConfig(algo=algo, reward_mode=reward_mode, episodes_per_update=n, log_dir=None, progress=False, quiet=True, **kw)
    model = build_model(cfg)
    model.set_logger(configure(None, []))
    return model


def _collect(model):
    """One rollout without training; returns the buffer."""
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


# ----------------------------------------------------------------------------- policy


def test_float_ids_round_trip_and_check() -> None:
    ids = torch.tensor([[5, 1023, 0]])
    assert torch.equal(as_token_ids(ids.float()), ids)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        as_token_ids(torch.tensor([[2.0**24]]))
    with pytest.raises(ValueError, match="not integers"):
        as_token_ids(torch.tensor([[1.5]]))


def kv_cache_gap(device: str = "cpu", compile_decode: bool = False) -> float:
    """Largest |log-prob| or |value| gap of the KV-cache path (its decode step compiled or not) to
    the full forward over 35 steps (several resets)."""
    env = make_token_vec_env(ENV, num_envs=5, seed=3, device=device)
    path = env.get_attr("policy_name_or_path")[0]
    policy = TransformerActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-4, model_name_or_path=path, compile_decode=compile_decode
    ).to(device)
    policy.set_training_mode(False)
    obs = env.reset()
    torch.manual_seed(0)
    worst = 0.0
    for _ in range(35):  # several episode ends and resets per row
        o = {k: torch.as_tensor(v, device=device) for k, v in obs.items()}
        with torch.no_grad():
            actions, values, log_prob = policy(o)
            policy.use_cache = False
            logits, values_full = policy._heads(o)
            policy.use_cache = True
        lp_full = torch.log_softmax(logits, -1).gather(1, actions.view(-1, 1)).squeeze(1)
        worst = max(worst, (log_prob - lp_full).abs().max().item(), (values - values_full).abs().max().item())
        obs, _, _, _ = env.step(actions.cpu().numpy())
    return worst


def test_kv_cache_equals_full_forward() -> None:
    assert kv_cache_gap("cpu") < 1e-5


@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_decode_step_equals_full_forward() -> None:
    from agents.policy import _COMPILED_STEPS

    assert kv_cache_gap("cpu", compile_decode=True) < 1e-5
    assert "default" in _COMPILED_STEPS  # the compiled step ran, not the eager one


def test_compile_decode_reaches_the_policy_and_survives_save_load(tmp_path) -> None:
    model = _model(n=2, compile_decode=True)
    assert model.policy.compile_decode is True
    model.save(tmp_path / "m.zip")
    assert type(model).load(tmp_path / "m.zip", env=model.env).policy.compile_decode is True
    assert _model(n=2).policy.compile_decode is False  # off by default: eager results stay bit-identical


def test_vocab_mismatch_is_refused(tmp_path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=77, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    env = make_token_vec_env(ENV, num_envs=2)
    with pytest.raises(ValueError, match="output logits but the env's action space"):
        PPO("TransformerPolicy", env, policy_kwargs={"model_name_or_path": str(tmp_path)})


def test_bad_inputs_name_the_fix() -> None:
    import gymnasium as gym

    with pytest.raises(ValueError, match="token env"):
        PPO("TransformerPolicy", gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="unknown algorithm"):
        TrainConfig(algo="dqn").validate()
    with pytest.raises(ValueError, match="unknown reward_mode"):
        TrainConfig(reward_mode="dense").validate()
    with pytest.raises(ValueError, match="minibatch-episodes"):
        TrainConfig(episodes_per_update=4, minibatch_episodes=8).validate()
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        PPO("TransformerPolicy", make_token_vec_env(ENV, num_envs=2), n_steps=0)
    with pytest.raises(ValueError, match="VecEnv"):
        PPO("TransformerPolicy", gym.make_vec(ENV, num_envs=2))


# ----------------------------------------------------------------------------- credit write-back


@pytest.mark.parametrize("reward_mode", ["abc", "sparse"])
def test_write_back_puts_env_credit_on_episode_steps(reward_mode: str) -> None:
    model = _model(reward_mode=reward_mode, n=4, n_epochs=1)
    model.kl_ctl.value = 0.0  # isolate the env's credit
    model.env.seed(1)
    captured: list[dict] = []
    real_step = model.env.step_wait

    def spy():  # record every final info the env gives
        out = real_step()
        captured.extend(dict(unpad_episode(info), row=i) for i, info in enumerate(out[3]) if "token_rewards" in info)
        return out

    model.env.step_wait = spy
    buf = _collect(model)
    assert len(buf.episodes) == 4 and len(captured) >= 4
    for ep in buf.episodes:
        info = next(c for c in captured if c["row"] == ep.env_idx and np.array_equal(c["completion_ids"], ep.input_ids[ep.prompt_len : ep.prompt_len + ep.gen_len]))
        np.testing.assert_allclose(buf.rewards[ep.slots, ep.env_idx], info["token_rewards"].astype(np.float32), rtol=0, atol=1e-6)
        # exactly the episode's steps: its actions are the completion's tokens, in order
        np.testing.assert_array_equal(buf.actions[ep.slots, ep.env_idx, 0], info["completion_ids"])
        assert buf.episode_starts[ep.slots[0], ep.env_idx] == 1 and not buf.episode_starts[ep.slots[1:], ep.env_idx].any()
        if reward_mode == "sparse":
            assert np.all(buf.rewards[ep.slots[:-1], ep.env_idx] == 0)
    assert buf.valid.sum() == sum(e.gen_len for e in buf.episodes)


def test_kl_penalty_is_written_per_token() -> None:
    model = _model(n=2)
    model.kl_ctl.value = 0.5
    buf = _collect(model)
    for ep in buf.episodes:
        got = buf.rewards[ep.slots, ep.env_idx].astype(np.float64)
        kl_sum = ep.kl
        assert got.sum() == pytest.approx(ep.token_rewards.sum() - 0.5 * kl_sum, abs=1e-4)


def test_no_placeholder_is_trained_on() -> None:
    model = _model(n=3)
    buf = _collect(model)
    assert not np.isnan(buf.rewards[buf.valid]).any()
    assert buf.valid.sum() == sum(e.gen_len for e in buf.episodes)
    seen = np.concatenate([b.returns.numpy() for b in buf.get(7)])
    assert len(seen) == buf.valid.sum()  # only valid transitions are ever yielded
    # a transition whose credit never arrived is refused
    buf.reset()
    buf.add_rows(np.array([0]), {k: np.zeros((3, v.shape[-1]), dtype=np.int64) for k, v in buf.observations.items()},
                 np.zeros(3), np.ones(3), torch.zeros(3), torch.zeros(3))
    buf.valid[0, 0] = True
    with pytest.raises(RuntimeError, match="placeholder"):
        buf.compute_returns_and_advantage()


def test_rollouts_complete_every_stored_episode() -> None:
    model = _model(n=3, n_epochs=1)
    model.n_steps = 12  # a rollout boundary inside episodes (8-15 tokens)
    model._setup_model()  # a buffer with room for 12 steps plus the longest episode
    for _ in range(2):
        buf = _collect(model)
        for row in range(3):
            stored = buf.row_pos[row]
            assert stored >= 12 and buf.valid[:stored, row].all()  # every stored step belongs to a finished episode
            assert buf.pending[row] == []


# ----------------------------------------------------------------------------- fast path


def test_sequence_level_equals_per_transition() -> None:
    model = _model(algo="token_ppo", n=6)
    buf = _collect(model)
    model.policy.set_training_mode(True)
    data = model.episode_tensors()
    values, log_prob, entropy, valid = model.policy.evaluate_episodes(
        data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"]
    )
    order = np.concatenate([buf.flat_index(e.slots, e.env_idx) for e in buf.episodes])
    samples = buf._get_samples(order)
    v2, lp2, ent2 = model.policy.evaluate_actions(samples.observations, samples.actions)
    torch.testing.assert_close(values[valid], v2.flatten(), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_prob[valid], lp2, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[valid], ent2, atol=1e-5, rtol=0)
    # the rollout's (cached) log-probs are the policy's
    torch.testing.assert_close(data["old_log_prob"][valid], lp2.detach(), atol=1e-5, rtol=0)
    kw = dict(clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.1)
    seq = ppo_loss(values[valid], log_prob[valid], entropy[valid], *(data[k][valid] for k in ("old_values", "old_log_prob", "advantages", "returns")), **kw)[0]
    per = ppo_loss(v2.flatten(), lp2, ent2, samples.old_values, samples.old_log_prob, samples.advantages, samples.returns, **kw)[0]
    assert abs(seq.item() - per.item()) < 1e-5
    seq.backward()  # and it is differentiable


# ----------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo", "token_ppo"])
@pytest.mark.parametrize("reward_mode", ["abc", "sparse"])
def test_each_algorithm_runs(algo: str, reward_mode: str) -> None:
    kw = {"trpo_cg_max_steps": 3} if algo == "trpo" else {}
    metrics = train(TrainConfig(algo=algo, reward_mode=reward_mode, n_updates=2, episodes_per_update=3, minibatch_episodes=2,
                                log_dir=None, progress=False, quiet=True, **kw))
    assert [m["update"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in ("update", "timesteps", "episodes", "rm_score", "gold_score", "kl", "kl_coef", "value_loss", "entropy", "policy_loss", "wall_time"):
            assert key in m
        assert m["episodes"] == 3 and np.isfinite(m["rm_score"]) and np.isfinite(m["value_loss"])


def test_nlpo_mask_keeps_top_tokens() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, -5.0], [0.0, 0.0, 0.0, 9.0]])
    assert nlpo_mask(logits, 2, 1.0)[0].tolist() == [True, True, False, False]  # ties at the k-th value are kept
    m = nlpo_mask(logits, 2, 0.5)
    assert m[0].tolist() == [True, False, False, False] and m[1].tolist() == [False, False, False, True]


def test_fixed_seed_runs_are_identical() -> None:
    cfg = dict(algo="ppo", n_updates=2, episodes_per_update=3, minibatch_episodes=2, log_dir=None, progress=False, quiet=True, seed=7)
    a, b = train(TrainConfig(**cfg)), train(TrainConfig(**cfg))
    drop = ("wall_time", "update_time", "rollout_time")
    assert [{k: v for k, v in m.items() if k not in drop} for m in a] == [{k: v for k, v in m.items() if k not in drop} for m in b]


def test_save_load_round_trip(tmp_path) -> None:
    model = _model(algo="token_ppo", n=2)
    model.max_updates = 1
    model.learn(10**9)
    model.save(tmp_path / "m.zip")
    loaded = TokenPPO.load(tmp_path / "m.zip", device="cpu")
    for (n1, p1), (n2, p2) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    init = TransformerActorCriticPolicy(model.observation_space, model.action_space, lambda _: 1e-4,
                                        model_name_or_path=model.policy.model_name_or_path)
    assert any(not torch.equal(a, b) for a, b in zip(init.lm.state_dict().values(), loaded.policy.lm.state_dict().values()))
    # the KL reference stays the initial model
    for a, b in zip(init.lm.state_dict().values(), loaded.ref_model.state_dict().values()):
        assert torch.equal(a, b)
    model.policy.save_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    for k, v in hf.state_dict().items():
        assert torch.equal(v, model.policy.lm.state_dict()[k])
    assert ALGORITHMS["ppo"] is PPO


# ----------------------------------------------------------------------------- B3, B6


def test_trpo_steps_the_query_key_value_weights_of_a_gpt_neox_actor(tmp_path, policy_tokenizer) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = policy_tokenizer
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).save_pretrained(tmp_path)
    model = _model(algo="trpo", n=2, model=str(tmp_path), trpo_cg_max_steps=3)
    qkv = {n: p for n, p in model.policy.lm.named_parameters() if "query_key_value" in n}
    assert len(qkv) == 4  # weight and bias of 2 layers
    before = {n: p.detach().clone() for n, p in qkv.items()}
    stepped: list[set[int]] = []
    compute = model._compute_actor_grad

    def spy(*args):
        out = compute(*args)
        stepped.append({id(p) for p in out[0]})
        return out

    model._compute_actor_grad = spy
    logged: dict = {}
    record = model.logger.record
    model.logger.record = lambda key, value, *a, **k: (logged.__setitem__(key, value), record(key, value, *a, **k))
    model.learn(n_updates=1)
    critic = {id(p) for p in model.policy.value_head.parameters()} | {id(p) for p in model.policy.value_model.parameters()}
    assert stepped and all({id(p) for p in qkv.values()} <= s and not (s & critic) for s in stepped)
    if logged["train/is_line_search_success"] > 0:  # a step was accepted: it moved the qkv weights too
        assert all(not torch.equal(before[n], p) for n, p in qkv.items())


def test_kv_cache_keeps_the_model_dtype() -> None:
    from agents.env_util import env_policy_path
    from agents.policy import RowKVCache, base_of

    env = make_token_vec_env(ENV, num_envs=3, seed=0)
    lm = transformers.AutoModelForCausalLM.from_pretrained(env_policy_path(env), dtype=torch.float64).eval()
    cache = RowKVCache(base_of(lm), env.observation_space["input_ids"].shape[0])
    obs = env.reset()
    for _ in range(3):
        ids, mask = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
        h = cache.last_hidden(ids, mask)
        assert h.dtype == torch.float64 and all(k.dtype == torch.float64 for k in cache.keys)
        with torch.no_grad():
            full = base_of(lm)(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(h, full[torch.arange(3), mask.sum(-1) - 1], atol=1e-10, rtol=0)
        obs, _, _, _ = env.step(lm.get_output_embeddings()(h).argmax(-1).numpy())


def test_a_tokenizer_is_never_used_as_a_model_path(policy_tokenizer) -> None:
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    env = TokenGenerationSB3VecEnv.from_env_id(ENV, num_envs=2, policy=policy_tokenizer)
    with pytest.raises(ValueError, match=r"policy_kwargs=dict\(model_name_or_path=\.\.\.\)"):
        PPO("TransformerPolicy", env)
    with pytest.raises(ValueError, match="model_name_or_path"):
        TransformerActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model_name_or_path=policy_tokenizer)


# ----------------------------------------------------------------------------- inverse-CDF sampler


def test_inverse_cdf_sampler_draws_the_distribution() -> None:
    from scipy.stats import chisquare

    from agents.policy import inverse_cdf_sample

    # zeros (a masked token) at both ends and inside, a tiny probability, float32 like the policy's
    p = torch.tensor([0.0, 0.5, 1e-4, 0.0, 0.2999, 0.2, 0.0], dtype=torch.float32)
    torch.manual_seed(0)
    draws = inverse_cdf_sample(p.expand(200_000, -1).contiguous())
    counts = torch.bincount(draws, minlength=len(p)).double()
    assert counts[p == 0].sum() == 0  # a zero-probability token is never drawn
    positive = p > 0
    expected = p[positive].double() / p.sum() * len(draws)
    assert chisquare(counts[positive].numpy(), expected.numpy()).pvalue > 1e-3  # seeded: deterministic
    # and the test has power: the same counts against a slightly different distribution fail it
    wrong = torch.tensor([0.45, 1e-4, 0.3499, 0.2], dtype=torch.float64) * len(draws) / 0.9999
    assert chisquare(counts[positive].numpy(), wrong.numpy() * counts.sum().item() / wrong.sum().item()).pvalue < 1e-6


def test_inverse_cdf_rounding_to_the_total_never_draws_a_masked_last_token(monkeypatch) -> None:
    from agents.policy import inverse_cdf_sample

    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(*a, dtype=k.get("dtype"), device=k.get("device")))
    assert inverse_cdf_sample(torch.tensor([[0.3, 0.7, 0.0], [0.2, 0.0, 0.8]])).tolist() == [1, 2]


@pytest.mark.parametrize("row", [[float("nan"), 0.5, 0.5], [0.0, 0.0, 0.0], [float("inf"), 0.0, 1.0], [-0.1, 0.6, 0.5]])
def test_inverse_cdf_sampler_refuses_a_bad_probability_row(row: list[float]) -> None:
    from agents.policy import inverse_cdf_sample

    # torch.multinomial raises here too; a silent draw would hand PPO an action from nothing
    with pytest.raises(RuntimeError, match="probability row"):
        inverse_cdf_sample(torch.tensor([[0.2, 0.3, 0.5], row]))


def test_sampler_reaches_the_policy_and_rollouts_and_is_checked() -> None:
    model = _model(n=4, sampler="inverse_cdf")
    assert model.policy.sampler == "inverse_cdf"
    buf = _collect(model)
    assert len(buf.episodes) == 4
    with pytest.raises(ValueError, match="--sampler"):
        TrainConfig(sampler="gumbel").validate()
    env = make_token_vec_env(ENV, num_envs=2)
    with pytest.raises(ValueError, match="unknown sampler"):
        PPO("TransformerPolicy", env, policy_kwargs={"sampler": "gumbel"})


def test_inverse_cdf_sampler_keeps_maskable_ppo_inside_its_masks(monkeypatch) -> None:
    import agents.policy as policy_module

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = policy_module.inverse_cdf_sample

    def spy(probs: torch.Tensor) -> torch.Tensor:
        actions = real(probs)
        seen.append((probs, actions))
        return actions

    monkeypatch.setattr(policy_module, "inverse_cdf_sample", spy)
    _collect(_model(algo="maskable_ppo", n=3, sampler="inverse_cdf"))
    assert seen and all((p == 0).any() for p, _ in seen)  # the NLPO masks are active
    assert all((p.gather(1, a.view(-1, 1)) > 0).all() for p, a in seen)  # and every draw is inside them


def test_cache_buffers_survive_a_clear_only_for_a_compiled_step() -> None:
    from agents.policy import RowKVCache

    for compiled in (False, True):
        cache = RowKVCache(torch.nn.Identity(), 8, compile_step=compiled)
        buffers = object()  # stands for the per-layer buffers
        cache.cache = buffers
        cache.clear()  # what set_training_mode(True) does before each update
        # compiled: fixed addresses keep its graph valid; eager: nothing held during the update
        assert (cache.cache is buffers) is compiled and cache.ids is None


# ----------------------------------------------------------------------------- learn() horizon and masking flags


def test_n_updates_is_one_call_horizon_not_sticky() -> None:
    """learn(n_updates=1) then learn(total_timesteps=...) runs SB3's timestep horizon, not 1 update again."""
    model = _model(algo="ppo", n=2)
    model.learn(n_updates=1)
    assert len(model.update_metrics) == 1 and model.max_updates is None
    per_update = model.update_metrics[0]["timesteps"]
    model.learn(total_timesteps=3 * per_update)  # SB3 resets the counter: >= 3 rollouts before it is reached
    assert len(model.update_metrics) >= 1 + 2, [m["update"] for m in model.update_metrics]


def test_maskable_ppo_learn_use_masking_false_samples_unmasked() -> None:
    """sb3-contrib's learn(use_masking=False) reaches the rollout: no NLPO masks are stored or applied."""
    masked = _model(algo="maskable_ppo", n=2, top_k=1)
    masked.learn(n_updates=1)
    assert not np.asarray(masked.rollout_buffer.action_masks).all()  # top-1: nearly every token masked
    free = _model(algo="maskable_ppo", n=2, top_k=1)
    free.learn(n_updates=1, use_masking=False)
    assert np.asarray(free.rollout_buffer.action_masks).all()
