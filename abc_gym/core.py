"""The batched engine shared by the single env, the gymnasium vector env and the SB3 VecEnv.

``TokenEpisodes`` holds N sequences as one torch batch on a device. Each row is an
episode: a prompt drawn from the task, then one token per step. A step appends N
actions with one tensor operation; rows that finish (EOS or their drawn length) are
scored by the reward model in one batch and their credit is computed. Holding the
logic here once is what makes "the batched env equals N single envs" true by
construction.

Layout of a row (length ``L = max_prompt_tokens + max_new_tokens``)::

    [prompt tokens | generated tokens | padding]     attention_mask: 1 1 1 | 1 1 | 0 0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from abc_gym.alignment import batch_token_char_spans, char_weights_to_tokens, decode_texts
from abc_gym.credit import CreditScheme, check_beta, credit_scheme, last_token_index, normalise_weights
from abc_gym.device import Device, resolve_device
from abc_gym.infos import pad_episode_info
from abc_gym.prompts import load_prompt_list
from abc_gym.reward_model import RewardModel
from abc_gym.validation import check_actions, check_bool, check_callable, check_gold_credit, check_gold_score, check_int

GoldScorer = Callable[[str], float]
GoldCredit = Callable[[str], Sequence[tuple[int, int, float]]]

__all__ = [
    "AutoresetStep",
    "EpisodeSetting",
    "FinishedEpisode",
    "GoldCredit",
    "GoldScorer",
    "SETTABLE",
    "TokenEpisodes",
    "load_prompt_list",
    "resolve_device",
]

# Settings that may change between episodes (``set_attr`` / assignment); each is validated on set.
SETTABLE: tuple[str, ...] = (
    "reward_mode", "beta", "min_new_tokens", "eos_ends_episode", "record_attention", "record_gold_credit"
)


class EpisodeSetting:
    """A front-end attribute that reads and writes one of :data:`SETTABLE` on ``self.episodes``.

    Writing validates at once (``env.beta = 5`` raises here, not when an episode ends), so
    ``SyncVectorEnv.set_attr`` and plain assignment behave like the vector envs' ``set_attr``.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        if name not in SETTABLE:
            raise TypeError(f"EpisodeSetting {name!r} is not one of {SETTABLE}")
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.episodes, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.episodes.set_setting(self.name, value)


@dataclass
class FinishedEpisode:
    """Everything the final step's ``info`` carries for one episode (see README, reward contract)."""

    token_rewards: np.ndarray  # (T,) float64, credit per generated token under the env's mode
    score: float  # R
    text: str  # the completion
    prompt: str
    completion_ids: np.ndarray  # (T,) int64
    attention: np.ndarray | None = None  # (T,) ABC weights a_t (sum 1), when computed
    gold_score: float | None = None
    gold_credit: np.ndarray | None = None  # (T,) gold weights (sum 1), when the task has them
    extra: dict[str, Any] = field(default_factory=dict)

    def as_info(self, reward_mode: str, width: int) -> dict[str, Any]:
        """The final step's info: per-token arrays padded to ``(width,)`` (``max_new_tokens``) with
        ``num_tokens`` = T, scalars as numpy scalars (see :mod:`abc_gym.infos`), so vector envs and
        TorchRL can stack episodes of different lengths."""
        info: dict[str, Any] = {
            "token_rewards": self.token_rewards,
            "score": np.float64(self.score),
            "text": self.text,
            "prompt": self.prompt,
            "completion_ids": self.completion_ids,
            "reward_mode": reward_mode,
        }
        if self.attention is not None:
            info["attention"] = self.attention
        if self.gold_score is not None:
            info["gold_score"] = np.float64(self.gold_score)
        if self.gold_credit is not None:
            info["gold_credit"] = self.gold_credit
        info.update({k: np.bool_(v) if isinstance(v, bool) else v for k, v in self.extra.items()})
        return pad_episode_info(info, width)


