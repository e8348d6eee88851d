"""Credit-aware PPO, A2C (SB3), TRPO and MaskablePPO (sb3-contrib) with one shared mixin.

:class:`CreditAssignmentMixin` holds everything the RLHF setting adds to an SB3
on-policy algorithm; each algorithm below is the SB3 class plus the mixin:

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
- KL coefficient: fixed or adaptive (:mod:`agents.kl`), updated once per rollout;
- metrics: one dict per update in :attr:`update_metrics` (and ``on_update`` hook),
  also recorded in SB3's logger (``rlhf/*``).

Defaults follow the paper / trl 0.7.4 where it has one: gamma 1, GAE lambda 0.95,
clip 0.2, value clip 0.2, vf_coef 0.1, 4 epochs, advantage whitening, KL 0.2 adaptive
(target 6, horizon 10000).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from sb3_contrib import TRPO as _TRPO
from sb3_contrib import MaskablePPO as _MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3 import A2C as _A2C
from stable_baselines3 import PPO as _PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from agents.buffers import CreditDictRolloutBuffer, MaskableCreditDictRolloutBuffer
from agents.kl import make_kl_controller, sequence_log_probs
from agents.policy import (
    MaskableTransformerActorCriticPolicy,
    RowKVCache,
    TransformerActorCriticPolicy,
    base_of,
    check_token_spaces,
)

TOKEN_POLICY_ALIASES: dict[str, type[BasePolicy]] = {"TransformerPolicy": TransformerActorCriticPolicy}


# ----------------------------------------------------------------------------- env


def make_token_vec_env(
    env_id: str, num_envs: int = 16, reward_mode: str = "abc", beta: float = 0.8, device: str = "cpu", seed: int | None = None, **kwargs: Any
) -> VecEnv:
    """A registered abc_gym id as one batched SB3 ``VecEnv`` (rows seeded ``seed + i``)."""
    import abc_gym  # noqa: F401  (registers the ids)
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    if env_id not in gym.registry:
        known = ", ".join(k for k in gym.registry if k.startswith("abc_gym/"))
        raise ValueError(f"unknown env id {env_id!r}: use one of {known}")
    env = TokenGenerationSB3VecEnv.from_env_id(env_id, num_envs=num_envs, reward_mode=reward_mode, beta=beta, device=device, **kwargs)
    if seed is not None:
        env.seed(seed)
    return env


def check_token_env(env: Any) -> None:
    """Refuse anything that is not an abc_gym-style token env, naming the fix."""
    if isinstance(env, gym.vector.VectorEnv):
        raise ValueError(
            "got a gymnasium VectorEnv (gym.make_vec); SB3 needs its own VecEnv: use "
            "abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv.from_env_id(env_id, num_envs=N) or pass the env id string"
        )
    if not hasattr(env, "observation_space") or not hasattr(env, "action_space"):
        raise ValueError(f"expected a token env or an env id string, got {type(env).__name__}")
    check_token_spaces(env.observation_space, env.action_space)


def env_policy_path(env: Any) -> str | None:
    """The env's own policy model (``policy_name_or_path``), if it has one."""
    try:
        if isinstance(env, VecEnv):
            return env.get_attr("policy_name_or_path")[0]
        return env.get_wrapper_attr("policy_name_or_path")
    except (AttributeError, KeyError):
        return None


# ----------------------------------------------------------------------------- mixin


