"""The run plan: which (task, condition, seed) runs a command asks for, and their env ids."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.dense_vs_sparse.defaults import LENGTH_ENVS

BASE_ENV = "abc_gym/Sentiment-v0"  # the task whose length variants the length sweep trains on
_VARIANT = re.compile(r"^(?P<name>.+)-(?P<lo>\d+)-(?P<hi>\d+)(?P<version>-v\d+)$")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a (task, condition, seed) cell of a table.

    ``task`` names the table, ``condition`` its row; ``baseline`` is the condition in
    the same task whose best score sets the speed threshold (sparse, or beta 0).
    ``fixed_kl_coef`` (``--sweep kl`` only) holds the KL-penalty coefficient fixed for the
    run (``kl_coef`` = it, ``adaptive_kl`` off); None leaves TrainConfig's KL controller as it
    is. It is not in :attr:`name`: the kl sweep's ``task`` names the coefficient.
    """

    sweep: str
    task: str
    env_id: str
    condition: str
    baseline: str
    algo: str
    reward_mode: str
    beta: float
    seed: int
    fixed_kl_coef: float | None = None

    @property
    def name(self) -> str:
        return slug(f"{self.task}__{self.condition}__seed{self.seed}")


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


#: Separates the env's title from the coefficient in a ``--sweep kl`` task label.
KL_TASK_SEP = ", fixed KL coef "


def kl_task(title: str, coef: float) -> str:
    """The ``--sweep kl`` task label of one coefficient: ``"Sentiment-v0 (8-15 new tokens), fixed KL coef 0.1"``."""
    return f"{title}{KL_TASK_SEP}{coef:g}"


def kl_title(task: str) -> str:
    """The env's title of a ``--sweep kl`` task label (the inverse of :func:`kl_task`'s first part)."""
    return task.rsplit(KL_TASK_SEP, 1)[0]


def parse_length(text: str) -> tuple[int, int]:
    """``"40-59"`` -> ``(40, 59)``."""
    m = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not m or int(m.group(1)) > int(m.group(2)):
        raise argparse.ArgumentTypeError(f"a length range is MIN-MAX with MIN <= MAX, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def length_env_id(lo: int, hi: int) -> str:
    """Env id for Sentiment-v0 with completions of ``lo``-``hi`` new tokens (registered on demand).

    Raises if prompt + completion would not fit the policy's or the reward model's positions.
    """
    if (lo, hi) in LENGTH_ENVS:
        return LENGTH_ENVS[(lo, hi)]
    from transformers import AutoConfig, AutoTokenizer

    from abc_gym.registration import register_length_variant
    from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH, load_prompts

    tok = AutoTokenizer.from_pretrained(POLICY_PATH, local_files_only=True)
    longest_prompt = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in load_prompts())
    limit = min(AutoConfig.from_pretrained(p, local_files_only=True).n_positions for p in (POLICY_PATH, REWARD_MODEL_PATH))
    if longest_prompt + hi > limit:
        raise ValueError(
            f"{lo}-{hi} new tokens + {longest_prompt} prompt tokens exceed the models' {limit} positions: "
            "choose a shorter range for --lengths"
        )
    return register_length_variant(BASE_ENV, lo, hi)


def ensure_env(env_id: str) -> None:
    """Make ``env_id`` known in this process: abc_gym's ids, and length variants (ids live per process)."""
    from gymnasium.envs.registration import registry

    import abc_gym  # noqa: F401  registers the abc_gym ids
    from abc_gym.registration import register_length_variant

    m = _VARIANT.match(env_id)
    if env_id not in registry and m:
        register_length_variant(m["name"] + m["version"], int(m["lo"]), int(m["hi"]))


def env_label(env_id: str) -> str:
    """Table title for an env: its name and completion length range."""
    import gymnasium as gym

    kw = gym.spec(env_id).kwargs
    return f"{env_id.split('/')[-1]} ({kw.get('min_new_tokens')}-{kw.get('max_new_tokens')} new tokens)"


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    """The runs a command asks for, in the order they are launched."""
    from abc_gym.credit import credit_scheme

    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    specs: list[RunSpec] = []

    def add(
        sweep: str, env_id: str, conds: Iterable[tuple[str, str, str, float]], baseline: str, task: str | None = None,
        fixed_kl_coef: float | None = None,
    ) -> None:
        task = task or env_label(env_id)
        for seed in seeds:  # seed-major, so a cut-short benchmark has every condition at the first seeds
            for condition, algo, mode, beta in conds:
                specs.append(RunSpec(sweep, task, env_id, condition, baseline, algo, mode, float(beta), seed, fixed_kl_coef))

    def mode_label(mode: str) -> str:
        # the credit registry says which schemes read beta (built in: abc, red), user ones included
        return f"{mode} (beta {args.beta:g})" if credit_scheme(mode).uses_beta else mode

    if args.sweep is None:
        conds = [(mode_label(m), args.algo, m, args.beta) for m in args.modes]
        add("main", args.env_id, conds, baseline=mode_label("sparse"))
    elif args.sweep == "length":
        for lo, hi in args.lengths:
            conds = [(mode_label(m), args.algo, m, args.beta) for m in args.modes]
            add("length", length_env_id(lo, hi), conds, baseline=mode_label("sparse"))
    elif args.sweep == "beta":
        # beta 0 is sparse credit computed through the abc path: the natural baseline of the sweep
        conds = [(f"beta {b:g}", args.algo, "abc", b) for b in args.betas]
        add("beta", args.env_id, conds, baseline=f"beta {min(args.betas):g}")
    elif args.sweep == "algos":
        for algo in args.algos:
            conds = [(mode_label(m), algo, m, args.beta) for m in args.modes]
            add("algos", args.env_id, conds, baseline=mode_label("sparse"), task=f"{algo} on {env_label(args.env_id)}")
    elif args.sweep == "kl":
        # one task per coefficient: the paired differences vs sparse are taken at one coefficient
        conds = [(mode_label(m), args.algo, m, args.beta) for m in args.modes]
        for coef in args.kl_coefs:
            add("kl", args.env_id, conds, baseline=mode_label("sparse"), task=kl_task(env_label(args.env_id), float(coef)),
                fixed_kl_coef=float(coef))
        specs.sort(key=lambda s: s.seed)  # stable: seed-major, so a cut-short sweep has every frontier point at the first seeds
    else:  # argparse's choices make this unreachable
        raise ValueError(args.sweep)
    if args.sweep != "beta" and not any(s.reward_mode == "sparse" for s in specs):
        print("note: no sparse runs, so the speed column has no baseline", file=sys.stderr)
    return specs
