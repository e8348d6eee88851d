"""``TrainConfig``: every hyperparameter of a run, the one place their defaults live.

The algorithm classes (:mod:`agents.ppo`, ...) take their constructor defaults from
:data:`DEFAULTS`, the CLI (``python -m agents``) builds one flag per field with the
field's ``help``, and :meth:`TrainConfig.validate` checks every value before anything is
built or written, naming the flag, the value and the allowed range.

Defaults: the paper's where it has one (batch 16 completions per update, gamma 1,
GAE lambda 0.95, clip 0.2, value clip 0.2, vf_coef 0.1, 4 epochs, KL 0.2 adaptive to
target 6 over horizon 10000, pure sampling). Two departures, for the small embedded
model on a 2-core CPU: ``lr`` 1e-4 (the paper's 1.41e-5 is for 124M-parameter GPT-2;
on the 0.9M-parameter embedded model it barely moves in a few minutes) and minibatches
of 4 completions (the paper's trl uses 1; 4 keeps an update cheap).

This module imports nothing heavy (no torch, no SB3), so ``import agents`` stays light.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from agents.registry import REGISTRY

ALGOS = tuple(REGISTRY)  # the learners (agents.registry: one entry adds one)
SAMPLERS = ("multinomial", "inverse_cdf")  # how a rollout draws its actions (agents.policy)
MAX_SEED = 2**32 - 1  # numpy's seed range


def _f(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field whose one-line ``help`` the CLI prints."""
    return field(default=default, metadata={"help": help, **extra})


#: Version of the learners' arithmetic: bumped whenever a code change makes the same seed and config
#: give other numbers (CHANGELOG.md says which). Stored in the benchmark's run configs, so that
#: ``--resume`` does not mix runs of two versions in one table. 1: up to 2026-11-30's third session;
#: 2: the fused GELU default and the log_softmax log-probs (issue 18, fourth session).
NUMERICS_VERSION = 2


