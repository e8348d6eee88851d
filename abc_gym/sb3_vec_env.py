"""The batched token env as a Stable-Baselines3 ``VecEnv``.

Needs ``stable-baselines3`` (``pip install "abc_gym[agents]"``); ``import abc_gym`` does
not import it. SB3 conventions: ``dones`` is terminated or truncated, a finished row is
reset inside ``step_wait`` and its last observation is ``infos[i]["terminal_observation"]``;
its final-step info (``token_rewards``, ``num_tokens``, ``score``, ``text``, ...) is the rest of
``infos[i]``, per-token arrays padded to ``max_new_tokens`` as in every front end (:mod:`abc_gym.infos`).
Wrap in SB3's ``VecMonitor`` for episode statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError('abc_gym.sb3_vec_env needs stable-baselines3: pip install "abc_gym[agents]"') from err

from abc_gym.env import FixedShape, observation_space
from abc_gym.vector_env import build_batched, row_generators


class TokenGenerationSB3VecEnv(FixedShape, VecEnv):
    """``num_envs`` token-generation episodes as one SB3 ``VecEnv`` (one torch batch).

    Takes ``num_envs`` and the keywords of :class:`~abc_gym.config.EnvConfig` (the same as
    :class:`~abc_gym.env.TokenGenerationEnv`). Row ``i`` is seeded with ``seed + i``
    (SB3's convention), so it matches a single env seeded with ``seed + i``.
    :attr:`policy_name_or_path` is the policy's path or hub id, or ``None`` when a
    tokenizer object was passed as ``policy``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        policy: Any = None,
        reward_model: Any = None,
        prompts: Any = None,
        *,
        render_mode: str | None = None,
        **settings: Any,
    ) -> None:
        from gymnasium import spaces

        num_envs, self.config, self.episodes = build_batched(
            num_envs, render_mode, policy=policy, reward_model=reward_model, prompts=prompts, **settings
        )
        self.policy_name_or_path = self.config.policy_name_or_path
        self.render_mode = None
        super().__init__(num_envs, observation_space(self.episodes), spaces.Discrete(self.episodes.vocab_size))
        self._rngs = row_generators(num_envs, None)
        self._actions: Any = None

    @classmethod
    def from_env_id(cls, env_id: str, num_envs: int = 1, **overrides: Any) -> TokenGenerationSB3VecEnv:
        """Build from a registered id (``"abc_gym/Sentiment-v0"``) with its registered kwargs."""
        import gymnasium as gym

        spec = gym.spec(env_id)
        return cls(num_envs, **{**spec.kwargs, **overrides})

    @property
    def tokenizer(self):
        return self.episodes.tokenizer

    def reset(self) -> dict[str, np.ndarray]:
        if any(s is not None for s in self._seeds) or not hasattr(self, "_seeded"):
            self._rngs = row_generators(self.num_envs, self._seeds)
            self._seeded = True
        self._reset_seeds()
        self.episodes.reset_rows(range(self.num_envs), self._rngs)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.episodes.observation()

    def step_async(self, actions: np.ndarray) -> None:
        """``actions``: ``(num_envs,)`` integer token ids; anything else is refused here, before stepping."""
        self._actions = self.episodes.validate_actions(actions)

    def step_wait(self):
        actions, self._actions = self._actions, None
        if actions is None:
            raise RuntimeError("step_wait() without step_async(actions): call step(actions)")
        rewards, dones, infos = self.step_tokens(actions)
        return self.episodes.observation(), rewards, dones, infos

    def step_tokens(self, actions: Any) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One step of every row without building the numpy observation: what ``step_wait`` does,
        for a caller that reads the engine's own tensors (``self.episodes.input_ids`` /
        ``attention_mask``, on its device) instead, e.g. a device-resident rollout.

        Args:
            actions: ``(num_envs,)`` token ids, a numpy array or a tensor on any device (not copied
                to the host).
        Returns:
            rewards ``(num_envs,)`` float32, dones ``(num_envs,)`` bool and SB3 infos (the final rows'
            with ``terminal_observation``).
        """
        result = self.episodes.step_autoreset(actions, self._rngs)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for j, row in enumerate(result.finished):
            infos[row] = result.final_infos[row]
            infos[row]["terminal_observation"] = {k: v[j] for k, v in result.final_obs.items()}
            infos[row]["TimeLimit.truncated"] = False
        return result.rewards.astype(np.float32), result.terminated, infos

    def close(self) -> None:
        pass

    def action_masks(self) -> np.ndarray:
        """``(N, V)`` bool (EOS masked before ``min_new_tokens``)."""
        return self.episodes.action_masks()

    # SB3's VecEnv API for attribute access: every row shares the one engine.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        target = self if hasattr(self, attr_name) else self.episodes
        return [getattr(target, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Change a setting of every row, validated now (see ``core.SETTABLE``); rows share one engine."""
        rows = sorted(self._get_indices(indices))
        if rows != list(range(self.num_envs)):
            raise ValueError(
                f"set_attr({attr_name!r}) on rows {rows}: the {self.num_envs} rows share one engine, so a setting "
                "applies to all of them (indices=None)"
            )
        self.episodes.set_setting(attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        rows = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in rows]
        result = getattr(self.episodes, method_name)(*method_args, **method_kwargs)
        return [result] * len(rows)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
