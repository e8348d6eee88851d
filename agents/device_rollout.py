"""Device-resident rollouts for :class:`~agents.token_ppo.TokenPPO` (issue 11).

The numpy rollout (:meth:`agents.credit_mixin.CreditAssignmentMixin.collect_rollouts`) moves
every token through SB3's VecEnv front end: the engine's torch batch becomes a numpy
observation (a copy of all ``N x L`` ids per step), back to a torch tensor for the policy,
the sampled actions go to numpy and back to torch for the engine, and the buffer is written
from numpy one step at a time (values and log-probs copied to the host each step).

:func:`collect_rollouts_device` runs the same loop on the engine itself
(:class:`abc_gym.core.TokenEpisodes`, held by :class:`~abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv`):

- the policy reads the engine's ``input_ids`` / ``attention_mask`` tensors in place, on the
  device; its actions go straight back to the engine (``step_autoreset``, the very routine
  the VecEnv calls, with the VecEnv's own row generators), so episodes, resets and random
  draws are the numpy path's, step for step;
- values, log-probs and entropies stay on the device in ``(buffer_size, N)`` tensors and are
  copied to the buffer's arrays only when an episode ends (its credit write-back reads its
  log-probs) and at the end of the rollout: a handful of transfers per rollout, not one per
  token; each finished episode's per-step observations and actions are rebuilt on the host
  from its final sequence (step t saw the prompt and t actions), so the buffer holds exactly
  what the numpy path stores;
- the fixed-length EOS rule (EOS refused before ``min_new_tokens``) is the same policy
  API as the numpy path: ``policy.eos_token_id`` / ``eos_min_new_tokens`` and the
  observation's ``eos_allowed`` flag, computed on the device from the engine's ``gen_len``;
- the credit contract and write-back are unchanged: each finished episode's final info
  (``token_rewards``, ``terminal_observation``) goes through the same ``_finish_episodes``.

What still syncs once per step: the engine decides on the host which rows ended (it scores
them and draws their next prompt from numpy generators), so each step reads the ``(N,)``
termination flags back. Everything of size ``N x L`` or ``N x V`` stays on the device.

Used when exact: TokenPPO with ``device_rollout=True`` (the default, ``TrainConfig.device_rollout``)
on an unwrapped :class:`~abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv` and no action masks;
otherwise the numpy path runs (:func:`device_rollout_supported` says which).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch as th

from agents import buffers as _buffers


def device_rollout_supported(algo: Any, env: Any) -> bool:
    """Whether :func:`collect_rollouts_device` gives exactly the numpy path's rollout for ``algo`` on ``env``."""
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    if type(env) is not TokenGenerationSB3VecEnv:  # a wrapper (VecMonitor, ...) must see every step
        return False
    if type(algo)._rollout_action_masks is not _mixin_rollout_action_masks():  # MaskablePPO: masks per step
        return False
    return True


def _mixin_rollout_action_masks() -> Any:
    from agents.credit_mixin import CreditAssignmentMixin

    return CreditAssignmentMixin._rollout_action_masks


def _eos_rule(algo: Any, env: Any) -> tuple[int, int] | None:
    """The numpy path's EOS rule (``(eos_id, min_new_tokens)`` or None), where the algorithm has one."""
    rule = getattr(algo, "_eos_rule", None)
    return None if rule is None else rule(env)


class _DeviceSteps:
    """Per-step rollout data kept on the device, one ``(N,)`` row per env step (written without any
    host index: no per-step transfer), scattered into the numpy buffer's ``(buffer_size, N)``
    arrays on the host when flushed."""

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


def _book_rows(buffer: Any, rows: np.ndarray, episode_starts: np.ndarray, eos_allowed: np.ndarray | None) -> np.ndarray:
    """The host bookkeeping of ``CreditBufferMixin.add_rows`` (slots, pending episodes, starts, EOS flag); returns the slots."""
    slots = buffer.row_pos[rows]
    if bool((slots >= buffer.buffer_size).any()):
        raise RuntimeError(
            f"rollout buffer full ({buffer.buffer_size} steps per env): an episode is longer than the "
            "observation allows; raise the buffer size"
        )
    buffer.episode_starts[slots, rows] = np.asarray(episode_starts, dtype=np.float32)[rows]
    key = getattr(_buffers, "EOS_ALLOWED_KEY", None)
    if key is not None and key in buffer.observations:
        allowed = np.ones(buffer.n_envs, dtype=bool) if eos_allowed is None else eos_allowed
        buffer.observations[key][slots, rows] = allowed[rows]
    for row, slot in zip(rows.tolist(), slots.tolist()):
        if episode_starts[row]:
            buffer.pending[row] = []
        buffer.pending[row].append(slot)
    buffer.row_pos[rows] += 1
    return slots


