"""The one definition of the keyword arguments every env front end takes.

``gym.make(id, ...)``, ``gym.make_vec(id, ...)`` and
:class:`~abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv` all pass their keywords (besides
``num_envs`` and ``render_mode``) to :class:`EnvConfig`, which checks each one before any
model is loaded and then builds the batched engine (:class:`~abc_gym.core.TokenEpisodes`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from abc_gym.compat.torch import one_thread_in_forked_env_worker
from abc_gym.core import GoldCredit, GoldScorer, TokenEpisodes
from abc_gym.credit import REWARD_MODES, check_beta, check_reward_mode
from abc_gym.device import Device, resolve_device
from abc_gym.hub import load_pretrained
from abc_gym.registration import resolve_references
from abc_gym.reward_model import RewardModel
from abc_gym.validation import (
    check_bool,
    check_callable,
    check_device_kind,
    check_int,
    check_model_source,
    check_prompts_source,
    check_reward_model_kwargs,
)

RewardModelSpec = str | os.PathLike | RewardModel | Callable[..., RewardModel]
PromptsSpec = Sequence[str] | str | os.PathLike | Callable[[PreTrainedTokenizerBase], Sequence[str]]


def policy_name_or_path(policy: Any) -> str | None:
    """The policy's path or hub id when ``policy`` is one (``str`` / ``os.PathLike``), else ``None``.

    A tokenizer object passed as ``policy`` names no model to load, so agents that need the
    policy model must then be given it explicitly.
    """
    return os.fspath(policy) if isinstance(policy, (str, os.PathLike)) else None


@dataclass
class EnvConfig:
    """Settings of a token-generation env, shared by the single, gymnasium-vector and SB3 front ends."""

    policy: str | os.PathLike | PreTrainedTokenizerBase | None = None
    """Path or hub id of the policy model (only its tokenizer is loaded here; agents load the
    model from ``policy_name_or_path``), or the policy's tokenizer object. Required."""

    reward_model: RewardModelSpec | None = None
    """Path or hub id of an ``AutoModelForSequenceClassification`` checkpoint with a trained
    head, a loaded :class:`~abc_gym.reward_model.RewardModel`, or a factory
    ``f(policy_tokenizer, device) -> RewardModel``. Required."""

    prompts: PromptsSpec | None = None
    """A list of strings, a ``.json`` (list, or object with a ``"prompts"`` list) / ``.txt``
    (one per line) file, or ``f(policy_tokenizer) -> list[str]``. Required."""

    reward_mode: str = "abc"
    """How R is spread over the completion: ``"abc"``, ``"sparse"``, ``"uniform"``, ``"oracle"`` or ``"red"``
    (prefix-score differences; a decoder reward model sharing the policy's tokenizer)."""

    beta: float = 0.8
    """ABC mixing weight in [0, 1]: 0 is sparse, 1 pure attention (paper default 0.8)."""

    min_new_tokens: int = 8
    """Shortest completion length drawn per episode, an int in ``[1, max_new_tokens]``."""

    max_new_tokens: int = 15
    """Longest completion length drawn per episode, an int >= 1 (fixes the observation length)."""

    max_prompt_tokens: int | None = None
    """Room for the prompt in the observation, an int >= 1; default: the longest prompt."""

    eos_ends_episode: bool = True
    """Whether choosing the EOS token ends the episode early."""

    gold_scorer: GoldScorer | None = None
    """Optional ``text -> float``: the task's gold score, reported as ``info["gold_score"]``."""

    gold_credit: GoldCredit | None = None
    """Optional ``text -> [(start_char, end_char, weight)]``: the task's gold credit (``oracle`` needs it)."""

    record_attention: bool = False
    """Also compute the ABC attention (``info["attention"]``) in the other modes."""

    record_gold_credit: bool = False
    """Also compute the task's gold per-token credit (``info["gold_credit"]``) in the modes that do
    not use it (``oracle`` always computes it). Off by default: it decodes every completion with
    character offsets, a diagnostic cost on the rollout's hot path."""

    reward_model_kwargs: dict[str, Any] | None = None
    """Keywords for :meth:`RewardModel.from_pretrained` (``positive_label``, ``pooling``,
    ``attention_source``); only when ``reward_model`` is a path or hub id."""

    device: Device = "auto"
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``."""

    reward_device: Device | None = None
    """Where the reward model runs, if not on ``device`` (e.g. ``"cuda:1"``, so the policy, its
    reference and the reward model need not share one GPU): token batches are moved there and
    scores / attention back. ``None``: ``device``. A ``RewardModel`` instance stays where it is."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """Like ``EnvConfig(**kwargs)``, with an unknown keyword named together with the valid ones.

        The error is Python's standard ``TypeError: ... got an unexpected keyword argument 'x'``:
        clients that probe optional keywords (TorchRL's ``GymEnv`` retries without ``frameskip``)
        recognise it.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            more = f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else ""
            raise TypeError(
                f"TokenGenerationEnv got an unexpected keyword argument {unknown[0]!r}{more}: token envs take "
                f"{', '.join(names)}"
            )
        return cls(**kwargs)

    def __post_init__(self) -> None:
        resolve_references(self)  # "module:attr" strings of registered ids (JSON-serialisable specs)
        self._check_sources()
        check_reward_mode(self.reward_mode).check_gold_credit(self.gold_credit is not None)
        self.beta = check_beta(self.beta)
        self.max_new_tokens = check_int("max_new_tokens", self.max_new_tokens, low=1)
        self.min_new_tokens = check_int(
            "min_new_tokens",
            self.min_new_tokens,
            low=1,
            high=self.max_new_tokens,
            hint=f" (max_new_tokens={self.max_new_tokens}): need 1 <= min_new_tokens <= max_new_tokens; "
            "raise max_new_tokens or lower min_new_tokens",
        )
        if self.max_prompt_tokens is not None:
            self.max_prompt_tokens = check_int("max_prompt_tokens", self.max_prompt_tokens, low=1)
        self.eos_ends_episode = check_bool("eos_ends_episode", self.eos_ends_episode)
        self.record_attention = check_bool("record_attention", self.record_attention)
        self.record_gold_credit = check_bool("record_gold_credit", self.record_gold_credit)
        if self.record_gold_credit and self.gold_credit is None:
            raise ValueError(
                "record_gold_credit=True needs the task's gold per-token credit, and this env has no gold_credit: "
                "pass gold_credit=..., or drop record_gold_credit"
            )
        check_callable("gold_scorer", self.gold_scorer, "text -> float")
        check_callable("gold_credit", self.gold_credit, "text -> [(start, end, weight)]")
        if self.reward_mode == "oracle" and self.gold_credit is None:
            raise ValueError(
                "reward_mode='oracle' needs the task's gold per-token credit, and this env has no gold_credit: "
                f"use one of {', '.join(m for m in REWARD_MODES if m != 'oracle')}, or pass gold_credit=..."
            )
        check_device_kind("device", self.device)
        self.device = resolve_device(self.device)
        if self.reward_device is not None:
            check_device_kind("reward_device", self.reward_device)
            try:
                self.reward_device = resolve_device(self.reward_device)
            except (TypeError, ValueError) as err:
                raise type(err)(f"reward_device: {err}") from None

    def _check_sources(self) -> None:
        """``policy``, ``reward_model``, ``prompts`` and ``reward_model_kwargs``: present and of a usable kind."""
        if self.policy is None or self.reward_model is None:
            raise TypeError("TokenGeneration needs policy= (path or hub id) and reward_model= (path, hub id or RewardModel)")
        if self.prompts is None:
            raise TypeError("TokenGeneration needs prompts= (a list of strings or a .json/.txt file)")
        if not isinstance(self.policy, (str, os.PathLike, PreTrainedTokenizerBase)):
            raise TypeError(
                f"policy must be a path or hub id (str / os.PathLike) or a tokenizer, got {type(self.policy).__name__}"
            )
        if not isinstance(self.reward_model, (str, os.PathLike, RewardModel)) and not callable(self.reward_model):
            raise TypeError(
                "reward_model must be a path or hub id, a RewardModel or a factory f(policy_tokenizer, device), "
                f"got {type(self.reward_model).__name__}"
            )
        if self.reward_model_kwargs is not None:
            if not isinstance(self.reward_model_kwargs, dict):
                raise TypeError(f"reward_model_kwargs must be a dict or None, got {type(self.reward_model_kwargs).__name__}")
            if self.reward_model_kwargs and not isinstance(self.reward_model, (str, os.PathLike)):
                raise ValueError(
                    f"reward_model_kwargs={self.reward_model_kwargs!r} only apply when reward_model is a path or hub id; "
                    f"this reward_model is a {type(self.reward_model).__name__}: configure it where it is built"
                )
            check_reward_model_kwargs(self.reward_model_kwargs)
        check_model_source("policy", self.policy, "policy (causal LM)")
        check_model_source("reward_model", self.reward_model, "reward model (sequence classifier)")
        check_prompts_source(self.prompts)

    @property
    def policy_name_or_path(self) -> str | None:
        """See :func:`policy_name_or_path`."""
        return policy_name_or_path(self.policy)

    def episode_settings(self) -> dict[str, Any]:
        """The keywords :class:`~abc_gym.core.TokenEpisodes` takes, from this config."""
        skip = {"policy", "reward_model", "prompts", "reward_model_kwargs", "reward_device"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def build(self, num_rows: int) -> TokenEpisodes:
        """Load the policy's tokenizer and the reward model and build the engine for ``num_rows`` episodes."""
        num_rows = check_int("num_envs", num_rows, low=1)
        one_thread_in_forked_env_worker()  # AsyncVectorEnv's workers fork after the parent built an env
        tokenizer = self.load_tokenizer()
        reward_model = self.load_reward_model(tokenizer)
        prompts = self.prompts(tokenizer) if callable(self.prompts) else self.prompts
        return TokenEpisodes(tokenizer, reward_model, prompts, num_rows, **self.episode_settings())

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The policy's tokenizer (defines the actions)."""
        if isinstance(self.policy, PreTrainedTokenizerBase):
            return self.policy
        return load_pretrained(AutoTokenizer, self.policy)

    def load_reward_model(self, tokenizer: PreTrainedTokenizerBase) -> RewardModel:
        """The :class:`RewardModel` on ``reward_device`` (default ``device``), from a path / hub id, an instance or a factory."""
        device: torch.device = self.device if self.reward_device is None else self.reward_device  # resolved in __post_init__
        if isinstance(self.reward_model, RewardModel):
            return self.reward_model
        if isinstance(self.reward_model, (str, os.PathLike)):
            return RewardModel.from_pretrained(self.reward_model, tokenizer, device=device, **(self.reward_model_kwargs or {}))
        model = self.reward_model(tokenizer, device)
        if not isinstance(model, RewardModel):
            raise TypeError(f"the reward_model factory returned {type(model).__name__}, not a RewardModel")
        return model
