"""The algorithm registry: name -> class and the constructor keywords a ``TrainConfig`` gives it.

``build_model`` in :mod:`agents.training` looks the algorithm up here, and everything that lists
the learners reads it: ``TrainConfig``'s and the CLI's choices (``agents.config.ALGOS``), the
torchrun check (:mod:`agents.distributed`), the benchmark's algorithm choices and the tests
parametrised over the learners. Adding an algorithm is its module plus one :class:`AlgoSpec`
entry here (:func:`register_algorithm` from user code). Classes are imported on first use, so
this module is light (it imports nothing from ``agents``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.config import TrainConfig


@dataclass(frozen=True)
class AlgoSpec:
    """One trainable algorithm.

    :param module: module that defines the class.
    :param class_name: the class.
    :param kwargs: ``(config, env) -> constructor keywords`` beyond the shared ones (:func:`common_kwargs`).
    :param drop: shared keywords the class does not take (e.g. RLOO has no GAE: ``gae_lambda``).
    :param torchrun: whether the learner runs data parallel under torchrun (:mod:`agents.distributed`).
    :param summary: one line for ``--help`` and the docs.
    """

    module: str
    class_name: str
    kwargs: Callable[[TrainConfig, Any], dict[str, Any]]
    drop: tuple[str, ...] = ()
    torchrun: bool = False
    summary: str = ""

    def load(self) -> type:
        """The algorithm class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.class_name)


def common_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keywords every algorithm takes: rollout, discounting, KL penalty, policy, seed, device."""
    policy_kwargs: dict[str, Any] = {}
    if cfg.model is not None:
        policy_kwargs["model_name_or_path"] = cfg.model
    if cfg.separate_value_model is not None:
        policy_kwargs["separate_value_model"] = cfg.separate_value_model
    if cfg.compile_decode:
        policy_kwargs["compile_decode"] = True
    if cfg.fused_activation is not None:
        policy_kwargs["fused_activation"] = cfg.fused_activation
    policy_kwargs["sampler"] = cfg.sampler
    return dict(
        learning_rate=learning_rate(cfg), n_steps=1, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        normalize_advantage=cfg.normalize_advantage, kl_coef=cfg.kl_coef, adaptive_kl=cfg.adaptive_kl,
        kl_target=cfg.kl_target, kl_horizon=cfg.kl_horizon, policy_kwargs=policy_kwargs, seed=cfg.seed,
        device=cfg.device, verbose=0,
    )


def learning_rate(cfg: TrainConfig) -> float | Callable[[float], float]:
    """``cfg.lr``, or a linear schedule from ``lr`` (first update) to ``lr_final`` (last update)."""
    if cfg.lr_final is None:
        return cfg.lr
    start, end = cfg.lr, cfg.lr_final
    return lambda progress_remaining: end + (start - end) * progress_remaining


def _batch_size(cfg: TrainConfig, env: Any) -> int:
    from agents.env_util import default_batch_size

    return default_batch_size(env, cfg.minibatch_episodes)


def _ppo_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(
        n_epochs=cfg.n_epochs, batch_size=_batch_size(cfg, env), clip_range=cfg.clip_range, clip_range_vf=cfg.clip_range_vf,
        vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
    )


def _token_ppo_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(_ppo_kwargs(cfg, env), minibatch_episodes=cfg.minibatch_episodes, device_rollout=cfg.device_rollout)


def _maskable_ppo_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(_ppo_kwargs(cfg, env), top_k=cfg.top_k, top_p=cfg.top_p)


def _a2c_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm)


def _trpo_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(
        batch_size=_batch_size(cfg, env), target_kl=cfg.trpo_target_kl, cg_max_steps=cfg.trpo_cg_max_steps,
        n_critic_updates=cfg.n_epochs,
    )


def _rloo_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    return dict(ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm, minibatch_episodes=cfg.minibatch_episodes)


REGISTRY: dict[str, AlgoSpec] = {
    "token_ppo": AlgoSpec("agents.token_ppo", "TokenPPO", _token_ppo_kwargs, torchrun=True,
                          summary="PPO with one teacher-forced forward per episode (the default)"),
    "ppo": AlgoSpec("agents.ppo", "PPO", _ppo_kwargs, torchrun=True, summary="SB3 PPO, per-transition update"),
    "a2c": AlgoSpec("agents.a2c", "A2C", _a2c_kwargs, torchrun=True, summary="SB3 A2C"),
    "trpo": AlgoSpec("agents.trpo", "TRPO", _trpo_kwargs, summary="sb3-contrib TRPO"),
    "maskable_ppo": AlgoSpec("agents.maskable_ppo", "MaskablePPO", _maskable_ppo_kwargs, torchrun=True,
                             summary="sb3-contrib MaskablePPO with NLPO top-k / top-p masks"),
    "rloo": AlgoSpec("agents.rloo", "RLOO", _rloo_kwargs, drop=("gae_lambda",),
                     summary="REINFORCE with a per-step leave-one-out baseline, no critic"),
}


def register_algorithm(name: str, spec: AlgoSpec, override: bool = False) -> None:
    """Add a learner from user code: ``spec.module`` must be importable (in worker processes too).

    Raises:
        ValueError: ``name`` is taken and ``override`` is false.
    """
    if name in REGISTRY and not override:
        raise ValueError(f"algorithm {name!r} is already registered: pass override=True to replace it")
    REGISTRY[name] = spec


def algorithm_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    """Every constructor keyword of ``cfg.algo`` from ``cfg`` (env and policy aside)."""
    spec = REGISTRY[cfg.algo]
    common = {k: v for k, v in common_kwargs(cfg).items() if k not in spec.drop}
    return {**common, **spec.kwargs(cfg, env)}
