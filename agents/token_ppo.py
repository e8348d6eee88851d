"""``TokenPPO``: PPO whose update evaluates each whole episode in ONE forward pass.

SB3's PPO evaluates every transition on its own: a step of a T-token completion is a
forward over its whole prefix, so an update costs ~T forwards per episode. With a
causal LM the logits of every step of an episode are in one teacher-forced forward over
the final sequence (position ``prompt_len + t - 1`` predicts action ``a_t``), so
TokenPPO minibatches *episodes*, runs one forward each, and gathers the per-step
log-probs, values and entropies; the loss is SB3 PPO's, term by term
(:func:`ppo_loss`), on the same transitions. Rollouts are the shared credit-aware
ones (batched sampling with the per-env KV cache on the batched SB3 VecEnv).

Everything else (logger, callbacks, progress bar, save/load) is SB3's PPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.utils import explained_variance

from agents import compat
from agents.config import DEFAULTS
from agents.ppo import PPO


def ppo_loss(
    values: th.Tensor,
    log_prob: th.Tensor,
    entropy: th.Tensor | None,
    old_values: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    returns: th.Tensor,
    *,
    clip_range: float,
    clip_range_vf: float | None,
    ent_coef: float,
    vf_coef: float,
    normalize_advantage: bool = True,
) -> tuple[th.Tensor, dict[str, float]]:
    """SB3 PPO's minibatch loss, verbatim (all inputs ``(B,)``). Returns the loss and its parts."""
    if normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = th.exp(log_prob - old_log_prob)
    policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()
    if clip_range_vf is None:
        values_pred = values
    else:
        values_pred = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    value_loss = F.mse_loss(returns, values_pred)
    entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    with th.no_grad():
        log_ratio = log_prob - old_log_prob
        stats = {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy_loss": entropy_loss.item(),
            "clip_fraction": th.mean((th.abs(ratio - 1) > clip_range).float()).item(),
            "approx_kl": th.mean((th.exp(log_ratio) - 1) - log_ratio).item(),
        }
    return loss, stats


