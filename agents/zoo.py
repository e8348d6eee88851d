"""``python -m agents.zoo``: RL Baselines3 Zoo (rl_zoo3) with the credit-aware learners.

Every argument goes to rl_zoo3's own ``train`` (``python -m rl_zoo3.train``); around that call this
entry point

- registers each learner of :mod:`agents.registry` in rl_zoo3's ``ALGOS`` under its ``python -m agents``
  name (``token_ppo``, ``ppo``, ``a2c``, ``trpo``, ``maskable_ppo``, ``rloo``): in this process ``ppo``,
  ``a2c`` and ``trpo`` are the credit-aware learners, the stock ones stay ``python -m rl_zoo3.train``;
  rl_zoo3's other algorithms are unchanged;
- trains them on the batched :class:`~abc_gym.sb3_vec_env.TokenGenerationSB3VecEnv` (one torch batch,
  ``n_envs`` rows, built as ``python -m agents`` builds it: :func:`agents.env_util.make_token_vec_env`;
  in a ``VecMonitor``, as the zoo monitors its envs), whose final infos carry the per-token credit the
  learners write back: the zoo's own ``DummyVecEnv`` of single envs is never built for them. Its
  keywords are the zoo's ``--env-kwargs`` (``reward_mode``, ``beta``, ``max_new_tokens``, ...;
  ``device`` defaults to ``--device``);
- reads their hyperparameters from ``agents/zoo_hyperparams/<algo>.yml`` unless ``--conf-file`` names
  another file: TrainConfig's defaults for the embedded envs, with the policy
  ``TransformerPolicy`` on the env's own (shipped) model;
- gives ``--optimize`` a sampler per learner (:func:`sample_credit_params`) over the learner's own
  keywords;
- defaults ``--algo token_ppo``, ``--env abc_gym/Sentiment-v0`` and ``--num-threads 1``
  (TrainConfig's ``algo``, ``env_id`` and ``threads``) where the command line gives none.

All of it is undone when the call returns (rl_zoo3's registries, torch's thread count, transformers'
progress bars, which are off during the run). rl_zoo3 has no plug-in interface, so this touches its
module-level names: ``rl_zoo3.utils.ALGOS``, ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` /
``HYPERPARAMS_CONVERTER`` (dicts keyed by algorithm name, which rl_zoo3's train and ExperimentManager
read at call time) and ``rl_zoo3.train.ExperimentManager`` (the subclass :class:`TokenExperimentManager`
for the call); checked against rl_zoo3 2.9.2.

Usage::

    python -m agents.zoo --algo token_ppo --env abc_gym/Sentiment-v0 -n 2000
    python -m agents.zoo --algo rloo --env-kwargs reward_mode:"'sparse'"
    python -m agents.zoo --algo token_ppo -n 2000 --optimize --n-trials 8 --sampler random --pruner none --no-optim-plots
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    import rl_zoo3.train as zoo_train
    from rl_zoo3 import hyperparams_opt as zoo_opt
    from rl_zoo3 import utils as zoo_utils
    from rl_zoo3.exp_manager import ExperimentManager
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError('agents.zoo needs rl_zoo3: pip install "abc_gym[zoo]"') from err

from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from agents.config import DEFAULTS
from agents.registry import REGISTRY, algorithm_kwargs

__all__ = ["TokenExperimentManager", "hyperparams_path", "main", "registered", "sample_credit_params"]

HYPERPARAMS_DIR = Path(__file__).parent / "zoo_hyperparams"

#: The search space of ``--optimize``: the common keywords, then each learner keyword that has one
#: (a learner is searched over those of its keywords listed here: :func:`sample_credit_params`).
#: Ranges span the defaults (TrainConfig: lr 1e-4, KL 0.2, lambda 0.95, 4 epochs, clip 0.2, 4 episodes,
#: TRPO KL bound 0.01); the paper's lr 1.41e-5 is inside.
SEARCH_SPACE: dict[str, tuple[str, Any]] = {
    "learning_rate": ("log", (1e-5, 1e-3)),
    "kl_coef": ("log", (0.02, 1.0)),
    "gae_lambda": ("choice", (0.9, 0.95, 0.98, 1.0)),
    "n_epochs": ("choice", (1, 2, 4, 8)),
    "clip_range": ("choice", (0.1, 0.2, 0.3)),
    "minibatch_episodes": ("choice", (1, 2, 4, 8, 16)),
    "target_kl": ("log", (0.003, 0.03)),
}


def hyperparams_path(algo: str) -> Path:
    """The shipped rl_zoo3 hyperparameter file of a learner (``agents/zoo_hyperparams/<algo>.yml``)."""
    return HYPERPARAMS_DIR / f"{algo}.yml"


def learner_keywords(algo: str) -> set[str]:
    """The constructor keywords ``python -m agents`` passes ``algo`` (:func:`agents.registry.algorithm_kwargs`)."""
    return set(algorithm_kwargs(dataclasses.replace(DEFAULTS, algo=algo), None))


def sample_credit_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any], algo: str) -> dict[str, Any]:
    """One Optuna draw of ``algo``'s keywords that :data:`SEARCH_SPACE` covers (rl_zoo3's sampler signature
    plus ``algo``). ``minibatch_episodes`` is drawn from the values ``<= n_envs`` (it cannot exceed the
    rollout's completions)."""
    params: dict[str, Any] = {}
    for name in sorted(learner_keywords(algo) & set(SEARCH_SPACE), key=list(SEARCH_SPACE).index):
        kind, space = SEARCH_SPACE[name]
        if kind == "log":
            params[name] = trial.suggest_float(name, *space, log=True)
        else:
            choices = [c for c in space if name != "minibatch_episodes" or c <= n_envs]
            params[name] = trial.suggest_categorical(name, choices)
    return params


def _sampler(algo: str):
    return lambda trial, n_actions, n_envs, additional_args: sample_credit_params(trial, n_actions, n_envs, additional_args, algo)


def _convert(params: dict[str, Any]) -> dict[str, Any]:
    """A stored trial's parameters are the learner's keywords already (``--trial-id``)."""
    return dict(params)


class TokenExperimentManager(ExperimentManager):
    """rl_zoo3's ``ExperimentManager`` that builds the batched token env for the credit-aware learners
    and defaults their hyperparameter file to :func:`hyperparams_path`; any other algorithm is rl_zoo3's."""

    def __init__(self, args: argparse.Namespace, algo: str, env_id: str, *pos: Any, config: str | None = None, **kw: Any) -> None:
        if config is None and algo in REGISTRY:
            config = str(hyperparams_path(algo))
        super().__init__(args, algo, env_id, *pos, config=config, **kw)

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        """``n_envs`` rows of the batched env (rows seeded ``seed + i``, as the zoo seeds its envs) in a
        ``VecMonitor``, as the zoo monitors its envs: ``monitor.csv`` in the run folder (``rl_zoo3.plots``
        reads it), ``rollout/ep_rew_mean`` in the logs (an episode's return is R in every reward mode).
        Under a wrapper TokenPPO rolls out through the VecEnv, not the engine's device tensors (the same
        episodes; on a GPU ``python -m agents`` is the faster path).
        """
        if self.algo not in REGISTRY:
            return super().create_envs(n_envs, eval_env=eval_env, no_log=no_log)
        from agents.env_util import make_token_vec_env

        self._refuse_single_env_options()
        kwargs = dict(self.eval_env_kwargs if eval_env else self.env_kwargs)
        kwargs.setdefault("device", str(self.device))  # as python -m agents: --device places the env too
        env: VecEnv = make_token_vec_env(self.env_name.gym_id, num_envs=n_envs, seed=self.seed, **kwargs)
        log_dir = None if eval_env or no_log else self.save_path  # as rl_zoo3: one monitor file per run
        env = VecMonitor(env, filename=log_dir)
        if self.vec_env_wrapper is not None:
            env = self.vec_env_wrapper(env)
        return env

    def _refuse_single_env_options(self) -> None:
        """Zoo options that assume single envs or vector observations, refused naming the alternative."""
        if self.env_wrapper is not None:
            raise ValueError(
                f"env_wrapper {self.env_wrapper}: {self.algo} trains on one batched token env, not on single "
                "gymnasium envs; use vec_env_wrapper (an SB3 VecEnvWrapper) instead"
            )
        if self.normalize:
            raise ValueError(
                f"normalize: {self.algo}'s observations are token ids, which VecNormalize must not scale; "
                "remove 'normalize' from the hyperparameters"
            )
        if self.frame_stack is not None:
            raise ValueError(f"frame_stack: {self.algo}'s observation is already the whole token prefix; remove 'frame_stack'")


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """rl_zoo3 with the credit-aware learners (module doc), restored on exit."""
    registries = (zoo_utils.ALGOS, zoo_opt.HYPERPARAMS_SAMPLER, zoo_opt.HYPERPARAMS_CONVERTER)
    saved = [dict(r) for r in registries]
    manager = zoo_train.ExperimentManager
    try:
        zoo_utils.ALGOS.update({name: spec.load() for name, spec in REGISTRY.items()})
        zoo_opt.HYPERPARAMS_SAMPLER.update({name: _sampler(name) for name in REGISTRY})
        zoo_opt.HYPERPARAMS_CONVERTER.update({name: _convert for name in REGISTRY})
        zoo_train.ExperimentManager = TokenExperimentManager
        yield
    finally:
        zoo_train.ExperimentManager = manager
        for registry, before in zip(registries, saved):
            registry.clear()
            registry.update(before)


def with_defaults(argv: Sequence[str]) -> list[str]:
    """``argv`` plus TrainConfig's ``--algo``, ``--env`` and ``--num-threads`` where it gives none."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo")
    pre.add_argument("--env")
    pre.add_argument("--num-threads")
    given, _ = pre.parse_known_args(list(argv))
    extra = []
    if given.algo is None:
        extra += ["--algo", DEFAULTS.algo]
    if given.env is None:
        extra += ["--env", DEFAULTS.env_id]
    if given.num_threads is None:
        extra += ["--num-threads", str(DEFAULTS.threads)]
    return [*argv, *extra]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m agents.zoo [rl_zoo3 train arguments]`` (module doc); ``argv`` defaults to ``sys.argv[1:]``."""
    import torch
    import transformers

    import abc_gym  # noqa: F401  registers the env ids (no --gym-packages needed)

    args = with_defaults(sys.argv[1:] if argv is None else argv)
    # The run's settings (as agents.training.train): rl_zoo3 sets torch's threads; no loading bars in the output.
    threads, bars, program_argv = torch.get_num_threads(), transformers.utils.logging.is_progress_bar_enabled(), sys.argv
    transformers.utils.logging.disable_progress_bar()
    try:
        with registered():
            sys.argv = ["python -m agents.zoo", *args]  # rl_zoo3's train() parses sys.argv
            zoo_train.train()
    finally:
        sys.argv = program_argv
        torch.set_num_threads(threads)
        if bars:
            transformers.utils.logging.enable_progress_bar()


if __name__ == "__main__":
    main()
