"""Credit-aware MaskablePPO with NLPO-style masks: sb3-contrib's ``MaskablePPO`` plus the credit mixin."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch as th
from sb3_contrib import MaskablePPO as _MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv

from agents.buffers import MaskableCreditDictRolloutBuffer
from agents.config import DEFAULTS as D
from agents.credit_mixin import CreditAssignmentMixin
from agents.env_util import default_batch_size
from agents.policy import MaskableTransformerActorCriticPolicy, RowKVCache, TransformerActorCriticPolicy, base_of


class MaskablePPO(CreditAssignmentMixin, _MaskablePPO):
    """sb3-contrib MaskablePPO with NLPO-style masks: at each step only the reference policy's
    top-k / top-p tokens (among those the env allows) may be sampled (Ramamurthy et al., 2023).

    :param policy: the policy class or ``"TransformerPolicy"`` (the maskable transformer policy).
    :param env: a token env (SB3 ``VecEnv`` of an abc_gym id) or a registered id string.
    :param learning_rate: learning rate, constant or a schedule of the progress remaining (1 -> 0).
    :param n_steps: steps per env before the rollout completes its episodes.
    :param batch_size: minibatch size in transitions; ``None``: ``TrainConfig.minibatch_episodes``
        completions' worth.
    :param n_epochs: passes over each rollout.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda.
    :param clip_range: ratio clip, constant or a schedule.
    :param clip_range_vf: value clip around the rollout values (``None``: none).
    :param normalize_advantage: whiten advantages per minibatch.
    :param vf_coef: value-loss weight.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient-norm clip.
    :param top_k: keep the reference policy's top-k tokens (0: no top-k mask).
    :param top_p: keep the reference policy's top-p nucleus (1: no top-p mask).
    :param kl_coef: initial per-token KL penalty coefficient (to the initial policy).
    :param adaptive_kl: adapt the coefficient towards ``kl_target`` (trl's controller).
    :param kl_target: target summed KL per completion.
    :param kl_horizon: the controller's horizon, in completions.
    :param policy_kwargs: policy keywords (``model_name_or_path`` defaults to the env's model).
    :param device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    :param kwargs: further sb3-contrib ``MaskablePPO`` keywords (``seed``, ``tensorboard_log``, ...).
    """

    credit_buffer_class = MaskableCreditDictRolloutBuffer
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"TransformerPolicy": MaskableTransformerActorCriticPolicy}

    def __init__(
        self,
        policy: str | type = MaskableTransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float | Schedule = D.lr,
        n_steps: int = 1,
        batch_size: int | None = None,
        n_epochs: int = D.n_epochs,
        gamma: float = D.gamma,
        gae_lambda: float = D.gae_lambda,
        clip_range: float | Schedule = D.clip_range,
        clip_range_vf: float | Schedule | None = D.clip_range_vf,
        normalize_advantage: bool = D.normalize_advantage,
        vf_coef: float = D.vf_coef,
        ent_coef: float = D.ent_coef,
        max_grad_norm: float = D.max_grad_norm,
        top_k: int = D.top_k,
        top_p: float = D.top_p,
        kl_coef: float = D.kl_coef,
        adaptive_kl: bool = D.adaptive_kl,
        kl_target: float = D.kl_target,
        kl_horizon: float = D.kl_horizon,
        policy_kwargs: dict[str, Any] | None = None,
        device: str = D.device,
        **kwargs: Any,
    ) -> None:
        if policy is TransformerActorCriticPolicy:
            policy = MaskableTransformerActorCriticPolicy
        if top_k < 0 or not (0.0 < top_p <= 1.0):
            raise ValueError(f"need top_k >= 0 (0 = off) and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
        self.top_k, self.top_p = int(top_k), float(top_p)
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size or default_batch_size(env),
                n_epochs=n_epochs, gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range,
                clip_range_vf=clip_range_vf, normalize_advantage=normalize_advantage, vf_coef=vf_coef,
                ent_coef=ent_coef, max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs, device=device, **kwargs,
            )

    def rollout_action_masks(self, env: VecEnv, obs: dict[str, th.Tensor]) -> np.ndarray:
        """``(N, V)`` bool: the env's allowed tokens within the reference policy's top-k / top-p."""
        env_masks = th.as_tensor(get_action_masks(env), device=self.device).bool()
        if self.top_k == 0 and self.top_p >= 1.0:
            return env_masks.cpu().numpy()
        if self._ref_cache is None:
            self._ref_cache = RowKVCache(base_of(self.ref_model), int(obs["input_ids"].shape[-1]))
        h = self._ref_cache.last_hidden(obs["input_ids"].long(), obs["attention_mask"].long())
        logits = self.ref_model.get_output_embeddings()(h).float().masked_fill(~env_masks, float("-inf"))
        return (nlpo_mask(logits, self.top_k, self.top_p) & env_masks).cpu().numpy()


def nlpo_mask(logits: th.Tensor, top_k: int, top_p: float) -> th.Tensor:
    """``(N, V)`` bool: tokens inside both the top-k and the top-p nucleus of ``logits`` ``(N, V)``.

    The most likely token is always allowed, so a row is never empty.
    """
    keep = th.ones_like(logits, dtype=th.bool)
    if top_k > 0:
        kth = th.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        keep &= logits >= kth
    if top_p < 1.0:
        sorted_logits, order = th.sort(logits, descending=True, dim=-1)
        probs = th.softmax(sorted_logits, -1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        keep_sorted = before < top_p
        keep &= th.zeros_like(keep).scatter(1, order, keep_sorted)
    return keep
