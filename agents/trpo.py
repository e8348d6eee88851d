"""Credit-aware TRPO: sb3-contrib's ``TRPO`` plus :class:`~agents.credit_mixin.CreditAssignmentMixin`."""

from __future__ import annotations

import warnings
from typing import Any

import torch as th
from sb3_contrib import TRPO as _TRPO
from stable_baselines3.common.type_aliases import Schedule

from agents import compat
from agents.config import DEFAULTS as D
from agents.credit_mixin import CreditAssignmentMixin
from agents.env_util import default_batch_size
from agents.policy import TransformerActorCriticPolicy


class TRPO(CreditAssignmentMixin, _TRPO):
    """sb3-contrib TRPO on token envs. Its critic step zeroes the actor's gradients, so with a shared
    trunk only the value head would learn: ``separate_value_model=True`` (the default here) gives the
    critic its own trunk. The natural-gradient step moves the actor LM's parameters, chosen by
    identity (sb3-contrib's ``"value" not in name`` would drop GPT-NeoX's ``query_key_value``).

    The Hessian-vector products need double backward, which SDPA kernels lack: the policy
    loads its models with eager attention.

    :param policy: the policy class or ``"TransformerPolicy"``.
    :param env: a token env (SB3 ``VecEnv`` of an abc_gym id) or a registered id string.
    :param learning_rate: the critic's learning rate, constant or a schedule.
    :param n_steps: steps per env before the rollout completes its episodes.
    :param batch_size: minibatch size in transitions; ``None``: ``TrainConfig.minibatch_episodes``
        completions' worth.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda.
    :param target_kl: KL bound of the trust region.
    :param cg_max_steps: conjugate-gradient iterations.
    :param n_critic_updates: critic passes per rollout.
    :param normalize_advantage: whiten advantages per minibatch.
    :param kl_coef: initial per-token KL penalty coefficient (to the initial policy).
    :param adaptive_kl: adapt the coefficient towards ``kl_target`` (trl's controller).
    :param kl_target: target summed KL per completion.
    :param kl_horizon: the controller's horizon, in completions.
    :param policy_kwargs: policy keywords (``model_name_or_path`` defaults to the env's model).
    :param device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    :param kwargs: further sb3-contrib ``TRPO`` keywords (``seed``, ``line_search_max_iter``, ...).
    """

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float | Schedule = D.lr,
        n_steps: int = 1,
        batch_size: int | None = None,
        gamma: float = D.gamma,
        gae_lambda: float = D.gae_lambda,
        target_kl: float = D.trpo_target_kl,
        cg_max_steps: int = D.trpo_cg_max_steps,
        n_critic_updates: int = D.n_epochs,
        normalize_advantage: bool = D.normalize_advantage,
        kl_coef: float = D.kl_coef,
        adaptive_kl: bool = D.adaptive_kl,
        kl_target: float = D.kl_target,
        kl_horizon: float = D.kl_horizon,
        policy_kwargs: dict[str, Any] | None = None,
        device: str = D.device,
        **kwargs: Any,
    ) -> None:
        policy_kwargs = {"separate_value_model": True, "model_kwargs": {"attn_implementation": "eager"}, **(policy_kwargs or {})}
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size or default_batch_size(env),
                gamma=gamma, gae_lambda=gae_lambda, target_kl=target_kl, cg_max_steps=cg_max_steps,
                n_critic_updates=n_critic_updates, normalize_advantage=normalize_advantage,
                policy_kwargs=policy_kwargs, device=device, **kwargs,
            )

    def _compute_actor_grad(self, kl_div: th.Tensor, policy_objective: th.Tensor):
        """sb3-contrib's hook: the actor's gradients, over the LM's parameters (see class doc)."""
        return compat.trpo_actor_gradients(kl_div, policy_objective, self.policy.actor_parameters())