class CreditAssignmentMixin:
    """Token-credit write-back, KL penalty, complete-episode rollouts and metrics (see module doc)."""

    credit_buffer_class: ClassVar[type] = CreditDictRolloutBuffer
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = TOKEN_POLICY_ALIASES

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
                policy_kwargs["model_name_or_path"] = str(path)
        self.kl_coef, self.adaptive_kl = float(kl_coef), bool(adaptive_kl)
        self.kl_target, self.kl_horizon = float(kl_target), float(kl_horizon)
        self.kl_ctl = None
        self.max_updates: int | None = None
        self.update_metrics: list[dict[str, Any]] = []
        self.on_update: Callable[[dict[str, Any]], None] | None = None
        self._in_episode: np.ndarray | None = None
        self._rollout_stats: dict[str, Any] = {}
        self._n_rollouts = 0
        self._t0: float | None = None
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
        if self.kl_ctl is None:
            self.kl_ctl = make_kl_controller(self.kl_coef, self.adaptive_kl, self.kl_target, self.kl_horizon)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "ref_model", "_ref_cache", "on_update"]  # type: ignore[misc]

    # ------------------------------------------------------------------ rollouts
    def _rollout_action_masks(self, env: VecEnv, obs: dict[str, th.Tensor]) -> np.ndarray | None:
        """``(N, V)`` bool masks for this step, or ``None`` (overridden by MaskablePPO)."""
        return None

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, n_rollout_steps: int, *_: Any, **__: Any
    ) -> bool:
        """Fill the buffer with complete, credited episodes (see module doc)."""
        if self.max_updates is not None and self._n_rollouts >= self.max_updates:
            return False
        if self._t0 is None:
            self._t0 = time.time()
        t_start = time.time()
        policy = self.policy  # type: ignore[attr-defined]
        policy.set_training_mode(False)
        rollout_buffer.reset()
        n_envs = env.num_envs
        if self._in_episode is None:
            self._in_episode = ~np.asarray(self._last_episode_starts, dtype=bool)  # type: ignore[attr-defined]
        if self._in_episode.any():  # drop the unstored tails of the last rollout: every episode starts here
            self._last_obs = env.reset()  # type: ignore[attr-defined]
            self._last_episode_starts = np.ones(n_envs, dtype=bool)  # type: ignore[attr-defined]
            self._in_episode = np.zeros(n_envs, dtype=bool)
        storing = np.ones(n_envs, dtype=bool)
        callback.on_rollout_start()
        n_steps = 0
        while True:
            if n_steps >= n_rollout_steps:
                storing &= self._in_episode  # past the budget only unfinished episodes go on
                if not storing.any():
                    break
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[attr-defined]
                masks = self._rollout_action_masks(env, obs_tensor)
                if masks is None:
                    actions, values, log_probs = policy(obs_tensor)
                else:
                    actions, values, log_probs = policy(obs_tensor, action_masks=masks)
            actions = actions.cpu().numpy()
            new_obs, _, dones, infos = env.step(actions)  # env rewards are 0 / R: the credit comes from infos
            self.num_timesteps += n_envs  # type: ignore[attr-defined]
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)  # type: ignore[attr-defined]
            rows = np.flatnonzero(storing)
            rollout_buffer.add_rows(rows, self._last_obs, actions, self._last_episode_starts, values, log_probs, masks)  # type: ignore[attr-defined]
            if policy.last_rollout_entropy is not None:
                rollout_buffer.step_entropy.extend(policy.last_rollout_entropy[th.as_tensor(rows)].tolist())
            finished = [int(r) for r in rows if dones[r]]
            if finished:
                self._finish_episodes(rollout_buffer, finished, infos)
            self._in_episode = ~np.asarray(dones, dtype=bool)
            self._last_obs = new_obs  # type: ignore[attr-defined]
            self._last_episode_starts = dones  # type: ignore[attr-defined]
            n_steps += 1

        rollout_buffer.compute_returns_and_advantage()
        self._end_rollout(rollout_buffer, time.time() - t_start)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _finish_episodes(self, buffer: Any, rows: list[int], infos: list[dict[str, Any]]) -> None:
        """Credit write-back for the episodes that ended on ``rows`` this step (one reference forward)."""
        for r in rows:
            if "token_rewards" not in infos[r] or "terminal_observation" not in infos[r]:
                raise ValueError(
                    "the env's final step info has no 'token_rewards' / 'terminal_observation': agents need an "
                    "abc_gym token env (it writes the per-token credit into the final info)"
                )
        term = [infos[r]["terminal_observation"] for r in rows]
        ids = th.as_tensor(np.stack([t["input_ids"] for t in term]), device=self.device).long()  # type: ignore[attr-defined]
        mask = th.as_tensor(np.stack([t["attention_mask"] for t in term]), device=self.device).long()  # type: ignore[attr-defined]
        gen_len = th.as_tensor([len(infos[r]["token_rewards"]) for r in rows], device=ids.device)
        prompt_len = mask.sum(-1) - gen_len
        ref_lp = sequence_log_probs(self.ref_model, ids, mask, prompt_len, gen_len).cpu().numpy()
        for j, r in enumerate(rows):
            buffer.finish_episode(r, infos[r], ref_lp[j, : int(gen_len[j])], self.kl_ctl.value)

    def _end_rollout(self, buffer: Any, rollout_time: float) -> None:
        """Episode statistics of this rollout, logged; then the adaptive KL step."""
        eps = buffer.episodes
        gold = [e.gold_score for e in eps if e.gold_score is not None]
        kl_mean = float(np.mean([e.kl for e in eps])) if eps else 0.0
        self._rollout_stats = {
            "episodes": len(eps),
            "transitions": buffer.n_valid,
            "rm_score": float(np.mean([e.score for e in eps])) if eps else float("nan"),
            "gold_score": float(np.mean(gold)) if gold else None,
            "kl": kl_mean,
            "kl_coef": self.kl_ctl.value,
            "entropy": float(np.mean(buffer.step_entropy)) if buffer.step_entropy else None,
            "mean_len": float(np.mean([e.gen_len for e in eps])) if eps else 0.0,
            "rollout_time": rollout_time,
        }
        for key, value in self._rollout_stats.items():
            if value is not None:
                self.logger.record(f"rlhf/{key}", value)  # type: ignore[attr-defined]
        self.kl_ctl.update(kl_mean, len(eps))
        self._n_rollouts += 1

    # ------------------------------------------------------------------ update
    def train(self) -> None:
        t = time.time()
        self._update()
        logged = dict(self.logger.name_to_value)  # type: ignore[attr-defined]
        metrics = {
            "update": self._n_rollouts,
            "timesteps": int(self.num_timesteps),  # type: ignore[attr-defined]
            **{k: self._rollout_stats.get(k) for k in ("episodes", "rm_score", "gold_score", "kl", "kl_coef")},
            "value_loss": _first(logged, "train/value_loss"),
            "entropy": self._rollout_stats.get("entropy"),
            "policy_loss": _first(logged, "train/policy_gradient_loss", "train/policy_loss")
            if "train/policy_objective" not in logged
            else -float(logged["train/policy_objective"]),
            "wall_time": time.time() - (self._t0 or t),
            "update_time": time.time() - t,
            **{k: self._rollout_stats.get(k) for k in ("transitions", "mean_len", "rollout_time")},
            "approx_kl": _first(logged, "train/approx_kl", "train/kl_divergence_loss"),
            "clip_fraction": _first(logged, "train/clip_fraction"),
            "explained_variance": _first(logged, "train/explained_variance"),
        }
        self.logger.record("rlhf/update_time", metrics["update_time"])  # type: ignore[attr-defined]
        self.logger.dump(step=self.num_timesteps)  # type: ignore[attr-defined]
        self.update_metrics.append(metrics)
        if self.on_update is not None:
            self.on_update(metrics)


    def _update(self) -> None:
        """The algorithm's own update (SB3's ``train``); TokenPPO replaces it."""
        super().train()  # type: ignore[misc]


