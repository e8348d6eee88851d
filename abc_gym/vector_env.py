"""Batched token-generation env: N sequences stepped as one torch batch on one device.

Exposed through gymnasium's ``make_vec`` (the registered ids' ``vector_entry_point``).
Autoreset is gymnasium's SAME_STEP mode (``env.autoreset_mode``): a finished row is reset
inside the step that finished it; its last observation is ``info["final_obs"][i]`` and its
final-step info (``token_rewards``, ``num_tokens``, ``score``, ``text``, ...) is row ``i`` of
``info["final_info"]`` with the ``_key`` masks gymnasium uses. Per-token arrays are stacked
``(num_envs, max_new_tokens)`` (zero-padded past ``num_tokens``, see :mod:`abc_gym.infos`),
scalars ``(num_envs,)`` typed arrays, strings object arrays: the layout gymnasium's own
``SyncVectorEnv`` gives over ``gym.make`` envs. Row ``i`` seeded with ``seed + i`` draws
exactly the prompts and lengths of a single :class:`~abc_gym.env.TokenGenerationEnv`
seeded with ``seed + i``.

NEXT_STEP autoreset is not offered here: the batch appends one token to every row in one
tensor operation, so a finished row cannot sit out the next step as NEXT_STEP requires.
``gym.make_vec(id, n, vectorization_mode="sync", vector_kwargs={"autoreset_mode":
AutoresetMode.NEXT_STEP})`` gives NEXT_STEP (and DISABLED) over single envs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from abc_gym.config import EnvConfig
from abc_gym.core import EpisodeSetting, TokenEpisodes
from abc_gym.env import FixedShape, check_render_mode, observation_space
from abc_gym.validation import check_int


def build_batched(num_envs: Any, render_mode: str | None, **kwargs: Any) -> tuple[int, EnvConfig, TokenEpisodes]:
    """Checked ``num_envs``, the :class:`EnvConfig` of ``kwargs`` and its engine of ``num_envs`` rows.

    Shared by both batched front ends (gymnasium's and SB3's).
    """
    check_render_mode(render_mode)
    if render_mode is not None:
        raise ValueError("the batched env does not render; use TokenGenerationEnv with render_mode='ansi'")
    num_envs = check_int("num_envs", num_envs, low=1)
    config = EnvConfig.from_kwargs(**kwargs)
    return num_envs, config, config.build(num_envs)


def row_generators(num_rows: int, seed: int | Sequence[int | None] | None) -> list[np.random.Generator]:
    """One generator per row, as gymnasium seeds sub-envs: ``seed + i`` (or an explicit list)."""
    if seed is None or isinstance(seed, (int, np.integer)):
        seeds = [None if seed is None else int(seed) + i for i in range(num_rows)]
    else:
        seeds = list(seed)
        if len(seeds) != num_rows:
            raise ValueError(f"got {len(seeds)} seeds for {num_rows} envs")
    return [seeding.np_random(s)[0] for s in seeds]


def batch_infos(infos: Sequence[dict[str, Any] | None], num_envs: int) -> dict[str, Any]:
    """Gymnasium's vector info layout: ``info[key][i]`` with a bool mask ``info["_key"]``.

    As gymnasium's ``VectorEnv._add_info`` lays them out: scalars become ``(num_envs,)`` typed
    arrays (bools ``bool``), arrays ``(num_envs, *shape)`` arrays (per-token arrays share one
    shape, see :mod:`abc_gym.infos`), anything else (strings) ``(num_envs,)`` object arrays.
    """
    out: dict[str, Any] = {}
    for i, info in enumerate(infos):
        if not info:
            continue
        for key, value in info.items():
            if key not in out:
                if isinstance(value, (bool, np.bool_)):
                    out[key] = np.zeros(num_envs, dtype=bool)
                elif isinstance(value, (int, float, np.number)):
                    out[key] = np.zeros(num_envs, dtype=type(value))
                elif isinstance(value, np.ndarray):
                    out[key] = np.zeros((num_envs, *value.shape), dtype=value.dtype)
                else:
                    out[key] = np.full(num_envs, None, dtype=object)
                out[f"_{key}"] = np.zeros(num_envs, dtype=bool)
            out[key][i] = value
            out[f"_{key}"][i] = True
    return out


def check_autoreset_mode(mode: Any) -> AutoresetMode:
    """SAME_STEP (the default, ``None``); NEXT_STEP / DISABLED are refused with the reason and the alternative."""
    if mode is None:
        return AutoresetMode.SAME_STEP
    try:
        mode = AutoresetMode(mode)
    except ValueError as err:
        raise ValueError(
            f"autoreset_mode={mode!r} is not a gymnasium AutoresetMode: use one of {[m.value for m in AutoresetMode]}"
        ) from err
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(
            f"autoreset_mode={mode} is not offered by the batched env: it appends one token to every row in one "
            "tensor operation, so a finished row cannot sit out a step. Use autoreset_mode=AutoresetMode.SAME_STEP "
            f"(the default), or gym.make_vec(id, num_envs, vectorization_mode='sync', vector_kwargs={{'autoreset_mode': "
            f"AutoresetMode.{mode.name}}}) for {mode.name} over single envs"
        )
    return mode


class TokenGenerationVecEnv(FixedShape, VectorEnv):
    """``num_envs`` token-generation episodes held as one torch batch (see module doc).

    Takes ``num_envs``, ``autoreset_mode`` (SAME_STEP only, see module doc) and the keywords of :class:`~abc_gym.config.EnvConfig` (the same as
    :class:`~abc_gym.env.TokenGenerationEnv`). ``device="auto"`` puts the batch and the
    reward model on ``cuda`` when available. :attr:`episodes` is the underlying
    :class:`~abc_gym.core.TokenEpisodes`, for learners that want torch tensors without a
    numpy round trip. :attr:`policy_name_or_path` is the policy's path or hub id, or
    ``None`` when a tokenizer object was passed as ``policy``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    # Settings that may change between episodes, validated when assigned (see core.SETTABLE).
    reward_mode = EpisodeSetting()
    beta = EpisodeSetting()
    min_new_tokens = EpisodeSetting()
    eos_ends_episode = EpisodeSetting()
    record_attention = EpisodeSetting()
    record_gold_credit = EpisodeSetting()

    def __init__(
        self,
        num_envs: int = 1,
        policy: Any = None,
        reward_model: Any = None,
        prompts: Any = None,
        *,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str | None = None,
        **settings: Any,
    ) -> None:
        self.autoreset_mode = check_autoreset_mode(autoreset_mode)  # the attribute gymnasium 1.x vector envs expose
        num_envs, self.config, self.episodes = build_batched(
            num_envs, render_mode, policy=policy, reward_model=reward_model, prompts=prompts, **settings
        )
        self.policy_name_or_path = self.config.policy_name_or_path
        self.num_envs = num_envs
        self.single_observation_space = observation_space(self.episodes)
        self.single_action_space = spaces.Discrete(self.episodes.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self._rngs = row_generators(num_envs, None)

    @property
    def tokenizer(self):
        return self.episodes.tokenizer

    @property
    def reward_model(self):
        return self.episodes.reward_model

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        if seed is not None or not hasattr(self, "_seeded"):
            self._rngs = row_generators(self.num_envs, seed)
            self._seeded = True
            if seed is not None:
                self.action_space.seed(seed if isinstance(seed, int) else None)
        self.episodes.reset_rows(range(self.num_envs), self._rngs)
        return self.episodes.observation(), self._step_info()

    def step(self, actions: Any):
        """``actions``: ``(num_envs,)`` integer token ids (numpy, list or torch); anything else is refused."""
        result = self.episodes.step_autoreset(actions, self._rngs)
        infos = self._step_info()
        if result.finished:
            final_obs = np.full(self.num_envs, None, dtype=object)
            for j, row in enumerate(result.finished):
                final_obs[row] = {k: v[j] for k, v in result.final_obs.items()}
            infos["final_obs"] = final_obs
            infos["_final_obs"] = result.terminated.copy()
            infos["final_info"] = batch_infos([result.final_infos.get(i) for i in range(self.num_envs)], self.num_envs)
            infos["_final_info"] = result.terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self.episodes.observation(), result.rewards, result.terminated, truncated, infos

    def set_attr(self, name: str, value: Any) -> None:
        """Change a setting of every row (validated now, not when an episode ends); see ``core.SETTABLE``."""
        self.episodes.set_setting(name, value)

    def action_masks(self) -> np.ndarray:
        """``(N, V)`` bool (EOS masked before ``min_new_tokens``)."""
        return self.episodes.action_masks()

    def _step_info(self) -> dict[str, Any]:
        # copies: a CPU tensor's numpy view would change under callers that keep infos (rollout buffers)
        return {
            "prompt_length": self.episodes.prompt_len.cpu().numpy().copy(),
            "generated": self.episodes.gen_len.cpu().numpy().copy(),
        }
