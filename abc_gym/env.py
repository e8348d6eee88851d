"""``TokenGenerationEnv``: one generated token per action, reward-model score credited per token.

Reward contract (see README): non-final steps return 0.0; the final step returns the
episode total, which equals the reward model's score R in every mode; the final step's
``info`` carries ``token_rewards`` (the credit per generated token under the chosen mode,
padded with zeros to ``(max_new_tokens,)``), ``num_tokens`` (T, the completion's length),
``score`` (R), ``text`` (the completion) and, on tasks with a gold scorer, ``gold_score``.
Learners that want dense rewards write ``token_rewards[:num_tokens]`` back over the
episode's steps (:func:`abc_gym.infos.episode_token_rewards`, :mod:`abc_gym.writeback`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import UnsupportedMode

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


class FixedShape:
    """The two settings that fix the observation and info shapes, read-only on every front end
    (the single env, the gymnasium vector env, the SB3 VecEnv): assigning one raises instead of
    being a silent no-op. Needs ``self.episodes`` (the engine)."""

    episodes: Any

    @property
    def max_new_tokens(self) -> int:
        """Longest completion; fixes the observation and info shapes, so it cannot change after construction."""
        return self.episodes.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: Any) -> None:
        fixed_setting_error("max_new_tokens", value, self.episodes.max_new_tokens)

    @property
    def max_prompt_tokens(self) -> int:
        """Room for the prompt in the observation; fixed like :attr:`max_new_tokens`."""
        return self.episodes.max_prompt_tokens

    @max_prompt_tokens.setter
    def max_prompt_tokens(self, value: Any) -> None:
        fixed_setting_error("max_prompt_tokens", value, self.episodes.max_prompt_tokens)


class TokenGenerationEnv(FixedShape, gym.Env):
    """Generate a completion one token at a time; the reward model scores it at the end.

    ## Action Space
    ``Discrete(len(tokenizer))``: the next token id of the policy's tokenizer.

    ## Observation Space
    ``{"input_ids": (L,) int64, "attention_mask": (L,) int64}`` with
    ``L = max_prompt_tokens + max_new_tokens`` (prompt, then generated tokens, then padding).

    ## Rewards
    0.0 on every step but the last; the last returns R, the reward model's score of the
    completion (in every ``reward_mode``). The final step's ``info``:

    - ``token_rewards``: ``(max_new_tokens,)`` float64, the credit of token t at ``[t]`` for
      ``t < num_tokens`` and 0.0 after, so ``token_rewards.sum() == R``;
    - ``num_tokens``: ``np.int64`` T, the completion's length;
    - ``completion_ids``: ``(max_new_tokens,)`` int64, the T actions then ``-1``;
    - ``attention`` (ABC weights), ``gold_credit`` and ``prefix_scores`` (RED), when computed:
      ``(max_new_tokens,)`` float64, zero-padded like ``token_rewards``;
    - ``score`` (R) and ``gold_score``: ``np.float64``; ``text``, ``prompt``, ``reward_mode``: str;
      ``abc_sparse_fallback`` / ``gold_credit_uniform_fallback``: ``np.bool_``.

    One fixed shape per key is what lets gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv``
    and TorchRL stack episodes of different lengths. Read the unpadded credit with
    :func:`abc_gym.infos.episode_token_rewards` (or :func:`~abc_gym.infos.unpad_episode`).
    Every step's info has ``prompt_length`` and ``generated`` (``np.int64``).

    ## Starting State
    A prompt drawn with the env's seed and a target length drawn from
    ``[min_new_tokens, max_new_tokens]``.

    ## Episode End
    ``terminated`` at EOS (when ``eos_ends_episode``) or at the drawn length; never truncated.

    ## Arguments
    policy, reward_model, prompts: positional or keyword; these and every other keyword
    (``reward_mode``, ``beta``, ``min_new_tokens``, ``max_new_tokens``,
    ``max_prompt_tokens``, ``eos_ends_episode``, ``gold_scorer``, ``gold_credit``,
    ``record_attention``, ``record_gold_credit``, ``reward_model_kwargs``, ``device``, ``reward_device``) are the
    fields of :class:`~abc_gym.config.EnvConfig`, documented there and checked before any
    model is loaded; an unknown keyword is Python's ``TypeError: ... got an unexpected
    keyword argument``. ``render_mode``: ``None`` or ``"ansi"``; another string is accepted
    as gymnasium does (``gym.make`` warns) and :meth:`render` then raises ``UnsupportedMode``.

    ## Version History
    - v0: per-token info arrays padded to ``max_new_tokens`` with ``num_tokens``.

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
    record_gold_credit = EpisodeSetting()

    def __init__(
        self, policy: Any = None, reward_model: Any = None, prompts: Any = None, *, render_mode: str | None = None, **settings: Any
    ) -> None:
        check_render_mode(render_mode)
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
        actions = self.episodes.validate_actions(action, scalar_ok=True)
        rewards, terminated = self.episodes.step(actions)
        info = self._info()
        if 0 in self.episodes.last_finished:
            info.update(self.episodes.last_finished[0].as_info(self.reward_mode, self.episodes.max_new_tokens))
        self._last_info = info
        return self._obs(), float(rewards[0]), bool(terminated[0]), False, info

    def action_masks(self) -> np.ndarray:
        """``(V,)`` bool for MaskablePPO: EOS is masked until ``min_new_tokens`` tokens exist."""
        return self.episodes.action_masks()[0]

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        if self.render_mode != "ansi":
            raise UnsupportedMode(
                f"render_mode={self.render_mode!r} is not supported by {type(self).__name__}: make the env with "
                "render_mode='ansi' (a text view of the completion and its credit) or render_mode=None"
            )
        e = self.episodes
        p, g = int(e.prompt_len[0]), int(e.gen_len[0])
        ids = e.input_ids[0, : p + g].tolist()
        return render_ansi(self.tokenizer, ids[:p], ids[p:], self._last_info)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.episodes.observation().items()}

    def _info(self) -> dict[str, Any]:
        return {"prompt_length": np.int64(self.episodes.prompt_len[0]), "generated": np.int64(self.episodes.gen_len[0])}


def check_render_mode(render_mode: Any) -> None:
    """``None`` or a string; a string other than ``"ansi"`` is accepted as gymnasium's convention has it
    (``gym.make`` warns, ``render()`` raises), so SB3's ``make_vec_env`` (which passes ``"rgb_array"``) works."""
    if render_mode is not None and not isinstance(render_mode, str):
        raise TypeError(f"render_mode must be None or 'ansi', got {render_mode!r} ({type(render_mode).__name__}): pass render_mode='ansi' for a text view, or leave it out")


def fixed_setting_error(name: str, value: Any, current: int) -> None:
    """Raise: ``name`` fixes the observation length, so assigning it would be a silent no-op."""
    raise AttributeError(
        f"{name}={value!r}: {name} (now {current}) fixes the observation and info shapes and cannot change after "
        f"the env is built; make a new env with gym.make(id, {name}={value!r})"
    )
