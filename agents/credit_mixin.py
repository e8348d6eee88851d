"""``CreditAssignmentMixin``: what the RLHF setting adds to an SB3 on-policy algorithm.

Each algorithm (:mod:`agents.ppo`, :mod:`agents.a2c`, :mod:`agents.trpo`,
:mod:`agents.maskable_ppo`) is the SB3 / sb3-contrib class plus this mixin:

- the env: a registered id string becomes a batched :class:`TokenGenerationSB3VecEnv`;
  anything that is not a token env is refused with a clear error;
- the policy: :class:`~agents.policy.TransformerActorCriticPolicy`, its LM defaulting to
  the env's own policy model;
- rollouts (:meth:`collect_rollouts`), "complete first": collect ``n_steps`` steps per
  env, then keep stepping while any env has an episode begun in this rollout still
  running (those envs keep storing; envs whose episode ended stop storing). Every
  stored episode is therefore complete when the update runs, and its credit has been
  written back. The steps an env takes after it stopped storing belong to an episode
  that is never stored: the env is reset at the start of the next rollout, so that
  episode is dropped whole (never trained on, never half-credited);
- credit: at each episode's end, ``info["token_rewards"]`` minus the per-token KL
  penalty is written over that episode's steps (:mod:`agents.buffers`); the reference
  log-probs come from one teacher-forced forward of the frozen initial policy;
- deferred values (:attr:`~CreditAssignmentMixin.defer_values`): with a separate value trunk
  the rollout does not decode it per step; each finished episode's values come from one
  forward of the value trunk over its final sequence, written before any return is computed
  (nothing is bootstrapped: every stored episode is complete);
- KL coefficient: fixed or adaptive (:mod:`agents.kl`), updated once per rollout;
- horizon: ``learn(n_updates=N)`` (or ``model.max_updates = N``) runs N updates and the
  schedules (learning rate, clip range) run from their start value at the first update to
  their final value at the last; without it SB3's ``total_timesteps`` is the horizon;
- metrics (:mod:`agents.metrics`): one dict per update in :attr:`update_metrics` (and the
  ``on_update`` hook), and one row per update in SB3's logger (``rlhf/*``, ``train/*``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from agents import compat
from agents.buffers import EOS_ALLOWED_KEY, CreditDictRolloutBuffer
from agents.distributed import LOCAL, DataParallel
from agents.env_util import check_token_env, env_policy_path, make_token_vec_env
from agents.kl import make_kl_controller, sequence_log_probs
from agents.metrics import rollout_stats, update_metrics
from agents.policy import TransformerActorCriticPolicy
from agents.rollout_sources import VecEnvSteps

TOKEN_POLICY_ALIASES: dict[str, type[BasePolicy]] = {"TransformerPolicy": TransformerActorCriticPolicy}


class CreditAssignmentMixin:
    """Token-credit write-back, KL penalty, complete-episode rollouts, update horizon and metrics (see module doc)."""

    credit_buffer_class: ClassVar[type] = CreditDictRolloutBuffer
    dp: DataParallel = LOCAL  # data-parallel group (agents.distributed); agents.training sets it under torchrun
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = TOKEN_POLICY_ALIASES
    #: With a separate value trunk, compute each finished episode's values in one forward over its final
    #: sequence (:meth:`~agents.policy.TransformerActorCriticPolicy.episode_values`) instead of a KV-cached
    #: value decode per step (the same values within float rounding, about half the rollout's decode work).
    #: False: the per-step path. No effect with a shared trunk (its values come with the actions).
    defer_values: bool = True

    # set by _init_credit
    kl_coef: float
    adaptive_kl: bool
    kl_target: float
    kl_horizon: float

    def _init_credit(
        self,
        env: Any,
        policy_kwargs: dict[str, Any] | None,
        kl_coef: float,
        adaptive_kl: bool,
        kl_target: float,
        kl_horizon: float,
        n_steps: int = 1,
    ) -> tuple[Any, dict[str, Any]]:
        """Check the env, fill in the policy's LM, set the KL and bookkeeping attributes (call before SB3's ``__init__``)."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1 (steps per env before episodes are completed), got {n_steps}")
        if isinstance(env, str):
            env = make_token_vec_env(env)
        policy_kwargs = dict(policy_kwargs or {})
        if env is not None:
            check_token_env(env)
            if policy_kwargs.get("model_name_or_path") is None:
                path = env_policy_path(env)
                if path is None:
                    raise ValueError(
                        "the env has no policy_name_or_path: pass policy_kwargs=dict(model_name_or_path=...) "
                        "with a causal LM that uses the env's tokenizer"
                    )
                policy_kwargs["model_name_or_path"] = path
        self.kl_coef, self.adaptive_kl = float(kl_coef), bool(adaptive_kl)
        self.kl_target, self.kl_horizon = float(kl_target), float(kl_horizon)
        self.kl_ctl = None
        self.max_updates: int | None = None  # updates per learn() call; None: total_timesteps decides
        self._update_horizon: tuple[int, int] | None = None  # (first, last) update number of this learn()
        self._n_completed_updates = 0  # over the model's whole history (saved: a resumed run continues it)
        self.update_metrics: list[dict[str, Any]] = []
        self.on_update: Callable[[dict[str, Any]], None] | None = None
        self._in_episode: np.ndarray | None = None
        self._values_deferred = False  # this rollout's choice (_defers_values), read by finish_episodes
        self._rollout_stats: dict[str, Any] = {}
        self._t0 = 0.0
        return env, policy_kwargs

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        if self.n_steps < 1:  # type: ignore[attr-defined]
            raise ValueError(f"n_steps must be >= 1 (steps per env before episodes are completed), got {self.n_steps}")
        max_len = int(self.observation_space["input_ids"].shape[0])  # type: ignore[attr-defined, index]
        # n_steps, plus room to finish an episode begun on the last of them (an episode is < L steps).
        self.rollout_buffer = self.credit_buffer_class(
            self.n_steps + max_len,  # type: ignore[attr-defined]
            self.observation_space,  # type: ignore[attr-defined]
            self.action_space,  # type: ignore[attr-defined]
            device=self.device,  # type: ignore[attr-defined]
            gamma=self.gamma,  # type: ignore[attr-defined]
            gae_lambda=self.gae_lambda,  # type: ignore[attr-defined]
            n_envs=self.n_envs,  # type: ignore[attr-defined]
        )
        self.ref_model = self.policy.frozen_copy()  # type: ignore[attr-defined]
        self._ref_cache = None
        if self.kl_ctl is None:  # a loaded model keeps its adapted coefficient
            self.kl_ctl = make_kl_controller(self.kl_coef, self.adaptive_kl, self.kl_target, self.kl_horizon)

    def _excluded_save_params(self) -> list[str]:
        # The horizon and the episode state belong to one learn() call: a loaded model starts afresh.
        per_call = ["max_updates", "_update_horizon", "_in_episode", "_t0", "dp", "_standalone_callback", "_values_deferred"]
        return [*super()._excluded_save_params(), "ref_model", "_ref_cache", "on_update", *per_call]  # type: ignore[misc]

    # ------------------------------------------------------------------ horizon
    def learn(self, total_timesteps: int | None = None, *args: Any, n_updates: int | None = None, **kwargs: Any):
        """SB3's ``learn``, or ``learn(n_updates=N)``: exactly N updates, schedules spanning them.

        :param total_timesteps: env timesteps (SB3's horizon); ignored when ``n_updates`` is given.
        :param n_updates: number of rollouts + updates; the schedules reach their final value at the last.
        """
        if n_updates is not None and n_updates < 1:
            raise ValueError(f"n_updates must be >= 1, got {n_updates}")
        # n_updates is this call's horizon only: a later learn(total_timesteps=...) is SB3's again
        # (model.max_updates, set by the caller, stays until they change it).
        kept = self.max_updates
        if n_updates is not None:
            self.max_updates = int(n_updates)
        try:
            if self.max_updates is not None:
                total_timesteps = self.max_updates * self.max_rollout_timesteps()
            if total_timesteps is None:
                raise TypeError("learn() needs total_timesteps or n_updates")
            return super().learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]
        finally:
            self.max_updates = kept

    def max_rollout_timesteps(self) -> int:
        """Upper bound of the env timesteps of one rollout: ``n_steps`` plus the longest episode, per env
        (over all ranks' envs under torchrun, as ``num_timesteps`` counts them)."""
        max_len = int(self.observation_space["input_ids"].shape[0])  # type: ignore[attr-defined, index]
        return (self.n_steps + max_len) * self.n_envs * self.dp.world_size  # type: ignore[attr-defined]

    def _setup_learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True, *args: Any, **kwargs: Any):
        if self.max_updates is None:
            self._update_horizon = None
        else:
            done = self._n_completed_updates
            # As SB3 with timesteps: reset_num_timesteps=False continues the schedules of the run so far.
            first = done + 1 if reset_num_timesteps else 1
            self._update_horizon = (first, done + self.max_updates)
        # SB3 resets the env when reset_num_timesteps; otherwise the env may be new (a loaded model): reset it
        # at the first rollout, which only drops episodes that are never stored.
        self._in_episode = None if reset_num_timesteps else np.ones(self.n_envs, dtype=bool)  # type: ignore[attr-defined]
        self._t0 = time.time() - (self.update_metrics[-1]["wall_time"] if self.update_metrics else 0.0)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, *args, **kwargs)  # type: ignore[misc]

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        if self._update_horizon is None:
            super()._update_current_progress_remaining(num_timesteps, total_timesteps)  # type: ignore[misc]
            return
        first, last = self._update_horizon
        upcoming = self._n_completed_updates + 1  # SB3 calls this between the rollout and its update
        compat.set_progress_remaining(self, 1.0 - (upcoming - first) / (last - first) if last > first else 1.0)

    def dump_logs(self, iteration: int = 0) -> None:
        """SB3 dumps a row here, before the update; keep its records for the one row :meth:`train` writes."""
        with compat.deferred_dump(self.logger):  # type: ignore[attr-defined]
            super().dump_logs(iteration)  # type: ignore[misc]

    # ------------------------------------------------------------------ rollouts
    def rollout_action_masks(self, env: VecEnv, obs: dict[str, th.Tensor]) -> np.ndarray | None:
        """``(N, V)`` bool masks for this step, or ``None`` (overridden by MaskablePPO)."""
        return None

    def _eos_rule(self, env: VecEnv) -> tuple[int, int] | None:
        """``(eos_id, min_new_tokens)`` when the env refuses EOS before ``min_new_tokens``, else None.

        Read from the env once per rollout (settings may change between rollouts); an env
        that does not expose them gets no EOS masking.
        """
        try:
            if not bool(env.get_attr("eos_ends_episode")[0]):
                return None
            eos, min_new = env.get_attr("eos_id")[0], env.get_attr("min_new_tokens")[0]
        except (AttributeError, KeyError):
            return None
        return None if eos is None else (int(eos), int(min_new))

    def _step_source(self, env: VecEnv, use_masking: bool) -> Any:
        """Where this rollout's steps come from (:mod:`agents.rollout_sources`): the SB3 VecEnv front
        end here; TokenPPO returns the engine's device tensors where that is exact."""
        return VecEnvSteps(self, env, use_masking)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, n_rollout_steps: int, use_masking: bool = True
    ) -> bool:
        """Fill the buffer with complete, credited episodes (see module doc). The one rollout loop:
        the source of steps (:meth:`_step_source`) decides how observations are read, actions applied
        and steps stored; the bookkeeping, the write-back and the statistics are here, once.

        ``use_masking``: sb3-contrib's MaskablePPO passes ``learn(use_masking=...)`` here; False
        samples without action masks (the buffer's masks stay all ones). Other learners have none.
        """
        if self._update_horizon is not None and self._n_completed_updates >= self._update_horizon[1]:
            return False
        t_start, steps_before = time.time(), self.num_timesteps  # type: ignore[attr-defined]
        policy = self.policy  # type: ignore[attr-defined]
        policy.set_training_mode(False)
        rollout_buffer.reset()
        source = self._step_source(env, use_masking)
        n_envs = env.num_envs
        if self._in_episode is None:
            self._in_episode = ~np.asarray(self._last_episode_starts, dtype=bool)  # type: ignore[attr-defined]
        if self._in_episode.any():  # drop the unstored tails of the last rollout: every episode starts here
            self._last_obs = source.reset()  # type: ignore[attr-defined]
            self._last_episode_starts = np.ones(n_envs, dtype=bool)  # type: ignore[attr-defined]
            self._in_episode = np.zeros(n_envs, dtype=bool)
        storing = np.ones(n_envs, dtype=bool)
        # Fixed-length completions: EOS may not end an episode before min_new_tokens, so the policy
        # must not sample it there. Every episode starts at this rollout's first step (see above),
        # so counting steps since each row's episode start gives its generated length.
        eos_rule = self._eos_rule(env)
        policy.eos_token_id, policy.eos_min_new_tokens = (None, None) if eos_rule is None else eos_rule
        generated = np.zeros(n_envs, dtype=np.int64)
        self._values_deferred = self._defers_values()
        # values left to the update's first forward (TokenPPO, one minibatch): no value forward here at all
        rollout_buffer.values_pending = self._values_deferred and self._values_in_update(env)
        skip_values = {"with_values": False} if self._values_deferred else {}  # NaN placeholders until episodes end
        callback.on_rollout_start()
        n_steps = 0
        while True:
            if n_steps >= n_rollout_steps:
                storing &= self._in_episode  # past the budget only unfinished episodes go on
                if not storing.any():
                    break
            eos_allowed = np.ones(n_envs, dtype=bool) if eos_rule is None else generated + 1 >= eos_rule[1]
            with th.no_grad():
                obs = source.observation(self._last_obs, eos_rule, eos_allowed)  # type: ignore[attr-defined]
                masks = source.action_masks(obs)
                if masks is None:
                    actions, values, log_probs = policy(obs, **skip_values)
                else:
                    actions, values, log_probs = policy(obs, action_masks=masks, **skip_values)
            rows = np.flatnonzero(storing)
            source.store(rollout_buffer, rows, self._last_obs, actions, self._last_episode_starts, values, log_probs, masks, eos_allowed)  # type: ignore[attr-defined]
            self._last_obs, dones, infos = source.step(actions)  # env rewards are 0 / R: the credit comes from infos
            self.num_timesteps += n_envs  # type: ignore[attr-defined]
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)  # type: ignore[attr-defined]
            generated = np.where(dones, 0, generated + 1)
            finished = [int(r) for r in rows if dones[r]]
            if finished:
                source.finish_episodes(rollout_buffer, finished, infos)
            self._in_episode = ~dones
            self._last_episode_starts = dones  # type: ignore[attr-defined]
            n_steps += 1

        self._last_obs = source.close(rollout_buffer, self._last_obs)  # type: ignore[attr-defined]
        # timesteps over all ranks (every rank then agrees on SB3's stopping rule); one process: unchanged
        self.num_timesteps = steps_before + int(self.dp.sum([self.num_timesteps - steps_before])[0])  # type: ignore[attr-defined]
        if not rollout_buffer.values_pending:  # otherwise GAE runs once the update's forward gave the values
            rollout_buffer.compute_returns_and_advantage()
        self._end_rollout(rollout_buffer, time.time() - t_start)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _defers_values(self) -> bool:
        """Whether this rollout defers the values (:attr:`defer_values` and a policy with a separate value trunk)."""
        policy = self.policy  # type: ignore[attr-defined]
        return bool(self.defer_values) and getattr(policy, "value_model", None) is not None and hasattr(policy, "episode_values")

    def _values_in_update(self, env: VecEnv) -> bool:
        """Whether this rollout leaves the deferred values to the update's first forward (TokenPPO
        overrides: when one minibatch holds every episode, that forward computes them anyway)."""
        return False

    def finish_episodes(self, buffer: Any, rows: list[int], infos: list[dict[str, Any]]) -> None:
        """Credit write-back for the episodes that ended on ``rows`` this step (one reference forward;
        with deferred values also one value-trunk forward, whose values are written first, unless the
        buffer leaves them to the update: ``values_pending``)."""
        for r in rows:
            if "token_rewards" not in infos[r] or "terminal_observation" not in infos[r]:
                raise ValueError(
                    "the env's final step info has no 'token_rewards' / 'terminal_observation': agents need an "
                    "abc_gym token env (it writes the per-token credit into the final info)"
                )
        term = [infos[r]["terminal_observation"] for r in rows]
        ids = th.as_tensor(np.stack([t["input_ids"] for t in term]), device=self.device).long()  # type: ignore[attr-defined]
        mask = th.as_tensor(np.stack([t["attention_mask"] for t in term]), device=self.device).long()  # type: ignore[attr-defined]
        gen_len = th.as_tensor([int(infos[r]["num_tokens"]) for r in rows], device=ids.device)
        prompt_len = mask.sum(-1) - gen_len
        # The reference sees the constraints the policy sampled under (kl.sequence_log_probs): the
        # stored per-step EOS flags and, for MaskablePPO, the stored action masks.
        t_max = int(gen_len.max())
        slots = [np.asarray(buffer.pending[r], dtype=np.int64) for r in rows]
        eos_allowed = th.ones((len(rows), t_max), dtype=th.bool)
        for j, (r, s) in enumerate(zip(rows, slots)):
            eos_allowed[j, : len(s)] = th.as_tensor(buffer.observations[EOS_ALLOWED_KEY][s, r])
        action_masks = None
        if getattr(buffer, "action_masks", None) is not None:  # all ones where no mask was given
            action_masks = th.ones((len(rows), t_max, buffer.action_masks.shape[-1]), dtype=th.bool)
            for j, (r, s) in enumerate(zip(rows, slots)):
                action_masks[j, : len(s)] = th.as_tensor(buffer.action_masks[s, r] > 0.5)
        eos_id = getattr(self.policy, "eos_token_id", None)  # type: ignore[attr-defined]
        ref_lp = sequence_log_probs(
            self.ref_model, ids, mask, prompt_len, gen_len, eos_token_id=eos_id, eos_allowed=eos_allowed, action_masks=action_masks
        ).cpu().numpy()
        if getattr(self, "_values_deferred", False) and not buffer.values_pending:
            values = self.policy.episode_values(ids, mask, prompt_len, gen_len).cpu().numpy()  # type: ignore[attr-defined]
            for j, r in enumerate(rows):
                buffer.write_episode_values(r, values[j, : int(gen_len[j])])
        for j, r in enumerate(rows):
            buffer.finish_episode(r, infos[r], ref_lp[j, : int(gen_len[j])], self.kl_ctl.value)

    def _end_rollout(self, buffer: Any, rollout_time: float) -> None:
        """Episode statistics of this rollout, logged; then the adaptive KL step."""
        self._rollout_stats = rollout_stats(buffer, self.kl_ctl.value, rollout_time, self.dp)  # over all ranks
        for key, value in self._rollout_stats.items():
            if value is not None:
                self.logger.record(f"rlhf/{key}", value)  # type: ignore[attr-defined]
        self.kl_ctl.update(self._rollout_stats["kl"], self._rollout_stats["episodes"])

    def _entropy_grad(self) -> bool:
        """Whether a sequence-level loss differentiates the entropy (``evaluate_episodes(entropy_grad=...)``):
        not at ``ent_coef == 0``, where its gradient is zeros; skipping the backward through the
        full-vocabulary softmax leaves the weights bit for bit the same (tests/test_fast_options.py)."""
        return getattr(self, "ent_coef", 0.0) != 0

    def collect_rollout(self) -> Any:
        """One rollout outside ``learn()`` (benchmarks, inspection): the buffer, filled with complete,
        credited episodes of ``n_steps`` per env. The first call sets up as ``learn`` does (env reset,
        counters from 0); later calls continue. Nothing is trained."""
        if getattr(self, "_standalone_callback", None) is None:
            _, self._standalone_callback = self._setup_learn(10**12, None)  # type: ignore[attr-defined]
        if not self.collect_rollouts(self.env, self._standalone_callback, self.rollout_buffer, self.n_steps):  # type: ignore[attr-defined]
            raise RuntimeError("collect_rollout(): the run's update horizon is reached")
        return self.rollout_buffer  # type: ignore[attr-defined]

    def update(self) -> None:
        """The algorithm's update on the buffer's rollout (what ``learn`` runs after each rollout), without
        the metrics row: with :meth:`collect_rollout`, times or inspects one update."""
        self._update()

    # ------------------------------------------------------------------ update
    def train(self) -> None:
        """The algorithm's update, then this update's metrics: one logger row, one dict, the hook."""
        t = time.time()
        self._update()
        self._n_completed_updates += 1
        now = time.time()
        metrics = update_metrics(
            self._n_completed_updates, self.num_timesteps, self._rollout_stats,  # type: ignore[attr-defined]
            self._logged_over_ranks(), wall_time=now - self._t0, update_time=now - t,
        )
        self.logger.record("rlhf/update_time", metrics["update_time"])  # type: ignore[attr-defined]
        self.logger.dump(step=self.num_timesteps)  # type: ignore[attr-defined]
        self.update_metrics.append(metrics)
        if self.on_update is not None:
            self.on_update(metrics)

    def _update(self) -> None:
        """The algorithm's own update (SB3's ``train``); TokenPPO replaces it."""
        with self.dp.sharded_minibatches(self):  # one process: unchanged
            super().train()  # type: ignore[misc]

    def _logged_over_ranks(self) -> dict[str, Any]:
        """The logger's records, ``train/*`` averaged over ranks by their transitions (written back: rank 0 logs those)."""
        logged = self.dp.mean_of_ranks(dict(self.logger.name_to_value), weight=self.rollout_buffer.n_valid)  # type: ignore[attr-defined]
        self.logger.name_to_value.update(logged)  # type: ignore[attr-defined]
        return logged