@dataclass
class TrainConfig:
    """Every hyperparameter of a run (each is a CLI flag: ``--episodes-per-update`` etc.)."""

    env_id: str = _f("abc_gym/Sentiment-v0", "registered abc_gym env id", flag="--env")
    algo: str = _f("token_ppo", "algorithm", choices=ALGOS)
    reward_mode: str = _f("abc", "credit scheme: abc, red, sparse, uniform, oracle or a registered one (extending.md)")
    beta: float = _f(0.8, "ABC mix: beta * attention credit + (1 - beta) * sparse, in [0, 1]")
    seed: int = _f(0, "seed of the env rows (seed + i), torch and numpy")
    n_updates: int = _f(60, "rollouts + updates: the run's horizon (schedules end here); ignored when --steps is set")
    steps: int | None = _f(None, "env timesteps instead of --n-updates (SB3's total_timesteps)")
    episodes_per_update: int = _f(16, "completions per rollout (= parallel envs, one episode each)")
    lr: float = _f(1e-4, "learning rate (Adam)")
    lr_final: float | None = _f(None, "linear decay of the learning rate from --lr to this at the last update (None: constant)")
    n_epochs: int = _f(4, "passes over each rollout (PPO, MaskablePPO, TokenPPO; TRPO: critic passes)")
    minibatch_episodes: int = _f(4, "minibatch size in completions (per-transition algorithms: that many completions' steps)")
    device_rollout: bool = _f(True, "token_ppo: roll out on the env engine's device tensors (no per-token numpy round trip; exact)")
    compile_decode: bool = _f(
        False, "torch.compile the KV-cache decode step (CUDA: CUDA graphs); pays a compile on the first rollout, "
        "equal to eager within float rounding"
    )
    fused_activation: bool | None = _f(
        None, "run the policy's and value trunk's tanh GELU (gelu_new, GPT-2's) on torch's fused kernel: 2-5x faster "
        "per activation on a CPU, equal within float rounding. None: wherever the model has that GELU (the default "
        "since 2026-11-30); true: an error for a model without it; false: transformers' Python formula, the earlier "
        "default (seeded runs differ between the two)"
    )
    sampler: str = _f(
        "inverse_cdf", "how rollout actions are drawn: inverse_cdf (one uniform per row: the same distribution as "
        "torch.multinomial, much cheaper on a CPU) or multinomial (torch.multinomial, as SB3 and HF generate; the "
        "default before 2026-11-29: another random stream)",
        choices=SAMPLERS,
    )
    gamma: float = _f(1.0, "discount factor, in [0, 1]")
    gae_lambda: float = _f(0.95, "GAE lambda, in [0, 1]")
    clip_range: float = _f(0.2, "PPO ratio clip, > 0")
    clip_range_vf: float | None = _f(0.2, "value clip around the rollout values (None: no clipping)")
    vf_coef: float = _f(0.1, "value-loss weight in the shared loss")
    ent_coef: float = _f(0.0, "entropy bonus weight")
    max_grad_norm: float = _f(0.5, "gradient-norm clip")
    normalize_advantage: bool = _f(True, "whiten advantages per minibatch")
    kl_coef: float = _f(0.2, "initial coefficient of the per-token KL penalty to the initial policy")
    adaptive_kl: bool = _f(True, "adapt the KL coefficient towards --kl-target (trl's controller)")
    kl_target: float = _f(6.0, "target summed KL per completion of the adaptive controller")
    kl_horizon: float = _f(10000.0, "horizon (completions) of the adaptive controller")
    top_k: int = _f(50, "maskable_ppo: NLPO mask, the reference policy's top-k tokens (0 = off)")
    top_p: float = _f(0.95, "maskable_ppo: NLPO mask, the reference policy's top-p nucleus, in (0, 1]")
    trpo_target_kl: float = _f(0.01, "trpo: KL bound of the trust region")
    trpo_cg_max_steps: int = _f(10, "trpo: conjugate-gradient iterations")
    model: str | None = _f(None, "actor model, path or hub id (None: the env's own policy model)")
    separate_value_model: bool | None = _f(None, "value head on its own trunk (None: shared, except TRPO)")
    device: str = _f("auto", "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N")
    reward_device: str | None = _f(None, "device of the env's reward model, e.g. cuda:1 (None: the env's --device)")
    threads: int = _f(1, "torch CPU threads; 1 is fastest for the small model on a small CPU")
    log_dir: str | None = _f("runs", "parent of the run directory (None: no files, no TensorBoard, no model)")
    save_path: str | None = _f(None, "model file (default: <run directory>/model.zip)")
    # 10: a kill loses at most 9 updates, and writing the checkpoint stays a small share of the run
    checkpoint_every: int = _f(
        10, "save a checkpoint (model.zip with optimiser, KL controller, RNG states and update counter; model_hf/) "
        "every N updates, atomically; also at the end and on SIGINT/SIGTERM; 0: only then"
    )
    env_kwargs: dict[str, Any] | None = _f(
        None, "further env keyword (any abc_gym EnvConfig field other than those with their own flag), KEY=VALUE "
        "with a JSON value, e.g. --env-kwarg min_new_tokens=48; repeatable (None: the env id's own settings)",
        flag="--env-kwarg",
    )
    run_name: str | None = _f(None, "run directory name (default: <algo>_<mode>_seed<seed>_<time>)")
    progress: bool = _f(True, "progress bar")
    quiet: bool = _f(False, "no summary line")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag, the value and the allowed range for the first bad value."""
        from abc_gym.credit import check_beta, check_reward_mode

        check_types(self)
        if self.algo not in REGISTRY:  # read now: agents.registry.register_algorithm may have added one
            raise ValueError(f"unknown algorithm {self.algo!r}: use one of {', '.join(REGISTRY)}")
        check_reward_mode(self.reward_mode)
        check_beta(self.beta)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: use --sampler with one of {', '.join(SAMPLERS)}")
        _check_range(self, "seed", 0, MAX_SEED)
        _check_range(self, "episodes_per_update", 1)
        if not (1 <= self.minibatch_episodes <= self.episodes_per_update):
            raise ValueError(
                f"minibatch_episodes={self.minibatch_episodes} cannot be drawn from {self.episodes_per_update} "
                "episodes per update: use 1 <= --minibatch-episodes <= --episodes-per-update"
            )
        if self.steps is None:
            _check_range(self, "n_updates", 1)
        elif self.steps < self.episodes_per_update:
            raise ValueError(f"--steps {self.steps}: less than one env step per episode, must be >= --episodes-per-update")
        _check_range(self, "lr", 0.0, lo_open=True)
        if self.lr_final is not None:
            _check_range(self, "lr_final", 0.0)
        _check_range(self, "n_epochs", 1)
        _check_range(self, "gamma", 0.0, 1.0)
        _check_range(self, "gae_lambda", 0.0, 1.0)
        _check_range(self, "clip_range", 0.0, lo_open=True)
        if self.clip_range_vf is not None:
            _check_range(self, "clip_range_vf", 0.0, lo_open=True)
        _check_range(self, "vf_coef", 0.0)
        _check_range(self, "ent_coef", 0.0)
        _check_range(self, "max_grad_norm", 0.0, lo_open=True)
        _check_range(self, "kl_coef", 0.0)
        _check_range(self, "kl_target", 0.0, lo_open=True)
        _check_range(self, "kl_horizon", 0.0, lo_open=True)
        _check_range(self, "top_k", 0)
        _check_range(self, "top_p", 0.0, 1.0, lo_open=True)
        _check_range(self, "trpo_target_kl", 0.0, lo_open=True)
        _check_range(self, "trpo_cg_max_steps", 1)
        _check_range(self, "threads", 1)
        _check_range(self, "checkpoint_every", 0)
        check_run_name(self.run_name)
        check_env(self.env_id, self.env_kwargs)
        if self.model is not None and _looks_like_path(self.model) and not os.path.exists(self.model):
            raise ValueError(f"--model {self.model}: the path does not exist (give a model directory or a hub id)")
        if self.model is not None and os.path.isdir(self.model) and not os.path.isfile(os.path.join(self.model, "config.json")):
            # transformers would guess a model type from the folder's name, or fail naming `model_type`
            raise ValueError(
                f"--model {self.model}: no config.json in that directory, so it is not a Hugging Face model; pass a "
                "directory written by save_pretrained (e.g. a run's model_hf/) or a hub id"
            )
        check_device(self.device)
        if self.reward_device is not None:
            try:
                check_device(self.reward_device)
            except ValueError as err:
                raise ValueError(str(err).replace("--device", "--reward-device")) from None


#: Env keywords with a flag of their own (TrainConfig fields), refused in ``--env-kwarg``.
OWN_FLAG_ENV_KWARGS = {"reward_mode": "--reward-mode", "beta": "--beta", "device": "--device", "reward_device": "--reward-device"}


def check_types(cfg: TrainConfig) -> None:
    """Every field of the type its annotation says (``--set lr=abc`` in the benchmark reaches here as a
    string), and every float finite: ``inf`` / NaN pass the range checks and crash mid-run as NaN logits."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        tp = hints[f.name]
        union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
        allowed = typing.get_args(tp) if union else (tp,)
        if value is None and type(None) in allowed:
            continue
        base = next(t for t in allowed if t is not type(None))
        base = typing.get_origin(base) or base
        if base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                raise ValueError(f"{flag_of(f.name)} {value}: must be a finite number")
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, base)
        if not ok:
            raise ValueError(f"{flag_of(f.name)} {value!r}: must be {_kind(base)}, got {type(value).__name__}")


