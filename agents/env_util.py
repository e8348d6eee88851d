"""The env side of the agents: build a batched token env, check one, find its policy model."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.vec_env import VecEnv

from agents.config import DEFAULTS, check_device
from agents.policy import check_token_spaces


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU: abc_gym's one device rule, with the CLI's flag in errors."""
    from abc_gym.device import resolve_device as abc_gym_resolve_device

    check_device(str(device))
    return abc_gym_resolve_device(device)


def make_token_vec_env(
    env_id: str,
    num_envs: int = DEFAULTS.episodes_per_update,
    reward_mode: str = DEFAULTS.reward_mode,
    beta: float = DEFAULTS.beta,
    device: str = DEFAULTS.device,
    seed: int | None = None,
    **kwargs: Any,
) -> VecEnv:
    """A registered abc_gym id as one batched SB3 ``VecEnv`` (rows seeded ``seed + i``).

    :param env_id: a registered id, e.g. ``"abc_gym/Sentiment-v0"``.
    :param num_envs: rows of the batch (one episode each per rollout with ``n_steps=1``).
    :param reward_mode: the env's credit mode (``abc``, ``red``, ``sparse``, ``uniform``, ``oracle``).
    :param beta: ABC mix.
    :param device: where the env's batch and reward model live (``"auto"``: CUDA when available).
    :param seed: row ``i`` is seeded ``seed + i``; ``None``: unseeded.
    :param kwargs: further ``gym.make`` keywords of the id (``min_new_tokens``, ...).
    """
    import abc_gym  # noqa: F401  (registers the ids)
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    if env_id not in gym.registry:
        known = ", ".join(k for k in gym.registry if k.startswith("abc_gym/"))
        raise ValueError(f"unknown env id {env_id!r}: use one of {known}")
    dev = str(resolve_device(device))
    env = TokenGenerationSB3VecEnv.from_env_id(env_id, num_envs=num_envs, reward_mode=reward_mode, beta=beta, device=dev, **kwargs)
    if seed is not None:
        env.seed(seed)
    return env


def check_token_env(env: Any) -> None:
    """Refuse anything that is not an abc_gym-style token env, naming the fix."""
    if isinstance(env, gym.vector.VectorEnv):
        raise ValueError(
            "got a gymnasium VectorEnv (gym.make_vec); SB3 needs its own VecEnv: use "
            "abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv.from_env_id(env_id, num_envs=N) or pass the env id string"
        )
    if not hasattr(env, "observation_space") or not hasattr(env, "action_space"):
        raise ValueError(f"expected a token env or an env id string, got {type(env).__name__}")
    check_token_spaces(env.observation_space, env.action_space)


def env_policy_path(env: Any) -> str | None:
    """The env's own policy model (``policy_name_or_path``) as a path string, or ``None`` if it has none.

    An env built from a tokenizer object (not a model path) has no model to load: that is an
    error naming ``policy_kwargs=dict(model_name_or_path=...)``, never ``str(tokenizer)``.
    """
    try:
        if isinstance(env, VecEnv):
            path = env.get_attr("policy_name_or_path")[0]
        else:
            path = env.get_wrapper_attr("policy_name_or_path")
    except (AttributeError, KeyError):
        return None
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"the env's policy_name_or_path is a {type(path).__name__}, not a model path: pass "
            "policy_kwargs=dict(model_name_or_path=...) with a causal LM that uses the env's tokenizer"
        )
    return os.fspath(path)


def mean_episode_len(env: Any, fallback: float = 10.0) -> float:
    """Mean completion length of a token env, ``(min_new_tokens + max_new_tokens) / 2``."""
    try:
        if isinstance(env, VecEnv):
            lo, hi = env.get_attr("min_new_tokens")[0], env.get_attr("max_new_tokens")[0]
        else:
            lo, hi = env.get_wrapper_attr("min_new_tokens"), env.get_wrapper_attr("max_new_tokens")
        return (lo + hi) / 2.0
    except (AttributeError, KeyError):
        return fallback


def default_batch_size(env: Any, minibatch_episodes: int = DEFAULTS.minibatch_episodes) -> int:
    """SB3 minibatches count transitions: ``minibatch_episodes`` completions' worth of steps (>= 2)."""
    return max(2, round(minibatch_episodes * mean_episode_len(env)))
