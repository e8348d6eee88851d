"""Credit-aware RL agents for the abc_gym token envs (see docs/agents.md).

SB3-style API, imported on first use so that ``import agents`` stays light (no torch, no SB3)::

    from agents import PPO, A2C, TRPO, MaskablePPO, TokenPPO, RLOO, TransformerActorCriticPolicy, TrainConfig, train

``train`` is a plain function (:func:`agents.training.train`); the CLI is ``python -m agents``.

Modules: ``config`` (TrainConfig, the defaults), ``registry`` (algorithm name -> class and
kwargs), ``ppo`` / ``a2c`` / ``trpo`` / ``maskable_ppo`` / ``token_ppo`` (one algorithm each),
``credit_mixin`` (rollouts with credit write-back), ``buffers``, ``kl``, ``metrics``,
``policy`` (TransformerActorCriticPolicy, RowKVCache), ``env_util`` (env factory and checks),
``compat`` (upstream internals), ``training`` (``train(config)``), ``cli`` (``python -m agents``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PPO": "agents.ppo",
    "A2C": "agents.a2c",
    "TRPO": "agents.trpo",
    "MaskablePPO": "agents.maskable_ppo",
    "TokenPPO": "agents.token_ppo",
    "TransformerActorCriticPolicy": "agents.policy",
    "MaskableTransformerActorCriticPolicy": "agents.policy",
    "TrainConfig": "agents.config",
    "train": "agents.training",
    "RLOO": "agents.rloo",
    "make_token_vec_env": "agents.env_util",
}

__all__ = [*_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