def _first(logged: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        if key in logged:
            return float(logged[key])
    return None


# ----------------------------------------------------------------------------- algorithms

# Paper / trl 0.7.4 values shared by the PPO-style algorithms.
RLHF_DEFAULTS: dict[str, Any] = dict(gamma=1.0, gae_lambda=0.95)


class PPO(CreditAssignmentMixin, _PPO):
    """SB3 PPO on token envs with written-back token credit and a KL penalty (see module doc).

    ``n_steps`` is per env; with the default 1, each rollout is exactly one completion per env.
    """

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float = 1.41e-5,
        n_steps: int = 1,
        batch_size: int = 64,
        n_epochs: int = 4,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        clip_range_vf: float | None = 0.2,
        vf_coef: float = 0.1,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        kl_coef: float = 0.2,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000.0,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():  # SB3's minibatch-size warning counts n_steps * n_envs, not our episodes
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
                gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
                vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs, **kwargs,
            )


class A2C(CreditAssignmentMixin, _A2C):
    """SB3 A2C (one gradient step per rollout on all its complete episodes), same credit machinery."""

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float = 1.41e-5,
        n_steps: int = 1,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        vf_coef: float = 0.1,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        normalize_advantage: bool = True,
        use_rms_prop: bool = False,
        kl_coef: float = 0.2,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000.0,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, gamma=gamma, gae_lambda=gae_lambda,
            vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm, normalize_advantage=normalize_advantage,
            use_rms_prop=use_rms_prop, policy_kwargs=policy_kwargs, **kwargs,
        )


