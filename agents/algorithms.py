"""Backward-compatible re-exports: the algorithms now live one per module.

``agents.ppo.PPO``, ``agents.a2c.A2C``, ``agents.trpo.TRPO``, ``agents.maskable_ppo.MaskablePPO``,
``agents.token_ppo.TokenPPO``; the mixin in :mod:`agents.credit_mixin`, the env factory in
:mod:`agents.env_util`. :data:`ALGORITHMS` maps the per-transition algorithms' names to classes
(the training registry, with TokenPPO and the kwargs built from ``TrainConfig``, is
:data:`agents.registry.REGISTRY`).
"""

from __future__ import annotations

from agents.a2c import A2C
from agents.credit_mixin import TOKEN_POLICY_ALIASES, CreditAssignmentMixin
from agents.env_util import check_token_env, env_policy_path, make_token_vec_env
from agents.maskable_ppo import MaskablePPO, nlpo_mask
from agents.ppo import PPO
from agents.trpo import TRPO

ALGORITHMS: dict[str, type] = {"ppo": PPO, "a2c": A2C, "trpo": TRPO, "maskable_ppo": MaskablePPO}

__all__ = [
    "A2C", "ALGORITHMS", "MaskablePPO", "PPO", "TOKEN_POLICY_ALIASES", "TRPO", "CreditAssignmentMixin",
    "check_token_env", "env_policy_path", "make_token_vec_env", "nlpo_mask",
]
