"""Rollout buffers that write the env's token credit back over each episode's steps.

abc_gym envs pay 0 on every step but the last, and put the per-token credit of the
whole episode in the final step's ``info["token_rewards"]``. These buffers

- keep one column per env with its own write position (episodes stored contiguously),
- remember the slots of each env's episode in progress (``pending``),
- when the final info arrives, write ``token_rewards[t] - kl_coef * kl_t`` onto exactly
  those slots (:meth:`finish_episode`),
- mark a slot ``valid`` only once its episode is complete: rewards of slots that are not
  complete stay NaN, :meth:`compute_returns_and_advantage` refuses NaN on a valid slot,
  and :meth:`get` yields valid slots only. No transition is ever trained on with a
  placeholder reward.

The collection loop (:mod:`agents.credit_mixin`) keeps stepping until every episode begun
in the rollout has finished, so in practice every stored slot becomes valid.

Fixed-length completions: each step also stores one bool, whether the env allowed EOS at
that step (``observations[EOS_ALLOWED_KEY]``, ``(buffer_size, n_envs)``; never a ``(V,)``
mask). It travels with the observations, so every algorithm's training-time
``evaluate_actions`` / ``get_distribution`` sees it and masks EOS exactly as the rollout did.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer

from abc_gym.infos import episode_token_rewards
from agents import compat

EOS_ALLOWED_KEY = "eos_allowed"  # per-step bool stored beside the observation (module doc)


@dataclass
class EpisodeRecord:
    """One finished episode in the buffer (what the sequence-level update needs)."""

    env_idx: int
    slots: np.ndarray  # (T,) buffer rows of its steps, in order
    input_ids: np.ndarray  # (L,) final sequence: prompt + T actions (+ pad)
    attention_mask: np.ndarray  # (L,)
    prompt_len: int
    gen_len: int  # T
    score: float  # R (reward model)
    gold_score: float | None
    kl: float  # sum_t log pi - log pi_ref
    token_rewards: np.ndarray  # (T,) env credit, before the KL penalty


class CreditBufferMixin:
    """Per-env write positions, pending episodes and credit write-back (see module doc)."""

    observations: dict[str, np.ndarray]
    rewards: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray
    episode_starts: np.ndarray
    actions: np.ndarray
    buffer_size: int
    n_envs: int

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self.observations[EOS_ALLOWED_KEY] = np.ones((self.buffer_size, self.n_envs), dtype=bool)
        self.rewards[:] = np.nan  # placeholder: must be overwritten by finish_episode
        self.valid = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.row_pos = np.zeros(self.n_envs, dtype=np.int64)
        self.pending: list[list[int]] = [[] for _ in range(self.n_envs)]
        self.episodes: list[EpisodeRecord] = []
        self.step_entropy: list[float] = []
        #: values (and so GAE) left to the update's first forward (TokenPPO, one minibatch: see
        #: :meth:`fill_values`); until then every value is a NaN placeholder and nothing is trained on
        self.values_pending = False

    def add_rows(
        self,
        rows: np.ndarray,
        obs: dict[str, np.ndarray],
        actions: np.ndarray,
        episode_starts: np.ndarray,
        values: torch.Tensor,
        log_probs: torch.Tensor,
        action_masks: np.ndarray | None = None,
        eos_allowed: np.ndarray | None = None,
    ) -> None:
        """Store one step of the envs ``rows`` (all inputs are ``(n_envs, ...)``; only ``rows`` are kept).

        ``eos_allowed``: ``(n_envs,)`` bool, whether EOS could be sampled at this step (None: allowed).
        """
        if len(rows) == 0:
            return
        slots = self.book_rows(rows, episode_starts, eos_allowed)
        for key in self.observations:
            if key != EOS_ALLOWED_KEY:
                self.observations[key][slots, rows] = np.asarray(obs[key])[rows]
        self.actions[slots, rows] = np.asarray(actions).reshape(self.n_envs, -1)[rows]
        self.values[slots, rows] = values.detach().cpu().numpy().reshape(-1)[rows]
        self.log_probs[slots, rows] = log_probs.detach().cpu().numpy().reshape(-1)[rows]
        if action_masks is not None:
            self.action_masks[slots, rows] = np.asarray(action_masks).reshape(self.n_envs, -1)[rows]  # type: ignore[attr-defined]

    def book_rows(self, rows: np.ndarray, episode_starts: np.ndarray, eos_allowed: np.ndarray | None) -> np.ndarray:
        """The bookkeeping of one step of the envs ``rows``: their slots (returned, ``(len(rows),)``),
        episode starts, EOS flags and pending episodes. A source that writes observations, actions,
        values and log-probs itself (:class:`agents.rollout_sources.EngineSteps`) calls only this."""
        slots = self.row_pos[rows]
        if bool((slots >= self.buffer_size).any()):
            raise RuntimeError(
                f"rollout buffer full ({self.buffer_size} steps per env): an episode is longer than the "
                "observation allows; raise the buffer size"
            )
        allowed = np.ones(self.n_envs, dtype=bool) if eos_allowed is None else np.asarray(eos_allowed, dtype=bool)
        self.observations[EOS_ALLOWED_KEY][slots, rows] = allowed.reshape(self.n_envs)[rows]
        self.episode_starts[slots, rows] = np.asarray(episode_starts, dtype=np.float32)[rows]
        for row, slot in zip(rows.tolist(), slots.tolist()):
            if episode_starts[row]:
                self.pending[row] = []
            self.pending[row].append(slot)
        self.row_pos[rows] += 1
        return slots

    def write_episode_values(self, row: int, values: np.ndarray) -> None:
        """Overwrite the values of env ``row``'s pending episode with ``values`` ``(T,)`` (deferred values:
        the rollout stored NaN placeholders, :meth:`~agents.policy.TransformerActorCriticPolicy.episode_values`
        computes them when the episode ends). Call before :meth:`finish_episode`."""
        slots = np.asarray(self.pending[row], dtype=np.int64)
        if len(slots) != len(values):
            raise RuntimeError(f"env {row}: {len(values)} values for an episode of {len(slots)} stored steps")
        self.values[slots, row] = values

    def finish_episode(
        self,
        row: int,
        info: dict[str, Any],
        ref_log_probs: np.ndarray,
        kl_coef: float,
    ) -> EpisodeRecord:
        """Write the episode's credit back over its stored steps and mark them valid.

        Args:
            row: env index.
            info: the final step's info (``token_rewards``, ``score``, ``terminal_observation``, ...).
            ref_log_probs: ``(T,)`` log pi_ref of the episode's actions.
            kl_coef: the KL coefficient in force during this rollout.
        """
        credit = episode_token_rewards(info)  # (T,): the info pads per-token arrays to max_new_tokens
        slots = np.asarray(self.pending[row], dtype=np.int64)
        if len(slots) != len(credit):
            raise RuntimeError(
                f"env {row}: the episode has {len(credit)} token rewards but {len(slots)} stored steps; "
                "episodes must start inside the rollout (reset the env before collecting)"
            )
        kl = self.log_probs[slots, row].astype(np.float64) - np.asarray(ref_log_probs, dtype=np.float64)
        self.rewards[slots, row] = credit - kl_coef * kl
        self.valid[slots, row] = True
        term = info["terminal_observation"]
        mask = np.asarray(term["attention_mask"])
        record = EpisodeRecord(
            env_idx=row,
            slots=slots,
            input_ids=np.asarray(term["input_ids"]).copy(),
            attention_mask=mask.copy(),
            prompt_len=int(mask.sum()) - len(credit),
            gen_len=len(credit),
            score=float(info["score"]),
            gold_score=None if info.get("gold_score") is None else float(info["gold_score"]),
            kl=float(kl.sum()),
            token_rewards=credit,
        )
        self.episodes.append(record)
        self.pending[row] = []
        return record

    def compute_returns_and_advantage(self, last_values: torch.Tensor | None = None, dones: np.ndarray | None = None) -> None:
        """GAE over complete episodes only (nothing is bootstrapped: every stored episode ended)."""
        if bool(np.isnan(self.rewards[self.valid]).any()):
            raise RuntimeError("a valid transition has no reward written back: refusing to train on a placeholder")
        if bool(np.isnan(self.values[self.valid]).any()):  # deferred values are NaN until their episode ends
            raise RuntimeError("a valid transition has no value written back: refusing to train on a placeholder")
        # Slots that are not valid become isolated terminal steps, so they cannot leak into GAE.
        invalid = ~self.valid
        self.rewards[invalid] = 0.0
        self.values[invalid] = 0.0
        self.episode_starts[invalid] = 1.0
        zeros = torch.zeros(self.n_envs)
        super().compute_returns_and_advantage(last_values=zeros, dones=np.ones(self.n_envs, dtype=bool))  # type: ignore[misc]
        self.full = True

    def episode_sequences(self, device: Any) -> dict[str, torch.Tensor]:
        """What a teacher-forced forward needs of the stored episodes, before GAE (nothing flattened):
        ``input_ids`` / ``attention_mask`` ``(E, L)``, ``prompt_len`` / ``gen_len`` ``(E,)`` and
        ``eos_allowed`` ``(E, Tmax)``, in :attr:`episodes` order (as :meth:`episode_tensors`)."""
        eps = self.episodes
        eos = np.ones((len(eps), max(e.gen_len for e in eps)), dtype=bool)
        allowed, flat = self.observations[EOS_ALLOWED_KEY], self.generator_ready
        for i, e in enumerate(eps):  # after prepare_flat the arrays are (n_envs * buffer_size, 1)
            eos[i, : e.gen_len] = allowed.reshape(-1)[self.flat_index(e.slots, e.env_idx)] if flat else allowed[e.slots, e.env_idx]
        return {**self._sequences(device), "eos_allowed": torch.as_tensor(eos, device=device)}

    def _sequences(self, device: Any) -> dict[str, torch.Tensor]:
        """The stored episodes' final sequences ``(E, L)`` and lengths ``(E,)`` as tensors on ``device``."""
        eps = self.episodes
        return {
            "input_ids": torch.as_tensor(np.stack([e.input_ids for e in eps]), device=device).long(),
            "attention_mask": torch.as_tensor(np.stack([e.attention_mask for e in eps]), device=device).long(),
            "prompt_len": torch.as_tensor([e.prompt_len for e in eps], device=device),
            "gen_len": torch.as_tensor([e.gen_len for e in eps], device=device),
        }

    def fill_values(self, episodes: np.ndarray, values: np.ndarray) -> None:
        """Write the pending values of ``episodes`` (indices into :attr:`episodes`, ``(E,)``) from
        ``values`` ``(E, Tmax)``; once every episode has them, run GAE (:meth:`compute_returns_and_advantage`)."""
        assert self.values_pending, "fill_values: this rollout's values are not pending"
        for i, v in zip(np.asarray(episodes).tolist(), values):
            e = self.episodes[i]
            self.values[e.slots, e.env_idx] = v[: e.gen_len]
        if not bool(np.isnan(self.values[self.valid]).any()):
            self.values_pending = False
            self.compute_returns_and_advantage()

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def prepare_flat(self) -> None:
        """Flatten the arrays to ``(n_envs * buffer_size, ...)`` as SB3's ``get`` does (idempotent)."""
        if self.values_pending:  # returns / advantages would be the reset's zeros: refuse, never train on them
            raise RuntimeError(
                "this rollout's values (and so its returns and advantages) are left to the update's first forward: "
                "run the update (model.update()), or set model.defer_values = False to compute them in the rollout"
            )
        assert self.full, "collect a rollout first"
        if self.generator_ready:
            return
        for key, obs in self.observations.items():
            self.observations[key] = self.swap_and_flatten(obs)
        names = ["actions", "values", "log_probs", "advantages", "returns", "rewards"]
        if hasattr(self, "action_masks"):
            names.append("action_masks")
        for name in names:
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
        self.valid_flat = np.flatnonzero(self.swap_and_flatten(self.valid))
        self.generator_ready = True

    def flat_index(self, slots: np.ndarray, env_idx: int) -> np.ndarray:
        """Flat index (after :meth:`prepare_flat`) of buffer rows ``slots`` of env ``env_idx``."""
        return env_idx * self.buffer_size + np.asarray(slots)

    def episode_tensors(self, device: Any) -> dict[str, torch.Tensor]:
        """The stored episodes as tensors on ``device``, for sequence-level updates: sequences
        ``input_ids`` / ``attention_mask`` ``(E, L)``, ``prompt_len`` / ``gen_len`` ``(E,)``, and the
        per-step rollout data ``(E, Tmax)``: ``old_values``, ``old_log_prob``, ``advantages``,
        ``returns``, ``eos_allowed`` and ``valid`` (step t < gen_len)."""
        self.prepare_flat()
        eps = self.episodes
        t_max = max(e.gen_len for e in eps)
        index = np.zeros((len(eps), t_max), dtype=np.int64)
        valid = np.zeros((len(eps), t_max), dtype=bool)
        for i, e in enumerate(eps):
            index[i, : e.gen_len] = self.flat_index(e.slots, e.env_idx)
            valid[i, : e.gen_len] = True

        def take(arr: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(arr.reshape(-1)[index], device=device)

        return {
            **self._sequences(device),
            "old_values": take(self.values),
            "old_log_prob": take(self.log_probs),
            "advantages": take(self.advantages),
            "returns": take(self.returns),
            "valid": torch.as_tensor(valid, device=device),
            "eos_allowed": take(self.observations[EOS_ALLOWED_KEY]),
        }

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        """Shuffled minibatches of valid transitions (SB3's ``get``, restricted to ``valid``)."""
        if getattr(self, "minibatch_source", None) is not None:  # torchrun: this rank's share (agents.distributed)
            yield from self.minibatch_source(batch_size)
            return
        self.prepare_flat()
        valid = self.valid_flat
        indices = valid[np.random.permutation(len(valid))]
        batch_size = batch_size or len(valid)
        starts = list(range(0, len(valid), batch_size))
        if len(starts) > 1 and len(valid) - starts[-1] == 1:
            starts.pop()  # a 1-transition minibatch cannot be whitened (MaskablePPO would divide by a NaN std)
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(valid)
            yield compat.buffer_samples(self, indices[start:end])


class CreditDictRolloutBuffer(CreditBufferMixin, DictRolloutBuffer):
    """``DictRolloutBuffer`` with token-credit write-back (PPO, A2C, TRPO, TokenPPO)."""


class MaskableCreditDictRolloutBuffer(CreditBufferMixin, MaskableDictRolloutBuffer):
    """``MaskableDictRolloutBuffer`` with token-credit write-back (MaskablePPO)."""
