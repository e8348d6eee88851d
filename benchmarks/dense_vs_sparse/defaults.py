"""Constants of the benchmark, and the one place its training settings depart from the agent's.

Hyperparameters are ``agents.TrainConfig``'s own: the benchmark reads their defaults
from the dataclass (:func:`train_defaults`) and never re-declares them. The only deliberate
differences are :data:`BENCH_OVERRIDES` (shown in ``--help``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any


class _RegistryNames(Sequence[str]):
    """The names of a registry, read on every use: a live view, not a tuple (argparse ``choices``).

    A name registered after this module was imported (``abc_gym.register_credit``,
    ``agents.registry.register_algorithm``) is a valid choice.
    """

    def _names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[override]
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


class RegisteredModes(_RegistryNames):
    """The ``reward_mode`` names of abc_gym's credit registry (``--modes`` choices).

    ``"module:name"`` is also accepted (it imports ``module``, which registers ``name``): the
    form that reaches ``--jobs N`` workers, which are spawned processes with only the built-in
    schemes (docs/extending.md).
    """

    def _names(self) -> tuple[str, ...]:
        from abc_gym.credit import reward_modes

        return reward_modes()

    def __contains__(self, mode: object) -> bool:
        from abc_gym.credit import credit_scheme

        if not isinstance(mode, str):
            return False
        try:
            credit_scheme(mode)
        except ValueError:
            return False
        return True


class RegisteredAlgos(_RegistryNames):
    """The learners of ``agents.registry.REGISTRY`` (``--algo`` / ``--algos`` choices; empty without agents)."""

    def _names(self) -> tuple[str, ...]:
        try:
            from agents.registry import REGISTRY
        except ImportError:  # --fidelity and --from-results run without agents
            return ()
        return tuple(REGISTRY)


#: Metrics every agent history row must carry (agents.training's documented keys).
METRICS: tuple[str, ...] = ("rm_score", "gold_score", "kl", "value_loss")
METRIC_LABELS = {"rm_score": "RM score", "gold_score": "gold (VADER) score", "kl": "KL to reference", "value_loss": "value loss"}
#: Every registered learner: the choices of ``--algo`` / ``--algos``.
ALGOS: Sequence[str] = RegisteredAlgos()

#: Every registered credit mode (built-in and user ones): the choices of ``--modes``.
MODES: Sequence[str] = RegisteredModes()
#: The ``--quick`` preset (the README's < 10 min check): 8-15-token completions, the only length at
#: which the shipped reward model agrees with VADER as well as on its held-out texts
#: (``python -m benchmarks.rm_validity``: 0.90-0.92 polar accuracy; 0.70-0.80 at 40-59 and 90-109,
#: docs/embedded_task.md), the fast sequence-level learner, and sparse vs the two dense schemes.
QUICK: dict[str, Any] = {"env_id": "abc_gym/Sentiment-v0", "algo": "token_ppo", "modes": ("sparse", "abc", "red")}
#: Modes a plain run compares (``--modes`` picks others, e.g. ``red``: prefix-score differences, RED).
DEFAULT_MODES = ("sparse", "abc", "uniform", "oracle")
BETA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SWEEP_ALGOS = ("ppo", "a2c", "trpo", "maskable_ppo")
#: ``--sweep kl``: KL-penalty coefficients, each held fixed for the whole run (adaptive_kl off), so
#: that every mode is measured at several KLs and compared along RM-vs-KL / gold-vs-KL frontiers.
KL_GRID = (0.05, 0.1, 0.2, 0.4)
#: TrainConfig fields ``--sweep kl`` sets per run (``--kl-coefs``): ``--set`` may not set them there.
KL_SWEEP_FIELDS: tuple[str, ...] = ("kl_coef", "adaptive_kl")

#: The one place the benchmark deliberately departs from TrainConfig's defaults, with why
#: (shown in ``--help``). Every other hyperparameter, lr and episodes_per_update included,
#: is TrainConfig's own; per-run bookkeeping (progress bar off, quiet, log_dir, threads per
#: job) is not a hyperparameter.
BENCH_OVERRIDES: dict[str, tuple[Any, str]] = {
    "algo": ("ppo", "SB3 PPO with ABC credit write-back, the learner of docs/results.md"),
    "n_updates": (150, "the paper's IMDb runs: 150 PPO steps"),
}


#: TrainConfig fields the benchmark sets for every run; a TrainConfig without one is an error.
REQUIRED_FIELDS: tuple[str, ...] = (
    "env_id", "algo", "reward_mode", "beta", "seed", "n_updates", "episodes_per_update", "device", "log_dir", "progress",
)
#: TrainConfig fields with their own flag (or set per run by the plan): ``--set`` refuses them.
FIELD_FLAGS: dict[str, str] = {
    "env_id": "--env-id (or --lengths with --sweep length)",
    "algo": "--algo (or --algos with --sweep algos)",
    "reward_mode": "--modes",
    "beta": "--beta (or --betas with --sweep beta)",
    "seed": "--seeds / --seed-offset",
    "n_updates": "--n-updates (or --quick-updates, --smoke)",
    "episodes_per_update": "--episodes-per-update",
    "device": "--device",
    "log_dir": "--log-dir",
    "threads": "--threads-per-job",
}
#: TrainConfig fields that do not change a run's numbers: left out of the run config that
#: ``--resume`` checks (so a resumed benchmark may use other --jobs or --log-dir).
NON_RESULT_FIELDS: tuple[str, ...] = ("log_dir", "save_path", "run_name", "progress", "quiet", "threads")

#: Completion lengths of the length sweep -> registered env id. Other ranges get a length
#: variant of Sentiment-v0 (``abc_gym.registration.register_length_variant``).
LENGTH_ENVS = {(8, 15): "abc_gym/Sentiment-v0", (40, 59): "abc_gym/SentimentLong-v0"}
DEFAULT_LENGTHS = ("8-15", "40-59", "90-109")


def train_config_class() -> type:
    """``agents.TrainConfig`` (imported late: ``--fidelity`` and ``--from-results`` work without agents)."""
    from agents.training import TrainConfig

    return TrainConfig


def train_defaults() -> dict[str, Any]:
    """TrainConfig's field defaults by name; empty when agents.training is not importable."""
    try:
        cls = train_config_class()
    except ImportError:
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def check_overrides(overrides: dict[str, Any], field_names: set[str]) -> None:
    """Raise ``ValueError`` naming the problem if ``--set`` names a field it may not set."""
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise ValueError(
            f"--set names unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(sorted(field_names))}"
        )
    flagged = [f"{k} (use {FIELD_FLAGS[k]})" for k in overrides if k in FIELD_FLAGS]
    if flagged:
        raise ValueError(f"--set cannot set {', '.join(flagged)}: the benchmark sets these per run")