@dataclass
class AutoresetStep:
    """One batched step with the finished rows already reset (both vector front ends use it).

    rewards: ``(N,)`` float64 (0, or R on a row's final step); terminated: ``(N,)`` bool.
    finished: the rows that ended, ascending. final_obs: ``input_ids`` / ``attention_mask``
    ``(len(finished), L)`` int64, the finished rows' last observations in ``finished`` order.
    final_infos: row -> that episode's final-step info (``token_rewards``, ``score``, ...).
    """

    rewards: np.ndarray
    terminated: np.ndarray
    finished: list[int]
    final_obs: dict[str, np.ndarray]
    final_infos: dict[int, dict[str, Any]]


@dataclass
class _ScoringBatch:
    """The rows being scored, cut to the longest of them.

    ids, mask, completion_mask: ``(B, W)``; prompt_len, gen_len: ``(B,)`` on CPU.
    """

    rows: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    completion_mask: torch.Tensor
    prompt_len: torch.Tensor
    gen_len: torch.Tensor


def gold_token_weights(
    gold_credit: GoldCredit, texts: list[str], spans: list[list[tuple[int, int]]], completion: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's gold credit as per-token weights: ``(B, W)`` float64 and a ``(B,)`` bool fallback flag.

    ``texts[b]`` is row b's decoded prompt + completion and ``spans[b]`` its tokens' character
    spans; ``completion`` is the ``(B, W)`` bool completion mask (its device is the output's).
    A completion the gold rule gives no weight (e.g. no sentiment word) gets uniform gold
    credit: the rule states no preference. The flag says which rows; callers report it.
    """
    width = completion.shape[1]
    rows = []
    for text, row_spans in zip(texts, spans):
        w = torch.zeros(width, dtype=torch.float64)
        w[: len(row_spans)] = char_weights_to_tokens(check_gold_credit(gold_credit(text), text), row_spans)
        rows.append(w)
    weights = torch.stack(rows).to(completion.device)
    fallback = (weights * completion).sum(-1) <= 0
    return torch.where(fallback.unsqueeze(-1), completion.double(), weights), fallback


def readable_attention(
    attention: torch.Tensor, completion: torch.Tensor, *, flagged: str = "", stacklevel: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention ``(B, W)`` float64 with rows blind to their completion made sparse, and the ``(B,)`` flag.

    The scored row can be blind to the whole completion (e.g. a completion made only of the
    reward model's pad id, which transformers' head skips). Then there is no attention to
    spread: that row gets sparse credit (all weight on its last token), with a warning naming
    where the caller flags it (``flagged``), never hidden.
    """
    attention = attention.to(completion.device).double()
    fallback = (attention * completion).sum(-1) <= 0
    if bool(fallback.any()):
        where = f" ({flagged})" if flagged else ""
        warnings.warn(
            f"{int(fallback.sum())} completion(s) got no reward-model attention (scored row cannot see them); "
            f"their ABC credit is sparse{where}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        onehot = torch.zeros_like(attention)
        onehot[torch.arange(attention.shape[0], device=attention.device), last_token_index(completion)] = 1.0
        attention = torch.where(fallback.unsqueeze(-1), onehot, attention)
    return attention, fallback


class TokenEpisodes:
    """N token-generation episodes held as one torch batch.

    Args:
        tokenizer: the policy's tokenizer (defines actions, EOS, decoding).
        reward_model: a :class:`~abc_gym.reward_model.RewardModel`.
        prompts: prompt strings.
        num_rows: N.
        reward_mode, beta, min_new_tokens, max_new_tokens, max_prompt_tokens,
        eos_ends_episode, gold_scorer, gold_credit, record_attention, record_gold_credit, device: see
            :class:`~abc_gym.config.EnvConfig`, which documents each and builds this engine.

    The settings in :data:`SETTABLE` may be reassigned between episodes and are validated on
    assignment; ``max_new_tokens`` and ``max_prompt_tokens`` fix the observation length and
    cannot change.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        reward_model: RewardModel,
        prompts: Sequence[str],
        num_rows: int,
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
        record_gold_credit: bool = False,
        device: Device = "auto",
    ) -> None:
        self.num_rows = check_int("num_envs", num_rows, low=1)
        self.tokenizer = tokenizer
        self.reward_model = reward_model
        self.device = resolve_device(device)
        self.gold_scorer = check_callable("gold_scorer", gold_scorer, "text -> float")
        self.gold_credit = check_callable("gold_credit", gold_credit, "text -> [(start, end, weight)]")
        self._max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
        self.min_new_tokens = min_new_tokens
        self.reward_mode = reward_mode
        self.beta = beta
        self.eos_ends_episode = eos_ends_episode
        self.record_attention = record_attention
        self.record_gold_credit = record_gold_credit
        self.vocab_size = len(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self._encode_prompts(prompts, max_prompt_tokens)
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        self._check_reward_model_positions()
        self._allocate()

    # ---------------------------------------------------------------- settings
    @property
    def reward_mode(self) -> str:
        """A name in :data:`abc_gym.credit.credit_registry` (``sparse``, ``abc``, ``uniform``,
        ``oracle``, ``red`` or a registered one); :attr:`credit_scheme` is its scheme."""
        return self._reward_mode

    @reward_mode.setter
    def reward_mode(self, value: str) -> None:
        # The scheme says what it needs: refuse here, not when the first episode ends.
        scheme = credit_scheme(value)
        scheme.check_reward_model(self.reward_model)
        scheme.check_gold_credit(self.gold_credit is not None)
        self.credit_scheme: CreditScheme = scheme  # held, so a later re-registration does not change a running env
        self._reward_mode = scheme.name

    @property
    def beta(self) -> float:
        """ABC mixing weight in [0, 1]."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = check_beta(value)

    @property
    def min_new_tokens(self) -> int:
        """Shortest completion length drawn, in ``[1, max_new_tokens]``."""
        return self._min_new_tokens

    @min_new_tokens.setter
    def min_new_tokens(self, value: int) -> None:
        self._min_new_tokens = check_int(
            "min_new_tokens",
            value,
            low=1,
            high=self.max_new_tokens,
            hint=f" (max_new_tokens={self.max_new_tokens}): raise max_new_tokens or lower min_new_tokens; "
            "need 1 <= min_new_tokens <= max_new_tokens",
        )

    @property
    def max_new_tokens(self) -> int:
        """Longest completion length drawn (fixes the observation length; read-only)."""
        return self._max_new_tokens

    @property
    def eos_ends_episode(self) -> bool:
        """Whether an EOS action ends the episode early."""
        return self._eos_ends_episode

    @eos_ends_episode.setter
    def eos_ends_episode(self, value: bool) -> None:
        self._eos_ends_episode = check_bool("eos_ends_episode", value)

    @property
    def record_attention(self) -> bool:
        """Whether ABC attention is also computed (and put in ``info``) in the other modes."""
        return self._record_attention

    @record_attention.setter
    def record_attention(self, value: bool) -> None:
        self._record_attention = check_bool("record_attention", value)

    @property
    def record_gold_credit(self) -> bool:
        """Whether the gold credit is also computed (and put in ``info``) in modes that do not use it."""
        return self._record_gold_credit

    @record_gold_credit.setter
    def record_gold_credit(self, value: bool) -> None:
        value = check_bool("record_gold_credit", value)
        if value and self.gold_credit is None:
            raise ValueError("record_gold_credit=True needs gold_credit=...: this env has no gold per-token credit")
        self._record_gold_credit = value

    def set_setting(self, name: str, value: Any) -> None:
        """Assign one of :data:`SETTABLE` (validated); any other name is an ``AttributeError``."""
        if name not in SETTABLE:
            raise AttributeError(
                f"cannot set {name!r} on a running token env: settable are {', '.join(SETTABLE)} "
                "(max_new_tokens / max_prompt_tokens fix the observation length: make a new env)"
            )
        setattr(self, name, value)

    # ---------------------------------------------------------------- construction steps
    def _encode_prompts(self, prompts: Sequence[str], max_prompt_tokens: int | None) -> None:
        """Tokenize the prompts and size the prompt part of the observation."""
        self.prompts = load_prompt_list(prompts)
        self.prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in self.prompts]
        empty = next((i for i, p in enumerate(self.prompt_ids) if not p), None)
        if empty is not None:
            raise ValueError(f"prompt {empty} ({self.prompts[empty]!r}) encodes to zero tokens: every prompt needs at least one token")
        longest = max(len(p) for p in self.prompt_ids)
        if max_prompt_tokens is None:
            self.max_prompt_tokens = longest
        else:
            self.max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, low=1)
        if longest > self.max_prompt_tokens:
            bad = next(i for i, p in enumerate(self.prompt_ids) if len(p) == longest)
            raise ValueError(
                f"prompt {bad} ({self.prompts[bad][:40]!r}...) has {longest} tokens but the observation holds "
                f"max_prompt_tokens={self.max_prompt_tokens}: raise max_prompt_tokens or shorten the prompt"
            )

    def _check_reward_model_positions(self) -> None:
        """The longest episode must fit the reward model's positions (checked now, not at an episode's end).

        Same tokenizer: exact (``max_prompt_tokens + max_new_tokens``). Another tokenizer: the
        longest prompt in reward-model tokens, plus ``max_new_tokens`` (one reward-model token
        per generated token), plus its special tokens; a completion that re-tokenizes to more
        still fails when scored, with the same advice.
        """
        rm = self.reward_model
        limit = rm.max_positions
        if limit is None:
            return
        if rm.same_tokenizer:
            need = self.seq_len
            what = f"max_prompt_tokens + max_new_tokens = {self.max_prompt_tokens} + {self.max_new_tokens} = {need}"
        else:
            rm_prompt = max(len(ids) for ids in rm.tokenizer(self.prompts, add_special_tokens=False)["input_ids"])
            specials = rm.tokenizer.num_special_tokens_to_add(pair=False)
            need = rm_prompt + self.max_new_tokens + specials
            what = (
                f"the longest prompt ({rm_prompt} reward-model tokens) + max_new_tokens={self.max_new_tokens} "
                f"+ {specials} special tokens = {need}"
            )
        if need > limit:
            raise ValueError(
                f"{what} exceeds the reward model's {limit} positions: lower max_new_tokens or max_prompt_tokens "
                "(or use shorter prompts)"
            )

    def _allocate(self) -> None:
        """The batch tensors, every row ended (``reset_rows`` starts them)."""
        n, length, dev = self.num_rows, self.seq_len, self.device
        self.input_ids = torch.full((n, length), self.pad_id, dtype=torch.long, device=dev)
        self.attention_mask = torch.zeros((n, length), dtype=torch.long, device=dev)
        self.prompt_len = torch.zeros(n, dtype=torch.long, device=dev)
        self.gen_len = torch.zeros(n, dtype=torch.long, device=dev)
        self.target_len = torch.zeros(n, dtype=torch.long, device=dev)
        self.prompt_index = np.zeros(n, dtype=np.int64)
        self.done = torch.ones(n, dtype=torch.bool, device=dev)
        self.last_finished: dict[int, FinishedEpisode] = {}
        self.started = False  # set by the first reset_rows: step() before reset() gets its own message

    # ---------------------------------------------------------------- episodes
    def reset_rows(self, rows: Sequence[int], rngs: Sequence[np.random.Generator]) -> None:
        """Start a new episode in each of ``rows``, drawing its prompt and length from ``rngs[i]``."""
        self.started = True
        for row, rng in zip(rows, rngs):
            k = int(rng.integers(len(self.prompt_ids)))
            target = int(rng.integers(self.min_new_tokens, self.max_new_tokens + 1))
            ids = torch.tensor(self.prompt_ids[k], dtype=torch.long, device=self.device)
            self.input_ids[row].fill_(self.pad_id)
            self.attention_mask[row].zero_()
            self.input_ids[row, : len(ids)] = ids
            self.attention_mask[row, : len(ids)] = 1
            self.prompt_len[row] = len(ids)
            self.gen_len[row] = 0
            self.target_len[row] = target
            self.prompt_index[row] = k
            self.done[row] = False

    def validate_actions(self, actions: Any, *, scalar_ok: bool = False) -> torch.Tensor:
        """``(N,)`` long actions on the device (see :func:`~abc_gym.validation.check_actions`).

        Raises before any state changes.
        """
        if not self.started:
            raise RuntimeError("step() before reset(): call env.reset() (with a seed, if you like) before the first step()")
        actions = check_actions(actions, self.num_rows, self.vocab_size, scalar_ok=scalar_ok).to(self.device)
        if bool(self.done.any()):
            rows = torch.nonzero(self.done).flatten().tolist()
            raise RuntimeError(f"episode(s) {rows} already ended: call reset() before step()")
        return actions

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token per row; score the rows that finish.

        Args:
            actions: ``(N,)`` token ids.
        Returns:
            ``rewards`` ``(N,)`` float64 (0 for rows still running, the episode total R for
            finished rows) and ``terminated`` ``(N,)`` bool. Details of finished rows are in
            :attr:`last_finished` (row -> :class:`FinishedEpisode`).
        """
        actions = self.validate_actions(actions)
        rows = torch.arange(self.num_rows, device=self.device)
        pos = self.prompt_len + self.gen_len
        self.input_ids[rows, pos] = actions
        self.attention_mask[rows, pos] = 1
        self.gen_len += 1
        terminated = self.gen_len >= self.target_len
        if self.eos_ends_episode and self.eos_id is not None:
            terminated |= actions == self.eos_id
        self.done |= terminated
        rewards = torch.zeros(self.num_rows, dtype=torch.float64, device=self.device)
        self.last_finished = {}
        finished = torch.nonzero(terminated).flatten()
        if len(finished):
            episodes = self.score_rows(finished)
            for row, ep in zip(finished.tolist(), episodes):
                self.last_finished[row] = ep
                rewards[row] = float(ep.token_rewards.sum())
        return rewards, terminated

    def step_autoreset(self, actions: Any, rngs: Sequence[np.random.Generator]) -> AutoresetStep:
        """:meth:`step`, then snapshot and reset every finished row (row ``i`` draws from ``rngs[i]``).

        The one finish-and-autoreset routine of the vector front ends: each only lays the
        result out in its library's convention.
        """
        rewards, terminated = self.step(actions)
        finished = sorted(self.last_finished)
        final_obs = self.observation(finished) if finished else {}
        final_infos = {row: self.last_finished[row].as_info(self.reward_mode, self.max_new_tokens) for row in finished}
        if finished:
            self.reset_rows(finished, [rngs[r] for r in finished])
        return AutoresetStep(rewards.cpu().numpy(), terminated.cpu().numpy(), finished, final_obs, final_infos)

    # ---------------------------------------------------------------- scoring
    def score_rows(self, rows: torch.Tensor) -> list[FinishedEpisode]:
        """Score ``rows`` (``(B,)`` long) in one reward-model batch and compute their credit."""
        batch = self._gather(rows)
        scheme = self.credit_scheme
        want_attention = scheme.needs_attention or self.record_attention
        want_prefix = scheme.needs_prefix_scores
        want_gold = scheme.needs_gold_credit or self.record_gold_credit
        out = self.reward_model.score(
            batch.ids, batch.mask, with_attention=want_attention, with_prefix_scores=want_prefix
        )
        score = out.score.to(self.device)
        prefix = None if out.prefix_scores is None else out.prefix_scores.to(self.device)
        texts, spans = self._decode(batch, want_gold)
        gold_weights, gold_fallback = self._gold_weights(batch, texts, spans) if want_gold else (None, None)
        attention, attention_fallback = self._readable_attention(batch, out.attention)
        credit = scheme.credit(  # checks the conservation contract, for user schemes too
            score, batch.completion_mask, beta=self.beta, attention=attention,
            gold_weights=gold_weights, prefix_scores=prefix,
        ).cpu()
        attn = normalise_weights(attention, batch.completion_mask, "attention").cpu() if attention is not None else None
        gold = normalise_weights(gold_weights, batch.completion_mask).cpu() if gold_weights is not None else None
        episodes = self._episodes(batch, score.cpu(), credit, texts, attn, gold, gold_fallback, attention_fallback)
        if prefix is not None:  # RED: R(x, y<=t) per generated token, in info["prefix_scores"]
            prefix = prefix.double().cpu()
            for b, ep in enumerate(episodes):
                p = int(batch.prompt_len[b])
                ep.extra["prefix_scores"] = prefix[b, p : p + int(batch.gen_len[b])].numpy()
        return episodes

    def _gather(self, rows: torch.Tensor) -> _ScoringBatch:
        """Cut the rows to their longest real length and mark their completion positions."""
        prompt_len, gen_len = self.prompt_len[rows], self.gen_len[rows]
        width = int((prompt_len + gen_len).max())
        mask = self.attention_mask[rows, :width]
        positions = torch.arange(width, device=self.device)
        completion_mask = mask.bool() & (positions.unsqueeze(0) >= prompt_len.unsqueeze(1))
        return _ScoringBatch(
            rows, self.input_ids[rows, :width], mask, completion_mask, prompt_len.cpu(), gen_len.cpu()
        )

    def _decode(self, batch: _ScoringBatch, want_gold: bool) -> tuple[list[str], list[list[tuple[int, int]]]]:
        """Each row's decoded prompt + completion and its tokens' character spans, only as far as
        needed: texts for a gold scorer or gold credit, spans for gold credit, nothing otherwise
        (the reward model reads token ids, or decodes itself). One batched decode for all rows."""
        if self.gold_scorer is None and not want_gold:
            return [], []
        ids = batch.ids.cpu()
        rows = [ids[b, : int(batch.prompt_len[b] + batch.gen_len[b])].tolist() for b in range(len(batch.rows))]
        if not want_gold:
            return decode_texts(self.tokenizer, rows), []
        return batch_token_char_spans(self.tokenizer, rows)

    def _gold_weights(
        self, batch: _ScoringBatch, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gold per-token weights ``(B, W)`` float64 and the ``(B,)`` uniform-fallback flag (see :func:`gold_token_weights`)."""
        weights, fallback = gold_token_weights(self.gold_credit, texts, spans, batch.completion_mask)
        return weights, fallback.cpu()

    def _readable_attention(
        self, batch: _ScoringBatch, attention: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attention ``(B, W)`` float64 with blind rows made sparse and their ``(B,)`` flag, or Nones
        (see :func:`readable_attention`)."""
        if attention is None:
            return None, None
        attention, fallback = readable_attention(
            attention, batch.completion_mask, flagged="info['abc_sparse_fallback'] is True", stacklevel=5
        )
        return attention, fallback.cpu()

    def _episodes(
        self,
        batch: _ScoringBatch,
        score: torch.Tensor,
        credit: torch.Tensor,
        texts: list[str],
        attention: torch.Tensor | None,
        gold: torch.Tensor | None,
        gold_fallback: torch.Tensor | None,
        attention_fallback: torch.Tensor | None,
    ) -> list[FinishedEpisode]:
        """One :class:`FinishedEpisode` per scored row, cut to its completion (all inputs on CPU)."""
        ids = batch.ids.cpu()
        episodes = []
        for b in range(len(batch.rows)):
            p, g = int(batch.prompt_len[b]), int(batch.gen_len[b])
            sl = slice(p, p + g)
            completion = ids[b, sl]
            ep = FinishedEpisode(
                token_rewards=credit[b, sl].numpy(),
                score=float(score[b]),
                text=self.tokenizer.decode(completion.tolist(), skip_special_tokens=True),
                prompt=self.prompts[int(self.prompt_index[int(batch.rows[b])])],
                completion_ids=completion.numpy().astype(np.int64),
                attention=None if attention is None else attention[b, sl].numpy(),
                gold_score=None if self.gold_scorer is None else check_gold_score(self.gold_scorer(texts[b]), texts[b]),
                gold_credit=None if gold is None else gold[b, sl].numpy(),
            )
            if gold_fallback is not None:
                ep.extra["gold_credit_uniform_fallback"] = bool(gold_fallback[b])
            if attention_fallback is not None:
                ep.extra["abc_sparse_fallback"] = bool(attention_fallback[b])
            episodes.append(ep)
        return episodes

    # ---------------------------------------------------------------- views
    def observation(self, rows: slice | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Numpy observation dict: ``input_ids`` and ``attention_mask``, each ``(n, L)`` int64."""
        sel = slice(None) if rows is None else rows
        return {
            # copies: callers keep observations, and a CPU tensor's numpy view would change under them
            "input_ids": self.input_ids[sel].cpu().numpy().copy(),
            "attention_mask": self.attention_mask[sel].cpu().numpy().copy(),
        }

    def action_masks(self) -> np.ndarray:
        """``(N, V)`` bool: every token is allowed, except EOS before ``min_new_tokens``."""
        masks = np.ones((self.num_rows, self.vocab_size), dtype=bool)
        if self.eos_ends_episode and self.eos_id is not None:
            masks[:, self.eos_id] = (self.gen_len + 1 >= self.min_new_tokens).cpu().numpy()
        return masks
