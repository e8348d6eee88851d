"""``TokenGenerationEnv``: one generated token per action, reward-model score credited per token.

Reward contract (see README): non-final steps return 0.0; the final step returns the
episode total, which equals the reward model's score R in every mode; the final step's
``info`` carries ``token_rewards`` (one float per generated token under the chosen
mode), ``score`` (R), ``text`` (the completion) and, on tasks with a gold scorer,
``gold_score``. Learners that want dense rewards write ``token_rewards`` back over the
episode's steps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from abc_gym.core import GoldCredit, GoldScorer, TokenEpisodes, load_prompt_list, resolve_device
from abc_gym.hub import load_pretrained
from abc_gym.render import render_ansi
from abc_gym.reward_model import RewardModel

RewardModelSpec = str | os.PathLike | RewardModel | Callable[..., RewardModel]


def build_episodes(
    policy: str | os.PathLike | PreTrainedTokenizerBase,
    reward_model: RewardModelSpec,
    prompts: Sequence[str] | str | os.PathLike,
    num_rows: int,
    *,
    device: str | torch.device = "auto",
    reward_model_kwargs: dict[str, Any] | None = None,
    **episode_kwargs: Any,
) -> TokenEpisodes:
    """Load the policy's tokenizer and the reward model, and build the batched engine.

    Args:
        policy: path or hub id of the policy (only its tokenizer is loaded here), or a tokenizer.
        reward_model: path / hub id, a :class:`RewardModel`, or a factory
            ``f(policy_tokenizer, device) -> RewardModel``.
        prompts: list of strings, a ``.json`` / ``.txt`` file, or ``f(tokenizer) -> list[str]``.
        num_rows: number of parallel episodes.
    """
    if policy is None or reward_model is None:
        raise TypeError("TokenGeneration needs policy= (path or hub id) and reward_model= (path, hub id or RewardModel)")
    dev = resolve_device(device)
    tokenizer = policy if isinstance(policy, PreTrainedTokenizerBase) else load_pretrained(AutoTokenizer, policy)
    if isinstance(reward_model, RewardModel):
        rm = reward_model
    elif callable(reward_model) and not isinstance(reward_model, (str, os.PathLike)):
        rm = reward_model(tokenizer, dev)
    else:
        rm = RewardModel.from_pretrained(reward_model, tokenizer, device=dev, **(reward_model_kwargs or {}))
    if callable(prompts):
        prompts = prompts(tokenizer)  # e.g. a task's loader that cuts prompts with the policy's tokenizer
    return TokenEpisodes(tokenizer, rm, load_prompt_list(prompts), num_rows, device=dev, **episode_kwargs)


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
        policy: path or hub id of the policy model (its tokenizer defines the actions;
            agents load the model from :attr:`policy_name_or_path`).
        reward_model: path / hub id of an ``AutoModelForSequenceClassification``, a
            :class:`RewardModel`, or a factory ``f(tokenizer, device)``.
        prompts: list of strings or a ``.json`` / ``.txt`` file.
        reward_mode: ``"abc"`` (default), ``"sparse"``, ``"uniform"`` or ``"oracle"``.
        beta: ABC mixing weight in [0, 1] (paper default 0.8).
        min_new_tokens, max_new_tokens: completion length range.
        max_prompt_tokens: room for the prompt (default: the longest prompt).
        eos_ends_episode: end the episode when the EOS token is chosen.
        gold_scorer / gold_credit: the task's gold score and gold per-word credit.
        record_attention: also put the ABC attention in ``info`` in other modes.
        reward_model_kwargs: forwarded to :meth:`RewardModel.from_pretrained`.
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``, ...
        render_mode: ``None`` or ``"ansi"``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        policy: str | os.PathLike | None = None,
        reward_model: RewardModelSpec | None = None,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        *,
        reward_mode: str = "abc",
        beta: float = 0.8,
        min_new_tokens: int = 8,
        max_new_tokens: int = 15,
        max_prompt_tokens: int | None = None,
        eos_ends_episode: bool = True,
        gold_scorer: GoldScorer | None = None,
        gold_credit: GoldCredit | None = None,
        record_attention: bool = False,
        reward_model_kwargs: dict[str, Any] | None = None,
        device: str | torch.device = "auto",
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if prompts is None:
            raise TypeError("TokenGeneration needs prompts= (a list of strings or a .json/.txt file)")
        self.episodes = build_episodes(
            policy,
            reward_model,
            prompts,
            1,
            device=device,
            reward_model_kwargs=reward_model_kwargs,
            reward_mode=reward_mode,
            beta=beta,
            min_new_tokens=min_new_tokens,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            eos_ends_episode=eos_ends_episode,
            gold_scorer=gold_scorer,
            gold_credit=gold_credit,
            record_attention=record_attention,
        )
        self.policy_name_or_path = policy if not isinstance(policy, PreTrainedTokenizerBase) else None
        self.tokenizer = self.episodes.tokenizer
        self.reward_model = self.episodes.reward_model
        self.observation_space = observation_space(self.episodes)
        self.action_space = spaces.Discrete(self.episodes.vocab_size)
        self.render_mode = render_mode
        self._last_info: dict[str, Any] = {}

    @property
    def reward_mode(self) -> str:
        return self.episodes.reward_mode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.episodes.reset_rows([0], [self.np_random])
        self._last_info = {}
        return self._obs(), self._info()

    def step(self, action: int):
        if bool(self.episodes.done[0]):
            raise RuntimeError("the episode has ended: call reset() before step()")
        if isinstance(action, np.ndarray) and action.shape not in ((), (1,)):
            raise ValueError(f"expected one token id, got an array of shape {action.shape}")
        rewards, terminated = self.episodes.step(torch.as_tensor(np.asarray(action).reshape(1)))
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
