"""Credit-aware PPO: SB3's ``PPO`` plus :class:`~agents.credit_mixin.CreditAssignmentMixin`."""

from __future__ import annotations

import warnings
from typing import Any

from stable_baselines3 import PPO as _PPO
from stable_baselines3.common.type_aliases import Schedule

from agents.config import DEFAULTS as D
from agents.credit_mixin import CreditAssignmentMixin
from agents.env_util import default_batch_size
from agents.policy import TransformerActorCriticPolicy


class PPO(CreditAssignmentMixin, _PPO):
    """SB3 PPO on token envs with written-back token credit and a KL penalty.

    Defaults are :class:`~agents.config.TrainConfig`'s. ``n_steps`` is per env; with the
    default 1, each rollout is exactly one completion per env.

    :param policy: the policy class or ``"TransformerPolicy"``.
    :param env: a token env (SB3 ``VecEnv`` of an abc_gym id) or a registered id string.
    :param learning_rate: learning rate, constant or a schedule of the progress remaining (1 -> 0).
    :param n_steps: steps per env before the rollout completes its episodes.
    :param batch_size: minibatch size in transitions; ``None``: ``TrainConfig.minibatch_episodes``
        completions' worth (from the env's mean completion length).
    :param n_epochs: passes over each rollout.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda.
    :param clip_range: ratio clip, constant or a schedule.
    :param clip_range_vf: value clip around the rollout values (``None``: none).
    :param normalize_advantage: whiten advantages per minibatch.
    :param vf_coef: value-loss weight.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient-norm clip.
    :param kl_coef: initial per-token KL penalty coefficient (to the initial policy).
    :param adaptive_kl: adapt the coefficient towards ``kl_target`` (trl's controller).
    :param kl_target: target summed KL per completion.
    :param kl_horizon: the controller's horizon, in completions.
    :param policy_kwargs: policy keywords (``model_name_or_path`` defaults to the env's model).
    :param device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    :param kwargs: further SB3 ``PPO`` keywords (``seed``, ``tensorboard_log``, ``verbose``, ...).
    """

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
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
        kl_coef: float = D.kl_coef,
        adaptive_kl: bool = D.adaptive_kl,
        kl_target: float = D.kl_target,
        kl_horizon: float = D.kl_horizon,
        policy_kwargs: dict[str, Any] | None = None,
        device: str = D.device,
        **kwargs: Any,
    ) -> None:
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():  # SB3's minibatch-size warning counts n_steps * n_envs, not our episodes
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps,
                batch_size=batch_size or default_batch_size(env), n_epochs=n_epochs, gamma=gamma,
                gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
                normalize_advantage=normalize_advantage, vf_coef=vf_coef, ent_coef=ent_coef,
                max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs, device=device, **kwargs,
            )