class TokenPPO(PPO):
    """PPO with the sequence-level update (see module doc).

    Every :class:`agents.ppo.PPO` keyword, plus:

    :param minibatch_episodes: episodes per minibatch (default ``TrainConfig.minibatch_episodes``);
        ``None`` picks about ``batch_size`` transitions' worth (``round(batch_size / mean episode
        length)``, at least 1).
    :param device_rollout: rollouts on the env engine's device tensors (:class:`agents.rollout_sources.EngineSteps`;
        default ``TrainConfig.device_rollout``); used where it equals the numpy path (an unwrapped
        abc_gym SB3 VecEnv), the numpy path otherwise.
    """

    def __init__(
        self,
        *args: Any,
        minibatch_episodes: int | None = DEFAULTS.minibatch_episodes,
        device_rollout: bool = DEFAULTS.device_rollout,
        **kwargs: Any,
    ) -> None:
        if minibatch_episodes is not None and minibatch_episodes < 1:
            raise ValueError(f"minibatch_episodes must be >= 1, got {minibatch_episodes}")
        self.minibatch_episodes = minibatch_episodes
        self.device_rollout = bool(device_rollout)
        super().__init__(*args, **kwargs)
        if self.n_epochs < 1:  # the update would run no minibatch and have nothing to log
            raise ValueError(f"n_epochs must be >= 1, got {self.n_epochs}")

    def _step_source(self, env: Any, use_masking: bool) -> Any:
        """The engine's device tensors (:class:`agents.rollout_sources.EngineSteps`) where exact and enabled, else the VecEnv."""
        from agents.rollout_sources import EngineSteps, device_rollout_supported

        if getattr(self, "device_rollout", False) and device_rollout_supported(self, env):
            return EngineSteps(self, env)
        return super()._step_source(env, use_masking)

    def _values_in_update(self, env: Any) -> bool:
        """One minibatch of every episode (``minibatch_episodes`` at least the envs of all ranks, one episode
        each): the update's first forward runs the value trunk over every episode before any step, so it
        gives the old values and the rollout runs no value forward (issue 18: one forward of the value trunk
        fewer per update). Equal to the rollout's deferred values within float rounding (tests/test_deferred_values.py)."""
        n_envs = env.num_envs * self.dp.world_size
        value_model = getattr(self.policy, "value_model", None)
        # a dropout in the value trunk would make the training-mode forward's values differ from the rollout's
        stochastic = value_model is not None and any(
            isinstance(m, th.nn.Dropout) and m.p > 0 for m in value_model.modules())
        return self.minibatch_episodes is not None and self.minibatch_episodes >= n_envs and not stochastic

    def _pending_values_forward(self, sel: th.Tensor) -> tuple[th.Tensor, ...] | None:
        """With the rollout's values pending: the first minibatch's forward (returned: values, log_prob,
        entropy, valid of ``sel``), whose detached values fill the buffer and so GAE, when ``sel`` holds every
        episode; otherwise (an env ran several episodes) one no-gradient value forward over all of them
        first, and ``None`` (the minibatch then runs as usual)."""
        buf = self.rollout_buffer
        seq = buf.episode_sequences(self.device)
        if len(sel) == len(buf.episodes):
            out = self.policy.evaluate_episodes(
                seq["input_ids"][sel], seq["attention_mask"][sel], seq["prompt_len"][sel], seq["gen_len"][sel],
                eos_allowed=seq["eos_allowed"][sel], entropy_grad=self._entropy_grad(),
            )
            buf.fill_values(sel.cpu().numpy(), out[0].detach().cpu().numpy())
            return out
        every = np.arange(len(buf.episodes))
        values = self.policy.episode_values(seq["input_ids"], seq["attention_mask"], seq["prompt_len"], seq["gen_len"])
        buf.fill_values(every, values.cpu().numpy())
        return None

    def episode_tensors(self) -> dict[str, th.Tensor]:
        """The buffer's episodes as tensors (:meth:`agents.buffers.CreditBufferMixin.episode_tensors`)."""
        return self.rollout_buffer.episode_tensors(self.device)

    def _update(self) -> None:
        """SB3 PPO's ``train``, with one teacher-forced forward per minibatch of episodes."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = compat.progress_remaining(self)
        clip_range = self.clip_range(progress)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(progress)
        buf = self.rollout_buffer
        n_eps = len(buf.episodes)
        mean_len = float(th.tensor([e.gen_len for e in buf.episodes]).float().mean())  # as before: float32
        per_mb = self.minibatch_episodes or max(1, round(self.batch_size / mean_len))
        data = None if buf.values_pending else buf.episode_tensors(self.device)  # pending: GAE after the first forward
        stats: dict[str, list[float]] = {}
        continue_training = True
        for _ in range(self.n_epochs):
            approx_kls = []
            order = th.as_tensor(np.random.permutation(n_eps), device=self.device)
            for sel in self.dp.episode_chunks(order, per_mb):  # torchrun: this rank's share of each minibatch
                out = self._pending_values_forward(sel) if data is None else None
                if data is None:
                    data = buf.episode_tensors(self.device)
                if out is None:
                    out = self.policy.evaluate_episodes(
                        data["input_ids"][sel], data["attention_mask"][sel], data["prompt_len"][sel],
                        data["gen_len"][sel], eos_allowed=data["eos_allowed"][sel], entropy_grad=self._entropy_grad(),
                    )
                values, log_prob, entropy, valid = out
                t = valid.shape[1]
                pick = {k: data[k][sel][:, :t][valid] for k in ("old_values", "old_log_prob", "advantages", "returns")}
                # torchrun: whiten with the global minibatch's mean / std, weight this rank's gradient by its share
                advantages, normalize = self.dp.minibatch_setup(pick["advantages"], self.normalize_advantage)
                loss, part = ppo_loss(
                    values[valid], log_prob[valid], entropy[valid], pick["old_values"], pick["old_log_prob"],
                    advantages, pick["returns"], clip_range=clip_range, clip_range_vf=clip_range_vf,
                    ent_coef=self.ent_coef, vf_coef=self.vf_coef, normalize_advantage=normalize,
                )
                for k, v in part.items():
                    stats.setdefault(k, []).append(v)
                approx_kls.append(part["approx_kl"])
                if self.target_kl is not None and self.dp.mean(part["approx_kl"]) > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            n_updates = compat.count_gradient_epoch(self)
            if not continue_training:
                break
        valid = data["valid"]
        explained_var = explained_variance(data["old_values"][valid].cpu().numpy(), data["returns"][valid].cpu().numpy())
        self.logger.record("train/entropy_loss", np.mean(stats["entropy_loss"]))
        self.logger.record("train/policy_gradient_loss", np.mean(stats["policy_loss"]))
        self.logger.record("train/value_loss", np.mean(stats["value_loss"]))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        self.logger.record("train/clip_fraction", np.mean(stats["clip_fraction"]))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
