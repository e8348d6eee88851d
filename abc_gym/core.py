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

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from abc_gym.alignment import char_weights_to_tokens, token_char_spans
from abc_gym.credit import check_beta, check_reward_mode, last_token_index, normalise_weights, token_rewards
from abc_gym.reward_model import RewardModel

GoldScorer = Callable[[str], float]
GoldCredit = Callable[[str], Sequence[tuple[int, int, float]]]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_prompt_list(prompts: Sequence[str] | str | os.PathLike) -> list[str]:
    """Prompts as a list of strings, or a path to a ``.json`` list / ``.txt`` file (one per line)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {str(path)!r} does not exist: pass a list of strings or a file path")
        if path.suffix == ".json":
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):  # {"prompts": [...]} with metadata beside it
                loaded = loaded.get("prompts")
        else:
            loaded = [line for line in path.read_text().splitlines() if line.strip()]
        prompts = loaded
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    return prompts


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

    def as_info(self, reward_mode: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "token_rewards": self.token_rewards,
            "score": self.score,
            "text": self.text,
            "prompt": self.prompt,
            "completion_ids": self.completion_ids,
            "reward_mode": reward_mode,
        }
        if self.attention is not None:
            info["attention"] = self.attention
        if self.gold_score is not None:
            info["gold_score"] = self.gold_score
        if self.gold_credit is not None:
            info["gold_credit"] = self.gold_credit
        info.update(self.extra)
        return info


class TokenEpisodes:
    """N token-generation episodes held as one torch batch.

    Args:
        tokenizer: the policy's tokenizer (defines actions, EOS, decoding).
        reward_model: a :class:`~abc_gym.reward_model.RewardModel`.
        prompts: prompt strings.
        num_rows: N.
        reward_mode: ``sparse`` | ``abc`` | ``uniform`` | ``oracle``.
        beta: ABC mixing weight.
        min_new_tokens, max_new_tokens: each episode's length is drawn from this range.
        max_prompt_tokens: room for the prompt in the observation (default: the longest prompt).
        eos_ends_episode: an EOS action ends the episode early.
        gold_scorer: text -> gold score (optional).
        gold_credit: text -> ``[(start_char, end_char, weight)]`` (needed by ``oracle``).
        record_attention: also compute ABC attention in the other modes (for analysis).
        device: where the batch and the reward model live.
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
        device: str | torch.device = "cpu",
    ) -> None:
        check_reward_mode(reward_mode)
        check_beta(beta)
        if not (1 <= int(min_new_tokens) <= int(max_new_tokens)):
            raise ValueError(
                f"need 1 <= min_new_tokens <= max_new_tokens, got min_new_tokens={min_new_tokens}, "
                f"max_new_tokens={max_new_tokens}: raise max_new_tokens or lower min_new_tokens"
            )
        if reward_mode == "oracle" and gold_credit is None:
            raise ValueError(
                "reward_mode='oracle' needs the task's gold per-token credit, and this env has no gold_credit: "
                "use 'abc', 'sparse' or 'uniform', or pass gold_credit=..."
            )
        if num_rows < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_rows}")
        self.tokenizer = tokenizer
        self.reward_model = reward_model
        self.reward_mode = reward_mode
        self.beta = float(beta)
        self.min_new_tokens, self.max_new_tokens = int(min_new_tokens), int(max_new_tokens)
        self.eos_ends_episode = eos_ends_episode
        self.gold_scorer, self.gold_credit = gold_scorer, gold_credit
        self.record_attention = record_attention
        self.device = resolve_device(device)
        self.vocab_size = len(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

        self.prompts = list(prompts)
        self.prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in self.prompts]
        longest = max(len(p) for p in self.prompt_ids)
        if min(len(p) for p in self.prompt_ids) == 0:
            raise ValueError("a prompt encodes to zero tokens: every prompt needs at least one token")
        self.max_prompt_tokens = longest if max_prompt_tokens is None else int(max_prompt_tokens)
        if longest > self.max_prompt_tokens:
            bad = next(i for i, p in enumerate(self.prompt_ids) if len(p) == longest)
            raise ValueError(
                f"prompt {bad} ({self.prompts[bad][:40]!r}...) has {longest} tokens but the observation holds "
                f"max_prompt_tokens={self.max_prompt_tokens}: raise max_prompt_tokens or shorten the prompt"
            )
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        rm_limit = reward_model.max_positions
        if reward_model.same_tokenizer and rm_limit is not None and self.seq_len > rm_limit:
            raise ValueError(
                f"max_prompt_tokens + max_new_tokens = {self.seq_len} exceeds the reward model's {rm_limit} "
                "positions: lower max_new_tokens or max_prompt_tokens"
            )

        n, length = num_rows, self.seq_len
        self.num_rows = n
        self.input_ids = torch.full((n, length), self.pad_id, dtype=torch.long, device=self.device)
        self.attention_mask = torch.zeros((n, length), dtype=torch.long, device=self.device)
        self.prompt_len = torch.zeros(n, dtype=torch.long, device=self.device)
        self.gen_len = torch.zeros(n, dtype=torch.long, device=self.device)
        self.target_len = torch.zeros(n, dtype=torch.long, device=self.device)
        self.prompt_index = np.zeros(n, dtype=np.int64)
        self.done = torch.ones(n, dtype=torch.bool, device=self.device)
        self.last_finished: dict[int, FinishedEpisode] = {}

    # ---------------------------------------------------------------- episodes
    def reset_rows(self, rows: Sequence[int], rngs: Sequence[np.random.Generator]) -> None:
        """Start a new episode in each of ``rows``, drawing its prompt and length from ``rngs[i]``."""
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

    def validate_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """``(N,)`` long actions on the device; raises before any state changes."""
        actions = torch.as_tensor(actions, device=self.device)
        if actions.shape != (self.num_rows,):
            raise ValueError(f"expected {self.num_rows} actions, got shape {tuple(actions.shape)}")
        if actions.is_floating_point() and not bool((actions == actions.round()).all()):
            raise ValueError("actions must be integer token ids")
        actions = actions.long()
        bad = (actions < 0) | (actions >= self.vocab_size)
        if bool(bad.any()):
            raise ValueError(
                f"action(s) {actions[bad].tolist()} outside the action space [0, {self.vocab_size}): "
                "actions are token ids of the policy's tokenizer"
            )
        if bool(self.done.any()):
            rows = torch.nonzero(self.done).flatten().tolist()
            raise RuntimeError(f"episode(s) {rows} already ended: call reset() before step()")
        return actions

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    # ---------------------------------------------------------------- scoring
    def score_rows(self, rows: torch.Tensor) -> list[FinishedEpisode]:
        """Score rows in one reward-model batch and compute their credit."""
        width = int((self.prompt_len[rows] + self.gen_len[rows]).max())
        ids = self.input_ids[rows, :width]
        mask = self.attention_mask[rows, :width]
        positions = torch.arange(width, device=self.device)
        completion_mask = mask.bool() & (positions.unsqueeze(0) >= self.prompt_len[rows].unsqueeze(1))
        want_attention = self.reward_mode == "abc" or self.record_attention
        out = self.reward_model.score(ids, mask, with_attention=want_attention)
        score = out.score.to(self.device)

        ids_cpu, plen, glen = ids.cpu(), self.prompt_len[rows].cpu(), self.gen_len[rows].cpu()
        texts, gold_w = [], []
        for b in range(len(rows)):
            p, g = int(plen[b]), int(glen[b])
            full_text, spans = token_char_spans(self.tokenizer, ids_cpu[b, : p + g].tolist())
            texts.append(full_text)
            if self.gold_credit is not None:
                w = torch.zeros(width, dtype=torch.float64)
                w[: p + g] = char_weights_to_tokens(self.gold_credit(full_text), spans)
                gold_w.append(w)
        gold_weights = torch.stack(gold_w).to(self.device) if gold_w else None
        gold_fallback = None
        if gold_weights is not None:
            # A completion with no gold-relevant word (e.g. no sentiment word): the gold rule
            # gives no preference, so its credit is uniform; flagged in info, never hidden.
            gold_fallback = ((gold_weights * completion_mask).sum(-1) <= 0).cpu()
            gold_weights = torch.where(gold_fallback.to(self.device).unsqueeze(-1), completion_mask.double(), gold_weights)

        attention_fallback = None
        if out.attention is not None:
            # The scored row can be blind to the whole completion (e.g. a completion made only of
            # the reward model's pad id, which transformers' head skips). Then there is no attention
            # to spread: that row gets sparse credit, flagged in info and warned about, never hidden.
            attention = out.attention.to(self.device).double()
            attention_fallback = (attention * completion_mask).sum(-1) <= 0
            if bool(attention_fallback.any()):
                warnings.warn(
                    f"{int(attention_fallback.sum())} completion(s) got no reward-model attention (scored row "
                    "cannot see them); their ABC credit is sparse (info['abc_sparse_fallback'] is True)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                onehot = torch.zeros_like(attention)
                onehot[torch.arange(len(rows), device=self.device), last_token_index(completion_mask)] = 1.0
                attention = torch.where(attention_fallback.unsqueeze(-1), onehot, attention)
            out.attention = attention
            attention_fallback = attention_fallback.cpu()

        credit = token_rewards(
            self.reward_mode, score, completion_mask, beta=self.beta, attention=out.attention, gold_weights=gold_weights
        ).cpu()
        attn = normalise_weights(out.attention, completion_mask, "attention").cpu() if out.attention is not None else None
        gold_norm = normalise_weights(gold_weights, completion_mask).cpu() if gold_weights is not None else None

        episodes = []
        for b in range(len(rows)):
            p, g = int(plen[b]), int(glen[b])
            sl = slice(p, p + g)
            completion = ids_cpu[b, sl]
            ep = FinishedEpisode(
                token_rewards=credit[b, sl].numpy(),
                score=float(score[b]),
                text=self.tokenizer.decode(completion.tolist(), skip_special_tokens=True),
                prompt=self.prompts[int(self.prompt_index[int(rows[b])])],
                completion_ids=completion.numpy().astype(np.int64),
                attention=None if attn is None else attn[b, sl].numpy(),
                gold_score=None if self.gold_scorer is None else float(self.gold_scorer(texts[b])),
                gold_credit=None if gold_norm is None else gold_norm[b, sl].numpy(),
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
