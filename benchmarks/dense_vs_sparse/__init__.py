"""Dense (ABC) vs sparse reward on the embedded sentiment task: training runs, sweeps, credit fidelity.

Reproduces the experiments of Chan et al., "Dense Reward for Free in RLHF" (ICML 2024)
on ``abc_gym/Sentiment-v0`` with the project's agents (``agents.training``), and adds two
analyses the paper does not have: gold (VADER) vs proxy (reward model) score, and the
fidelity of ABC's credit to the task's gold per-token credit.

    python -m benchmarks.dense_vs_sparse --quick                 # token_ppo, 40-59 tokens, 3 seeds x 50 updates, sparse/abc/red, < 10 min on 2 CPUs
    python -m benchmarks.dense_vs_sparse --quick --smoke --out DIR   # 1 seed x 2 updates: the pipeline only (CI)
    python -m benchmarks.dense_vs_sparse                         # 5 seeds, sparse/abc/uniform/oracle, paper's 150 updates
    python -m benchmarks.dense_vs_sparse --sweep length          # 8-15, 40-59 (and 90-109) new tokens
    python -m benchmarks.dense_vs_sparse --sweep beta            # ABC with beta in {0, .2, .4, .6, .8, 1}
    python -m benchmarks.dense_vs_sparse --sweep algos           # (ppo, a2c, trpo, maskable_ppo) x (sparse, abc)
    python -m benchmarks.dense_vs_sparse --sweep kl --algo token_ppo   # each mode at fixed KL coefs 0.05 0.1 0.2 0.4: frontiers
    python -m benchmarks.dense_vs_sparse --fidelity              # no training: ABC credit vs gold credit
    python -m benchmarks.dense_vs_sparse --from-results results/dense_vs_sparse/results.json   # redraw only

Every run writes into ``--out``: ``results.json`` (settings + one row per seed and
update), ``results.csv`` (the same rows), ``tables.md`` and PNG learning curves. The
results are saved after every finished run, so an interrupted benchmark keeps what it
has; ``--resume`` skips runs already stored, after checking that they were made with
this command's settings (TrainConfig after ``--set``, updates, env and lengths, model
files). SIGINT / SIGTERM stop the worker processes, keep the finished runs and exit
with 130 / 143 and the ``--resume`` command that completes the benchmark.

Hyperparameters are ``agents.TrainConfig``'s defaults (``--set FIELD=VALUE``
overrides one, e.g. ``--set lr=3e-5``), except the learner (SB3 ``ppo``, the learner of
docs/results.md) and the paper's 150 updates: see ``defaults.BENCH_OVERRIDES``.

Statistics (see :mod:`benchmarks.stats`): means over seeds with 95% percentile-bootstrap
CIs over seeds, the interquartile mean (IQM) over seeds, and the paper's speed figure:
the first update at which a condition's mean curve reaches the best mean of the
baseline (sparse), divided by the update at which sparse itself gets there.
"""

# Modules: defaults (constants, TrainConfig defaults), plan (runs, env ids), training (one run and its
# run config), pool (worker processes, signals), results (files, the --resume check), tables, plots,
# fidelity, provenance, cli (arguments, main).
from benchmarks.dense_vs_sparse.cli import build_parser, main, parse_args, train_benchmark
from benchmarks.dense_vs_sparse.defaults import (
    ALGOS,
    BENCH_OVERRIDES,
    BETA_GRID,
    DEFAULT_LENGTHS,
    FIELD_FLAGS,
    LENGTH_ENVS,
    METRIC_LABELS,
    METRICS,
    MODES,
    NON_RESULT_FIELDS,
    REQUIRED_FIELDS,
    SWEEP_ALGOS,
    train_defaults,
)
from benchmarks.dense_vs_sparse.fidelity import episode_fidelity, run_fidelity, sample_episodes
from benchmarks.dense_vs_sparse.plan import (
    RunSpec,
    build_specs,
    ensure_env,
    env_label,
    length_env_id,
    parse_length,
    slug,
)
from benchmarks.dense_vs_sparse.plots import plot_task
from benchmarks.dense_vs_sparse.pool import Interrupted, run_specs, stop_on_signals
from benchmarks.dense_vs_sparse.provenance import artefact_hashes, model_files_hash, run_meta
from benchmarks.dense_vs_sparse.results import ResumeError, check_resume, load_results, save_results
from benchmarks.dense_vs_sparse.tables import all_tables, report, seed_matrix, task_tables
from benchmarks.dense_vs_sparse.training import (
    config_hash,
    history_rows,
    make_train_config,
    parse_set,
    run_config,
    run_one,
)

__all__ = [
    "ALGOS", "BENCH_OVERRIDES", "BETA_GRID", "DEFAULT_LENGTHS", "FIELD_FLAGS", "LENGTH_ENVS", "METRICS", "METRIC_LABELS",
    "MODES", "NON_RESULT_FIELDS", "REQUIRED_FIELDS", "SWEEP_ALGOS", "Interrupted", "ResumeError", "RunSpec",
    "all_tables", "artefact_hashes", "build_parser", "build_specs", "check_resume", "config_hash", "ensure_env",
    "env_label", "episode_fidelity", "history_rows", "length_env_id", "load_results", "main", "make_train_config",
    "model_files_hash", "parse_args", "parse_length", "parse_set", "plot_task", "report", "run_config", "run_fidelity",
    "run_meta", "run_one", "run_specs", "sample_episodes", "save_results", "seed_matrix", "slug", "stop_on_signals",
    "task_tables", "train_benchmark", "train_defaults",
]
