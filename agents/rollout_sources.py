"""Sources of rollout steps for the one rollout loop (:meth:`agents.credit_mixin.CreditAssignmentMixin.collect_rollouts`).

The loop owns the bookkeeping (which envs still store, episode starts, the EOS rule, the
callbacks, the credit write-back, the statistics). A source owns how a step is read, applied
and stored:

- :class:`VecEnvSteps`, any SB3 ``VecEnv`` of a token env (wrappers included): numpy
  observations from ``env.step``, one host write of each step into the buffer.
- :class:`EngineSteps`, TokenPPO on an unwrapped
  :class:`~abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv`: the policy reads the engine's
  ``input_ids`` / ``attention_mask`` tensors in place, on the device; its actions go straight
  back to the engine (``env.step_tokens``, the routine ``step_wait`` calls, with the same row
  generators), so episodes, resets and random draws are the VecEnv path's, step for step.
  Values, log-probs and entropies stay on the device in ``(buffer_size, N)`` tensors and are
  copied to the buffer only when an episode ends (its write-back reads its log-probs) and at
  the end of the rollout (deferred values, a separate value trunk: NaN placeholders there,
  overwritten by the episode's one value forward in ``finish_episodes``, after the flush); each finished episode's per-step observations and actions are
  rebuilt on the host from its final sequence (step t saw the prompt and t actions), so the
  buffer holds exactly what the VecEnv path stores. What still syncs once per step: the
  engine decides on the host which rows ended, so each step reads the ``(N,)`` flags back.

Every source has ``reset() -> obs``, ``observation(last_obs, eos_rule, eos_allowed)``,
``action_masks(obs)``, ``store(buffer, rows, last_obs, ...)``, ``step(actions) -> (obs, dones, infos)``,
``finish_episodes(buffer, rows, infos)`` and ``close(buffer, last_obs) -> obs``; the loop keeps the
algorithm's last observation (SB3's ``_last_obs``) and hands it over, so a source touches no
private state of the algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from agents.buffers import EOS_ALLOWED_KEY


class VecEnvSteps:
    """Steps from an SB3 ``VecEnv`` (module doc). ``use_masking``: ask the algorithm for action masks."""

    def __init__(self, algo: Any, env: Any, use_masking: bool = True) -> None:
        self.algo, self.env, self.use_masking = algo, env, use_masking

    def reset(self) -> Any:
        return self.env.reset()

    def observation(self, last_obs: Any, eos_rule: tuple[int, int] | None, eos_allowed: np.ndarray) -> dict[str, th.Tensor]:
        obs = obs_as_tensor(last_obs, self.algo.device)
        obs[EOS_ALLOWED_KEY] = th.as_tensor(eos_allowed, device=self.algo.device)
        return obs

    def action_masks(self, obs: dict[str, th.Tensor]) -> np.ndarray | None:
        return self.algo.rollout_action_masks(self.env, obs) if self.use_masking else None

    def store(self, buffer: Any, rows: np.ndarray, last_obs: Any, actions: th.Tensor, episode_starts: np.ndarray,
              values: th.Tensor, log_probs: th.Tensor, masks: np.ndarray | None, eos_allowed: np.ndarray) -> None:
        self._actions = actions.cpu().numpy()  # one host copy, for the buffer and for env.step
        buffer.add_rows(rows, last_obs, self._actions, episode_starts, values, log_probs, masks,
                        eos_allowed=eos_allowed)
        entropy = self.algo.policy.last_rollout_entropy
        if entropy is not None:
            buffer.step_entropy.extend(entropy[th.as_tensor(rows)].tolist())

    def step(self, actions: th.Tensor) -> tuple[Any, np.ndarray, list[dict[str, Any]]]:
        new_obs, _, dones, infos = self.env.step(self._actions)
        return new_obs, np.asarray(dones, dtype=bool), infos

    def finish_episodes(self, buffer: Any, rows: list[int], infos: list[dict[str, Any]]) -> None:
        self.algo.finish_episodes(buffer, rows, infos)

    def close(self, buffer: Any, last_obs: Any) -> Any:
        return last_obs


def device_rollout_supported(algo: Any, env: Any) -> bool:
    """Whether :class:`EngineSteps` gives exactly the :class:`VecEnvSteps` rollout for ``algo`` on ``env``."""
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv
    from agents.credit_mixin import CreditAssignmentMixin

    if type(env) is not TokenGenerationSB3VecEnv:  # a wrapper (VecMonitor, ...) must see every step
        return False
    # MaskablePPO computes masks per step from the numpy observation
    return type(algo).rollout_action_masks is CreditAssignmentMixin.rollout_action_masks


class _DeviceSteps:
    """Per-step rollout data kept on the device, one ``(N,)`` row per env step (written without any
    host index: no per-step transfer), scattered into the buffer's ``(buffer_size, N)`` arrays when flushed."""

    def __init__(self, buffer: Any, device: th.device) -> None:
        shape = (buffer.buffer_size, buffer.n_envs)  # a rollout takes at most buffer_size steps (n_steps + an episode)
        self.values = th.zeros(shape, dtype=th.float32, device=device)
        self.log_probs = th.zeros(shape, dtype=th.float32, device=device)
        self.entropy: list[tuple[th.Tensor, np.ndarray]] = []
        self.pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (step, slots, rows) not yet flushed
        self.n = 0

    def write(self, slots: np.ndarray, rows: np.ndarray, values: th.Tensor, log_probs: th.Tensor) -> None:
        if self.n >= len(self.values):  # pragma: no cover - the buffer-full check fires first
            raise RuntimeError("rollout longer than the device step store")
        self.values[self.n] = values.detach().reshape(-1).float()
        self.log_probs[self.n] = log_probs.detach().reshape(-1).float()
        self.pending.append((self.n, slots, rows))
        self.n += 1

    def flush(self, buffer: Any) -> None:
        """Scatter the steps written since the last flush into the buffer's values and log-probs (one transfer each)."""
        if not self.pending:
            return
        first = self.pending[0][0]
        values = self.values[first : self.n].cpu().numpy()
        log_probs = self.log_probs[first : self.n].cpu().numpy()
        for step, slots, rows in self.pending:
            buffer.values[slots, rows] = values[step - first, rows]
            buffer.log_probs[slots, rows] = log_probs[step - first, rows]
        self.pending = []


