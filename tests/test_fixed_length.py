"""Fixed-length completions: every algorithm respects the env's rule that EOS cannot end an
episode before ``min_new_tokens``, in rollouts and in the training-time log-probs.

The policy's EOS logit is pushed up by +8 (a hook on the LM head, added after the reference
copy is made) so that, without masking, nearly every completion would end at its first
token; with masking every completion must be 10-12 tokens long.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import transformers  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

from abc_gym.registration import register_length_variant  # noqa: E402
from agents.buffers import EOS_ALLOWED_KEY  # noqa: E402
from agents.registry import REGISTRY  # noqa: E402
from agents.training import TrainConfig, build_model  # noqa: E402

transformers.utils.logging.disable_progress_bar()
ENV = register_length_variant("abc_gym/Sentiment-v0", 10, 12)
ALGOS = sorted(REGISTRY)  # every registered learner


def _model(algo: str, n: int = 4, **kw):
    cfg = TrainConfig(
        env_id=ENV, algo=algo, reward_mode="sparse", episodes_per_update=n, minibatch_episodes=2, n_epochs=1,
        log_dir=None, progress=False, quiet=True, device="cpu", seed=1, **kw,
    )
    model = build_model(cfg)
    model.set_logger(configure(None, []))
    eos = model.env.get_attr("eos_id")[0]
    head = model.policy.lm.get_output_embeddings()
    head.register_forward_hook(lambda _m, _i, out: out + 8.0 * torch.nn.functional.one_hot(torch.tensor(eos), out.shape[-1]))
    return model, eos


@pytest.mark.parametrize("algo", ALGOS)
def test_completions_stay_within_min_max(algo):
    model, eos = _model(algo)
    lengths, texts = [], []
    model.learn(n_updates=2)
    for ep in model.rollout_buffer.episodes:
        lengths.append(ep.gen_len)
        ids = ep.input_ids[ep.prompt_len : ep.prompt_len + ep.gen_len]
        texts.append(ids)
    assert len(lengths) >= 4
    assert all(10 <= t <= 12 for t in lengths), f"{algo}: completion lengths {lengths} outside 10-12"
    # the boosted EOS is sampled as soon as it is allowed: the rule, not luck, kept them long
    assert any(ids[-1] == eos for ids in texts)
    assert np.isfinite([m["rm_score"] for m in model.update_metrics]).all()


@pytest.mark.parametrize("algo", ["ppo", "token_ppo", "maskable_ppo"])
def test_training_log_probs_equal_rollout_log_probs(algo):
    """Before any gradient step the training path must give the rollout's log-probs (ratio 1)."""
    model, eos = _model(algo)
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buf = model.rollout_buffer
    model.policy.set_training_mode(True)
    with torch.no_grad():
        if algo == "token_ppo":
            data = model.episode_tensors()
            assert data["eos_allowed"].dtype == torch.bool
            _, log_prob, _, valid = model.policy.evaluate_episodes(
                data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"],
                eos_allowed=data["eos_allowed"],
            )
            # without the stored flag, the rule the rollout set (eos_min_new_tokens) gives the same
            _, default_lp, _, _ = model.policy.evaluate_episodes(
                data["input_ids"], data["attention_mask"], data["prompt_len"], data["gen_len"]
            )
            torch.testing.assert_close(default_lp[valid], log_prob[valid])
            old = data["old_log_prob"][:, : valid.shape[1]][valid]
            new = log_prob[valid]
            blocked = (~data["eos_allowed"][:, : valid.shape[1]])[valid]
        else:
            batch = next(buf.get(None))
            kwargs = {"action_masks": batch.action_masks} if algo == "maskable_ppo" else {}
            _, new, _ = model.policy.evaluate_actions(batch.observations, batch.actions, **kwargs)
            old = batch.old_log_prob
            blocked = ~batch.observations[EOS_ALLOWED_KEY].reshape(-1).bool()
    assert blocked.any(), "some steps must have had EOS refused"
    torch.testing.assert_close(new.float(), old.float(), atol=2e-4, rtol=0)
    # the stored per-step flag is one bool per step, not a (V,) mask
    assert buf.observations[EOS_ALLOWED_KEY].size == buf.buffer_size * buf.n_envs


def test_eos_allowed_flag_follows_the_generated_count():
    """Steps 1-9 of a 10-12-token episode refuse EOS, step 10 allows it (the env's action_masks rule)."""
    model, eos = _model("ppo", n=3)
    env = model.env
    _, callback = model._setup_learn(10**9, None)
    seen: list[np.ndarray] = []
    original = model.rollout_buffer.add_rows

    def spy(*args, eos_allowed=None):
        seen.append(np.asarray(eos_allowed).copy())
        return original(*args, eos_allowed=eos_allowed)

    model.rollout_buffer.add_rows = spy
    assert model.collect_rollouts(env, callback, model.rollout_buffer, model.n_steps)
    flags = np.stack(seen)  # (steps, n_envs); every row's episode began at the rollout's first step
    assert 10 <= len(flags) <= 12 and not flags[:9].any() and flags[9].all(), flags.astype(int)
    # the env agrees: after a reset its EOS column is False until the 10th token
    env.reset()
    assert not env.action_masks()[:, eos].any()


def test_policy_without_flag_is_unmasked():
    """predict() on a plain observation (no flag) is the plain policy: the mask needs the flag."""
    model, eos = _model("ppo", n=2)
    obs = model.env.reset()
    o = {k: torch.as_tensor(v) for k, v in obs.items()}
    model.policy.eos_token_id = eos
    with torch.no_grad():
        d_plain = model.policy.get_distribution(o).distribution.probs[:, eos]
        o[EOS_ALLOWED_KEY] = torch.tensor([False, True])
        d_masked = model.policy.get_distribution(o).distribution.probs[:, eos]
    assert (d_plain > 0).all() and d_masked[0] == 0 and torch.isclose(d_masked[1], d_plain[1])