def _write_steps(buffer: Any, record: Any, pad_id: int) -> None:
    """Each step's observation and action of a finished episode, rebuilt on the host from its final
    sequence (step t saw the prompt and the first t actions; the rest is padding, as the engine
    lays it out), so the buffer holds what the numpy path stores: per-transition algorithms and
    ``get()`` read it."""
    t = np.arange(record.gen_len)
    ids = np.asarray(record.input_ids)
    seen = np.arange(len(ids))[None, :] < (record.prompt_len + t)[:, None]  # (T, L)
    slots, row = record.slots, record.env_idx
    buffer.observations["input_ids"][slots, row] = np.where(seen, ids[None, :], pad_id)
    buffer.observations["attention_mask"][slots, row] = seen
    buffer.actions[slots, row] = ids[record.prompt_len + t].reshape(-1, 1)


def collect_rollouts_device(algo: Any, env: Any, callback: Any, rollout_buffer: Any, n_rollout_steps: int) -> bool:
    """:meth:`CreditAssignmentMixin.collect_rollouts` on the engine's device tensors (module doc)."""
    if algo._update_horizon is not None and algo._n_completed_updates >= algo._update_horizon[1]:
        return False
    t_start, steps_before = time.time(), algo.num_timesteps
    policy = algo.policy
    policy.set_training_mode(False)
    rollout_buffer.reset()
    engine = env.episodes
    n_envs = env.num_envs
    if algo._in_episode is None:
        algo._in_episode = ~np.asarray(algo._last_episode_starts, dtype=bool)
    if algo._in_episode.any():  # drop the unstored tails of the last rollout: every episode starts here
        env.reset()
        algo._last_episode_starts = np.ones(n_envs, dtype=bool)
        algo._in_episode = np.zeros(n_envs, dtype=bool)
    storing = np.ones(n_envs, dtype=bool)
    eos_rule = _eos_rule(algo, env)
    policy.eos_token_id, policy.eos_min_new_tokens = (None, None) if eos_rule is None else eos_rule
    eos_key = getattr(_buffers, "EOS_ALLOWED_KEY", None)
    generated = np.zeros(n_envs, dtype=np.int64)  # host copy of engine.gen_len, from the dones (no sync)
    dev = algo.device
    steps = _DeviceSteps(rollout_buffer, dev)
    episode_starts = np.asarray(algo._last_episode_starts, dtype=bool)
    callback.on_rollout_start()
    n_steps = 0
    while True:
        if n_steps >= n_rollout_steps:
            storing &= algo._in_episode
            if not storing.any():
                break
        # the engine's own tensors (no copy when the env and the policy share a device)
        obs = {"input_ids": engine.input_ids.to(dev), "attention_mask": engine.attention_mask.to(dev)}
        eos_allowed = None
        if eos_rule is not None and eos_key is not None:
            obs[eos_key] = (engine.gen_len + 1 >= eos_rule[1]).to(dev)
            eos_allowed = generated + 1 >= eos_rule[1]
        with th.no_grad():
            actions, values, log_probs = policy(obs)
        rows = np.flatnonzero(storing)
        slots = _book_rows(rollout_buffer, rows, episode_starts, eos_allowed)
        steps.write(slots, rows, values, log_probs)
        if policy.last_rollout_entropy is not None:
            steps.entropy.append((policy.last_rollout_entropy.detach(), rows))
        result = engine.step_autoreset(actions.reshape(-1), env._rngs)
        dones = result.terminated
        infos: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        for j, row in enumerate(result.finished):
            infos[row] = result.final_infos[row]
            infos[row]["terminal_observation"] = {k: v[j] for k, v in result.final_obs.items()}
            infos[row]["TimeLimit.truncated"] = False
        algo.num_timesteps += n_envs
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        algo._update_info_buffer(infos, dones)
        generated = np.where(dones, 0, generated + 1)
        finished = [int(r) for r in rows if dones[r]]
        if finished:
            steps.flush(rollout_buffer)  # the write-back reads the episode's stored log-probs
            n_before = len(rollout_buffer.episodes)
            algo._finish_episodes(rollout_buffer, finished, infos)
            for record in rollout_buffer.episodes[n_before:]:
                _write_steps(rollout_buffer, record, engine.pad_id)
        algo._in_episode = ~np.asarray(dones, dtype=bool)
        episode_starts = np.asarray(dones, dtype=bool)
        n_steps += 1

    steps.flush(rollout_buffer)
    if steps.entropy:  # one transfer: every step's (N,) entropies, then the stored rows of each
        entropy = th.stack([e for e, _ in steps.entropy]).cpu().numpy()
        for k, (_, rows) in enumerate(steps.entropy):
            rollout_buffer.step_entropy.extend(entropy[k, rows].tolist())
    algo._last_obs = engine.observation()  # the numpy path's state, should it run next
    algo._last_episode_starts = episode_starts
    dp = getattr(algo, "dp", None)
    if dp is not None:  # timesteps over all ranks, as the numpy path (one process: unchanged)
        algo.num_timesteps = steps_before + int(dp.sum([algo.num_timesteps - steps_before])[0])
    rollout_buffer.compute_returns_and_advantage()
    algo._end_rollout(rollout_buffer, time.time() - t_start)
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True
