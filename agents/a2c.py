"""Credit-aware A2C: SB3's ``A2C`` plus :class:`~agents.credit_mixin.CreditAssignmentMixin`."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import A2C as _A2C
from stable_baselines3.common.type_aliases import Schedule

from agents.config import DEFAULTS as D
from agents.credit_mixin import CreditAssignmentMixin
from agents.policy import TransformerActorCriticPolicy


class A2C(CreditAssignmentMixin, _A2C):
    """SB3 A2C (one gradient step per rollout on all its complete episodes), same credit machinery.

    Defaults are :class:`~agents.config.TrainConfig`'s (Adam, not SB3's RMSprop, as the other algorithms).

    :param policy: the policy class or ``"TransformerPolicy"``.
    :param env: a token env (SB3 ``VecEnv`` of an abc_gym id) or a registered id string.
    :param learning_rate: learning rate, constant or a schedule of the progress remaining (1 -> 0).
    :param n_steps: steps per env before the rollout completes its episodes.
    :param gamma: discount factor.
    :param gae_lambda: GAE lambda.
    :param vf_coef: value-loss weight.
    :param ent_coef: entropy bonus weight.
    :param max_grad_norm: gradient-norm clip.
    :param normalize_advantage: whiten the rollout's advantages.
    :param use_rms_prop: SB3's RMSprop optimizer instead of Adam.
    :param kl_coef: initial per-token KL penalty coefficient (to the initial policy).
    :param adaptive_kl: adapt the coefficient towards ``kl_target`` (trl's controller).
    :param kl_target: target summed KL per completion.
    :param kl_horizon: the controller's horizon, in completions.
    :param policy_kwargs: policy keywords (``model_name_or_path`` defaults to the env's model).
    :param device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``.
    :param kwargs: further SB3 ``A2C`` keywords (``seed``, ``tensorboard_log``, ``verbose``, ...).
    """

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float | Schedule = D.lr,
        n_steps: int = 1,
        gamma: float = D.gamma,
        gae_lambda: float = D.gae_lambda,
        vf_coef: float = D.vf_coef,
        ent_coef: float = D.ent_coef,
        max_grad_norm: float = D.max_grad_norm,
        normalize_advantage: bool = D.normalize_advantage,
        use_rms_prop: bool = False,
        kl_coef: float = D.kl_coef,
        adaptive_kl: bool = D.adaptive_kl,
        kl_target: float = D.kl_target,
        kl_horizon: float = D.kl_horizon,
        policy_kwargs: dict[str, Any] | None = None,
        device: str = D.device,
        **kwargs: Any,
    ) -> None:
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, gamma=gamma, gae_lambda=gae_lambda,
            vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm, normalize_advantage=normalize_advantage,
            use_rms_prop=use_rms_prop, policy_kwargs=policy_kwargs, device=device, **kwargs,
        )
