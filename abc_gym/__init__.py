"""abc_gym: Gymnasium environments for token-level RL on text with Attention Based Credit.

``import abc_gym`` registers the environment ids (see :mod:`abc_gym.registration`) and
stays light: torch, transformers and stable-baselines3 load only when one of the names
below is first used (module ``__getattr__``).

- Envs: :class:`TokenGenerationEnv` (``gym.make``), :class:`TokenGenerationVecEnv`
  (``gym.make_vec``), :class:`TokenGenerationSB3VecEnv` (SB3 ``VecEnv``; needs the
  ``agents`` extra); their keywords: :class:`EnvConfig`.
- Reward model adapter: :class:`RewardModel`.
- Credit (pure tensor functions): :func:`token_rewards`, :func:`abc_credit`,
  :func:`sparse_credit`, :func:`uniform_credit`, :func:`oracle_credit`,
  :func:`redistribute`, :data:`REWARD_MODES`.
- Credit registry (bring your own scheme, docs/extending.md): :func:`register_credit`,
  :func:`unregister_credit`, :func:`credit_scheme`, :func:`reward_modes`,
  :class:`CreditScheme`, :data:`credit_registry`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from abc_gym.registration import ENV_IDS, register_envs

register_envs()

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY: dict[str, str] = {
    "TokenGenerationEnv": "abc_gym.env",
    "TokenGenerationVecEnv": "abc_gym.vector_env",
    "TokenGenerationSB3VecEnv": "abc_gym.sb3_vec_env",
    "EnvConfig": "abc_gym.config",
    "RewardModel": "abc_gym.reward_model",
    "resolve_device": "abc_gym.device",
    "REWARD_MODES": "abc_gym.credit",
    "token_rewards": "abc_gym.credit",
    "abc_credit": "abc_gym.credit",
    "sparse_credit": "abc_gym.credit",
    "uniform_credit": "abc_gym.credit",
    "oracle_credit": "abc_gym.credit",
    "redistribute": "abc_gym.credit",
    "CreditScheme": "abc_gym.credit",
    "credit_registry": "abc_gym.credit",
    "credit_scheme": "abc_gym.credit",
    "register_credit": "abc_gym.credit",
    "reward_modes": "abc_gym.credit",
    "unregister_credit": "abc_gym.credit",
}

__all__ = [
    "ENV_IDS",
    "REWARD_MODES",
    "CreditScheme",
    "EnvConfig",
    "RewardModel",
    "TokenGenerationEnv",
    "TokenGenerationSB3VecEnv",
    "TokenGenerationVecEnv",
    "__version__",
    "abc_credit",
    "credit_registry",
    "credit_scheme",
    "oracle_credit",
    "redistribute",
    "register_credit",
    "register_envs",
    "resolve_device",
    "reward_modes",
    "sparse_credit",
    "token_rewards",
    "uniform_credit",
    "unregister_credit",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from abc_gym.config import EnvConfig
    from abc_gym.credit import (
        REWARD_MODES,
        CreditScheme,
        abc_credit,
        credit_registry,
        credit_scheme,
        oracle_credit,
        redistribute,
        register_credit,
        reward_modes,
        sparse_credit,
        token_rewards,
        uniform_credit,
        unregister_credit,
    )
    from abc_gym.device import resolve_device
    from abc_gym.env import TokenGenerationEnv
    from abc_gym.reward_model import RewardModel
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv
    from abc_gym.vector_env import TokenGenerationVecEnv


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'abc_gym' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    if name != "REWARD_MODES":  # computed from the credit registry on each access, so never cached
        globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
_LAZY.update(CreditWriteback="abc_gym.writeback", write_back_credit="abc_gym.writeback", episode_token_rewards="abc_gym.infos", unpad_episode="abc_gym.infos")  # credit for any learner (issue 20)
_LAZY.update(token_level_rewards="abc_gym.batch_credit")  # the env's credit for a padded batch, for RLHF engines (issue 20)