class TRPO(CreditAssignmentMixin, _TRPO):
    """sb3-contrib TRPO. Its critic step zeroes the actor's gradients, so with a shared trunk only the
    value head learns: ``separate_value_model=True`` (the default here) gives the critic its own trunk."""

    def __init__(
        self,
        policy: str | type = TransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float = 1e-4,
        n_steps: int = 1,
        batch_size: int = 64,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        target_kl: float = 0.01,
        n_critic_updates: int = 4,
        kl_coef: float = 0.2,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000.0,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # The Hessian-vector products need double backward, which SDPA kernels lack: eager attention.
        policy_kwargs = {"separate_value_model": True, "model_kwargs": {"attn_implementation": "eager"}, **(policy_kwargs or {})}
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, gamma=gamma,
                gae_lambda=gae_lambda, target_kl=target_kl, n_critic_updates=n_critic_updates,
                policy_kwargs=policy_kwargs, **kwargs,
            )

    def _compute_actor_grad(self, kl_div: th.Tensor, policy_objective: th.Tensor):
        """sb3-contrib's actor gradients in one autograd call over all actor parameters (it makes one
        call per parameter, ~100 backward passes through the LM per update; the result is the same)."""
        params = [p for name, p in self.policy.named_parameters() if "value" not in name and p.requires_grad]
        grads_kl = th.autograd.grad(kl_div, params, create_graph=True, retain_graph=True, allow_unused=True)
        used = [(p, g) for p, g in zip(params, grads_kl) if g is not None]
        actor_params = [p for p, _ in used]
        grads_obj = th.autograd.grad(policy_objective, actor_params, retain_graph=True)
        grad_kl = th.cat([g.reshape(-1) for _, g in used])
        policy_objective_gradients = th.cat([g.reshape(-1) for g in grads_obj])
        return actor_params, policy_objective_gradients, grad_kl, [g.shape for _, g in used]


class MaskablePPO(CreditAssignmentMixin, _MaskablePPO):
    """sb3-contrib MaskablePPO with NLPO-style masks: at each step only the reference policy's
    top-k / top-p tokens (among those the env allows) may be sampled (Ramamurthy et al., 2023)."""

    credit_buffer_class = MaskableCreditDictRolloutBuffer
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"TransformerPolicy": MaskableTransformerActorCriticPolicy}

    def __init__(
        self,
        policy: str | type = MaskableTransformerActorCriticPolicy,
        env: Any = None,
        learning_rate: float = 1.41e-5,
        n_steps: int = 1,
        batch_size: int = 64,
        n_epochs: int = 4,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        clip_range_vf: float | None = 0.2,
        vf_coef: float = 0.1,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        top_k: int = 50,
        top_p: float = 0.95,
        kl_coef: float = 0.2,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000.0,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if policy is TransformerActorCriticPolicy:
            policy = MaskableTransformerActorCriticPolicy
        if top_k < 0 or not (0.0 < top_p <= 1.0):
            raise ValueError(f"need top_k >= 0 (0 = off) and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
        self.top_k, self.top_p = int(top_k), float(top_p)
        env, policy_kwargs = self._init_credit(env, policy_kwargs, kl_coef, adaptive_kl, kl_target, kl_horizon, n_steps)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mini-batch size.*")
            super().__init__(
                policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
                gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
                vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs, **kwargs,
            )

    def _rollout_action_masks(self, env: VecEnv, obs: dict[str, th.Tensor]) -> np.ndarray:
        env_masks = th.as_tensor(get_action_masks(env), device=self.device).bool()
        if self.top_k == 0 and self.top_p >= 1.0:
            return env_masks.cpu().numpy()
        if self._ref_cache is None:
            self._ref_cache = RowKVCache(base_of(self.ref_model), int(obs["input_ids"].shape[-1]))
        h = self._ref_cache.last_hidden(obs["input_ids"].long(), obs["attention_mask"].long())
        logits = self.ref_model.get_output_embeddings()(h).float().masked_fill(~env_masks, float("-inf"))
        return (nlpo_mask(logits, self.top_k, self.top_p) & env_masks).cpu().numpy()


def nlpo_mask(logits: th.Tensor, top_k: int, top_p: float) -> th.Tensor:
    """``(N, V)`` bool: tokens inside both the top-k and the top-p nucleus of ``logits`` ``(N, V)``.

    The most likely token is always allowed, so a row is never empty.
    """
    keep = th.ones_like(logits, dtype=th.bool)
    if top_k > 0:
        kth = th.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        keep &= logits >= kth
    if top_p < 1.0:
        sorted_logits, order = th.sort(logits, descending=True, dim=-1)
        probs = th.softmax(sorted_logits, -1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        keep_sorted = before < top_p
        keep &= th.zeros_like(keep).scatter(1, order, keep_sorted)
    return keep


ALGORITHMS: dict[str, type] = {"ppo": PPO, "a2c": A2C, "trpo": TRPO, "maskable_ppo": MaskablePPO}  # + "token_ppo" (agents.token_ppo)
