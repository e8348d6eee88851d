"""``TokenGenerationEnv``: one generated token per action, reward-model score credited per token.

Reward contract (see README): non-final steps return 0.0; the final step returns the
episode total, which equals the reward model's score R in every mode; the final step's
``info`` carries ``token_rewards`` (one float per generated token under the chosen
mode), ``score`` (R), ``text`` (the completion) and, on tasks with a gold scorer,
``gold_score``. Learners that want dense rewards write ``token_rewards`` back over the
episode's steps.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from abc_gym.config import EnvConfig
from abc_gym.core import EpisodeSetting, TokenEpisodes
from abc_gym.render import render_ansi


def observation_space(episodes: TokenEpisodes) -> spaces.Dict:
    """Token ids and their mask, fixed length ``L``, integer dtype."""
    length = episodes.seq_len
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, episodes.vocab_size - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
        }
    )


class TokenGenerationEnv(gym.Env):
    """Generate a completion one token at a time; the reward model scores it at the end.

    Observation: ``{"input_ids": (L,) int64, "attention_mask": (L,) int64}`` with
    ``L = max_prompt_tokens + max_new_tokens`` (prompt, then generated tokens, then padding).
    Action: ``Discrete(len(tokenizer))``, the next token id.
    Episode: starts from a prompt drawn with the env's seed; ends (``terminated``) at EOS
    or after a length drawn from ``[min_new_tokens, max_new_tokens]``.

    Args:
        policy, reward_model, prompts: positional or keyword; these and every other keyword
            (``reward_mode``, ``beta``, ``min_new_tokens``, ``max_new_tokens``,
            ``max_prompt_tokens``, ``eos_ends_episode``, ``gold_scorer``, ``gold_credit``,
            ``record_attention``, ``reward_model_kwargs``, ``device``) are the fields of
            :class:`~abc_gym.config.EnvConfig`, documented there and checked before any
            model is loaded.
        render_mode: ``None`` or ``"ansi"``.

    :attr:`policy_name_or_path` is the policy's path or hub id, or ``None`` when a tokenizer
    object was passed as ``policy``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    # Settings that may change between episodes, validated when assigned (see core.SETTABLE).
    reward_mode = EpisodeSetting()
    beta = EpisodeSetting()
    min_new_tokens = EpisodeSetting()
    eos_ends_episode = EpisodeSetting()
    record_attention = EpisodeSetting()

    def __init__(
        self, policy: Any = None, reward_model: Any = None, prompts: Any = None, *, render_mode: str | None = None, **settings: Any
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.config = EnvConfig.from_kwargs(policy=policy, reward_model=reward_model, prompts=prompts, **settings)
        self.episodes = self.config.build(1)
        self.policy_name_or_path = self.config.policy_name_or_path
        self.tokenizer = self.episodes.tokenizer
        self.reward_model = self.episodes.reward_model
        self.observation_space = observation_space(self.episodes)
        self.action_space = spaces.Discrete(self.episodes.vocab_size)
        self.render_mode = render_mode
        self._last_info: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.episodes.reset_rows([0], [self.np_random])
        self._last_info = {}
        return self._obs(), self._info()

    def step(self, action: int):
        if bool(self.episodes.done[0]):
            raise RuntimeError("the episode has ended: call reset() before step()")
        actions = self.episodes.validate_actions(action, scalar_ok=True)
        rewards, terminated = self.episodes.step(actions)
        info = self._info()
        if 0 in self.episodes.last_finished:
            info.update(self.episodes.last_finished[0].as_info(self.reward_mode))
        self._last_info = info
        return self._obs(), float(rewards[0]), bool(terminated[0]), False, info

    def action_masks(self) -> np.ndarray:
        """``(V,)`` bool for MaskablePPO: EOS is masked until ``min_new_tokens`` tokens exist."""
        return self.episodes.action_masks()[0]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        e = self.episodes
        p, g = int(e.prompt_len[0]), int(e.gen_len[0])
        ids = e.input_ids[0, : p + g].tolist()
        return render_ansi(self.tokenizer, ids[:p], ids[p:], self._last_info)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.episodes.observation().items()}

    def _info(self) -> dict[str, Any]:
        return {"prompt_length": int(self.episodes.prompt_len[0]), "generated": int(self.episodes.gen_len[0])}
