"""The algorithm registry: name -> class and the constructor keywords a ``TrainConfig`` gives it.

``build_model`` in :mod:`agents.train` looks the algorithm up here; adding an algorithm is
one :class:`AlgoSpec` entry. Classes are imported on first use, so this module is light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.config import TrainConfig


@dataclass(frozen=True)
class AlgoSpec:
    """One trainable algorithm.

    :param module: module that defines the class.
    :param class_name: the class.
    :param kwargs: ``(config, env) -> constructor keywords`` beyond the shared ones (:func:`common_kwargs`).
    """

    module: str
    class_name: str
    kwargs: Callable[[TrainConfig, Any], dict[str, Any]]

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
    if cfg.sampler != "multinomial":
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


REGISTRY: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec("agents.ppo", "PPO", _ppo_kwargs),
    "a2c": AlgoSpec("agents.a2c", "A2C", _a2c_kwargs),
    "trpo": AlgoSpec("agents.trpo", "TRPO", _trpo_kwargs),
    "maskable_ppo": AlgoSpec("agents.maskable_ppo", "MaskablePPO", _maskable_ppo_kwargs),
    "token_ppo": AlgoSpec("agents.token_ppo", "TokenPPO", _token_ppo_kwargs),
}


def algorithm_kwargs(cfg: TrainConfig, env: Any) -> dict[str, Any]:
    """Every constructor keyword of ``cfg.algo`` from ``cfg`` (env and policy aside)."""
    return {**common_kwargs(cfg), **REGISTRY[cfg.algo].kwargs(cfg, env)}