def _kind(tp: type) -> str:
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "KEY=VALUE pairs"}.get(
        tp, tp.__name__
    )


def check_run_name(name: str | None) -> None:
    """``--run-name``: one plain directory name, so the run stays inside ``--log-dir``."""
    if name is None:
        return
    if not name or name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(
            f"--run-name {name!r}: must be a plain directory name inside --log-dir (no '/', '.' or '..'); "
            "choose the parent folder with --log-dir"
        )


def check_env(env_id: str, env_kwargs: dict[str, Any] | None) -> None:
    """``--env`` registered and ``--env-kwarg`` accepted by abc_gym's ``EnvConfig`` (checked without loading a model)."""
    import gymnasium as gym

    import abc_gym  # noqa: F401  registers the ids
    from abc_gym.config import EnvConfig

    if env_id not in gym.registry:
        known = ", ".join(k for k in gym.registry if k.startswith("abc_gym/"))
        raise ValueError(f"--env {env_id}: no such registered env; use one of {known}")
    env_kwargs = env_kwargs or {}
    own = sorted(k for k in env_kwargs if k in OWN_FLAG_ENV_KWARGS)
    if own:
        raise ValueError(f"--env-kwarg {own[0]}=...: use {OWN_FLAG_ENV_KWARGS[own[0]]} (a flag of its own)")
    if not env_kwargs:
        return
    given = " ".join(f"{k}={json.dumps(v)}" for k, v in env_kwargs.items())
    kwargs = {**gym.spec(env_id).kwargs, **env_kwargs, "device": "cpu"}  # the device has its own check
    try:
        EnvConfig.from_kwargs(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--env-kwarg {given}: {err}") from err


def parse_env_kwarg(text: str) -> tuple[str, Any]:
    """``"min_new_tokens=48"`` -> ``("min_new_tokens", 48)``: a JSON value, else the text itself."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--env-kwarg takes KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


DEFAULTS = TrainConfig()
"""The defaults every algorithm class takes its constructor defaults from."""


def flag_of(name: str) -> str:
    """The CLI flag of a ``TrainConfig`` field (``env_id`` -> ``--env``, ``n_epochs`` -> ``--n-epochs``)."""
    meta = {f.name: f.metadata for f in fields(TrainConfig)}.get(name, {})
    return meta.get("flag", "--" + name.replace("_", "-"))


def check_device(device: str) -> None:
    """``auto``, ``cpu``, or a CUDA device that exists; anything else is a ``ValueError`` naming the fix."""
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device}: not a torch device ({err}); use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):  # meta holds no data; other backends are untested here
        raise ValueError(f"--device {device}: agents train on the CPU or CUDA; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu or --device auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")


def _check_range(cfg: TrainConfig, name: str, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    value = getattr(cfg, name)
    ok = (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        allowed = f"in {left}{lo}, {hi}]" if hi is not None else (f"> {lo}" if lo_open else f">= {lo}")
        raise ValueError(f"{flag_of(name)} {value}: must be {allowed}")


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``name`` or ``org/name``): absolute, ``./``, ``~``, or two slashes."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