class EngineSteps:
    """Steps from the engine's device tensors (module doc); TokenPPO's default where exact."""

    def __init__(self, algo: Any, env: Any) -> None:
        self.algo, self.env, self.engine = algo, env, env.episodes
        self.steps: _DeviceSteps | None = None

    def reset(self) -> Any:
        return self.env.reset()

    def observation(self, last_obs: Any, eos_rule: tuple[int, int] | None, eos_allowed: np.ndarray) -> dict[str, th.Tensor]:
        dev = self.algo.device  # the engine's own tensors: no copy when the env and the policy share a device
        obs = {"input_ids": self.engine.input_ids.to(dev), "attention_mask": self.engine.attention_mask.to(dev)}
        if eos_rule is not None:  # the same rule as the host's eos_allowed, from the engine's gen_len (no transfer)
            obs[EOS_ALLOWED_KEY] = (self.engine.gen_len + 1 >= eos_rule[1]).to(dev)
        return obs

    def action_masks(self, obs: dict[str, th.Tensor]) -> None:
        return None

    def store(self, buffer: Any, rows: np.ndarray, last_obs: Any, actions: th.Tensor, episode_starts: np.ndarray,
              values: th.Tensor, log_probs: th.Tensor, masks: None, eos_allowed: np.ndarray) -> None:
        if self.steps is None:
            self.steps = _DeviceSteps(buffer, self.algo.device)
        slots = buffer.book_rows(rows, episode_starts, eos_allowed)
        self.steps.write(slots, rows, values, log_probs)
        entropy = self.algo.policy.last_rollout_entropy
        if entropy is not None:
            self.steps.entropy.append((entropy.detach(), rows))

    def step(self, actions: th.Tensor) -> tuple[Any, np.ndarray, list[dict[str, Any]]]:
        _, dones, infos = self.env.step_tokens(actions.reshape(-1))
        return None, np.asarray(dones, dtype=bool), infos  # no numpy observation: the engine's tensors are read

    def finish_episodes(self, buffer: Any, rows: list[int], infos: list[dict[str, Any]]) -> None:
        assert self.steps is not None
        self.steps.flush(buffer)  # the write-back reads the episode's stored log-probs
        n_before = len(buffer.episodes)
        self.algo.finish_episodes(buffer, rows, infos)
        for record in buffer.episodes[n_before:]:
            _write_steps(buffer, record, self.engine.pad_id)

    def close(self, buffer: Any, last_obs: Any) -> Any:
        if self.steps is not None:
            self.steps.flush(buffer)
            if self.steps.entropy:  # one transfer: every step's (N,) entropies, then the stored rows of each
                entropy = th.stack([e for e, _ in self.steps.entropy]).cpu().numpy()
                for k, (_, rows) in enumerate(self.steps.entropy):
                    buffer.step_entropy.extend(entropy[k, rows].tolist())
        return self.engine.observation()  # the VecEnv path's state, should it run next


def _write_steps(buffer: Any, record: Any, pad_id: int) -> None:
    """Each step's observation and action of a finished episode, rebuilt on the host from its final
    sequence (step t saw the prompt and the first t actions; the rest is padding, as the engine lays
    it out), so the buffer holds what the VecEnv path stores: per-transition algorithms and ``get()`` read it."""
    t = np.arange(record.gen_len)
    ids = np.asarray(record.input_ids)
    seen = np.arange(len(ids))[None, :] < (record.prompt_len + t)[:, None]  # (T, L)
    slots, row = record.slots, record.env_idx
    buffer.observations["input_ids"][slots, row] = np.where(seen, ids[None, :], pad_id)
    buffer.observations["attention_mask"][slots, row] = seen
    buffer.actions[slots, row] = ids[record.prompt_len + t].reshape(-1, 1)
