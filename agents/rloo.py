"""``RLOO``: REINFORCE with a leave-one-out baseline, the critic-free learner of RLHF practice.

RLOO (Kool et al. 2019; Ahmadian et al., "Back to Basics", ACL 2024) weighs each sampled
completion's log-likelihood by its return minus the mean return of the *other* samples of the
batch, so the baseline is unbiased (it does not depend on the sample it corrects) and no value
model is trained. Here it is token-level, so the credit scheme matters: each step t of episode e
is weighted by its return-to-go

    G[e, t] = sum_{u >= t} gamma^(u-t) r[e, u]     (r: the env's credit minus the per-token KL penalty)

minus the leave-one-out mean of G[e', t] over the rollout's other episodes e' that reached step t
(0 when none did). With sparse credit every step of an episode sees R; with dense credit a token
is weighed only by the credit from itself on. Caveat: dense credit of a token (ABC, RED, uniform:
R / T, oracle) depends on the tokens after it, so the credit of earlier tokens, which this
return-to-go drops, depends on a_t too; with those schemes the step is the policy gradient of
the shaped per-token objective, not an unbiased estimate of the gradient of E[R] (it is, for
sparse credit: R sits on the last token, inside every return-to-go). No
result in docs/results.md uses this learner. The loss, over the rollout's valid steps, is

    loss = -mean_{e,t} (A[e, t] * log pi(a_t | s_t)) - ent_coef * mean entropy

with A optionally whitened over the rollout, one gradient step per rollout (on-policy), the
episodes evaluated teacher-forced (one forward per episode, :meth:`evaluate_episodes`) in
chunks of ``minibatch_episodes`` whose gradients accumulate. Rollouts, credit write-back, the
KL penalty and metrics are the shared ones (:class:`~agents.credit_mixin.CreditAssignmentMixin`).
The policy's value head is carried (SB3's policy API) but never trained: ``vf_coef`` is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import Schedule

from agents import compat
from agents.config import DEFAULTS as D
from agents.credit_mixin import CreditAssignmentMixin
from agents.policy import TransformerActorCriticPolicy


def leave_one_out_advantages(returns: th.Tensor, valid: th.Tensor) -> th.Tensor:
    """``returns - baseline`` where the baseline of ``(e, t)`` is the mean of ``returns[e', t]`` over
    the other episodes ``e' != e`` valid at step t (0 when there is none).

    Args:
        returns: ``(E, Tmax)`` float, return-to-go per episode and step (anything where not ``valid``).
        valid: ``(E, Tmax)`` bool.
    Returns:
        ``(E, Tmax)`` float, 0 where not ``valid``.
    """
    g = th.where(valid, returns, th.zeros_like(returns))
    n = valid.sum(0, keepdim=True)  # (1, Tmax) episodes that reached step t
    others = (n - valid.long()).clamp(min=1)
    baseline = (g.sum(0, keepdim=True) - g) / others
    baseline = th.where(n - valid.long() > 0, baseline, th.zeros_like(baseline))
    return th.where(valid, g - baseline, th.zeros_like(g))


class RLOO(CreditAssignmentMixin, OnPolicyAlgorithm):
    """REINFORCE with a per-step leave-one-out baseline (see module doc).

    :param policy: the policy class or ``"TransformerPolicy"``.
    :param env: a token env (SB3 ``VecEnv`` of an abc_gym id) or a registered id string.
    :param learning_rate: learning rate, constant or a schedule of the progress remaining (1 -> 0).
    :param n_steps: steps per env before the rollout completes its episodes.
    :param gamma: discount of the return-to-go.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient-norm clip of the one step per rollout.
    :param normalize_advantage: whiten the leave-one-out advantages over the rollout's steps.
    :param minibatch_episodes: episodes per teacher-forced forward (gradients accumulate; memory only,
        the step is the same).
    :param kl_coef: initial per-token KL penalty coefficient (to the initial policy).
    :param adaptive_kl: adapt the coefficient towards ``kl_target`` (trl's controller).
    :param kl_target: target summed KL per completion.
    :param kl_horizon: the controller's horizon, in completions.
    :param policy_kwargs: policy keywords (``model_name_or_path`` defaults to the env's model).
    :param device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    :param kwargs: further SB3 ``OnPolicyAlgorithm`` keywords (``seed``, ``tensorboard_log``, ``verbose``, ...).
    """

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float | Schedule = D.lr,
        n_steps: int = 1,
        gamma: float = D.gamma,
        ent_coef: float = D.ent_coef,
        max_grad_norm: float = D.max_grad_norm,
        normalize_advantage: bool = D.normalize_advantage,
        minibatch_episodes: int | None = D.minibatch_episodes,
        kl_coef: float = D.kl_coef,
        adaptive_kl: bool = D.adaptive_kl,
        kl_target: float = D.kl_target,
        kl_horizon: float = D.kl_horizon,
        policy_kwargs: dict[str, Any] | None = None,
        device: str = D.device,
        **kwargs: Any,
    ) -> None:
        if minibatch_episodes is not None and minibatch_episodes < 1:
            raise ValueError(f"minibatch_episodes must be >= 1, got {minibatch_episodes}")
        self.minibatch_episodes = minibatch_episodes
        self.normalize_advantage = bool(normalize_advantage)
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        # gae_lambda 1 makes the buffer's returns the plain return-to-go (the values cancel out of GAE).
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, gamma=gamma, gae_lambda=1.0, ent_coef=ent_coef,
            vf_coef=0.0, max_grad_norm=max_grad_norm, use_sde=False, sde_sample_freq=-1, policy_kwargs=policy_kwargs,
            device=device, **kwargs,
        )

    def _update(self) -> None:
        """One REINFORCE step on the rollout's complete episodes (module doc)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        data = self.rollout_buffer.episode_tensors(self.device)
        valid = data["valid"]
        advantages = leave_one_out_advantages(data["returns"], valid)
        if self.normalize_advantage and int(valid.sum()) > 1:
            picked = advantages[valid]
            advantages = th.where(valid, (advantages - picked.mean()) / (picked.std() + 1e-8), advantages)
        n_eps, n_valid = len(data["gen_len"]), int(valid.sum())
        per_mb = self.minibatch_episodes or n_eps
        self.policy.optimizer.zero_grad()
        pg_total, ent_total = 0.0, 0.0
        for start in range(0, n_eps, per_mb):
            sel = th.arange(start, min(start + per_mb, n_eps), device=self.device)
            _, log_prob, entropy, ok = self.policy.evaluate_episodes(
                data["input_ids"][sel], data["attention_mask"][sel], data["prompt_len"][sel], data["gen_len"][sel],
                eos_allowed=data["eos_allowed"][sel], entropy_grad=self._entropy_grad(),
            )
            t = ok.shape[1]
            adv = advantages[sel][:, :t]
            pg = -(adv[ok] * log_prob[ok]).sum() / n_valid  # this chunk's share of the rollout mean
            ent = entropy[ok].sum() / n_valid
            (pg - self.ent_coef * ent).backward()
            pg_total, ent_total = pg_total + pg.item(), ent_total + ent.item()
        grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        n_updates = compat.count_gradient_epoch(self)
        self.logger.record("train/policy_gradient_loss", pg_total)
        self.logger.record("train/entropy_loss", -ent_total)
        self.logger.record("train/loss", pg_total - self.ent_coef * ent_total)
        self.logger.record("train/grad_norm", float(grad_norm))
        self.logger.record("train/advantage_std", float(np.std(advantages[valid].cpu().numpy())))
        self.logger.record("train/n_updates", n_updates, exclude="tensorboard")
