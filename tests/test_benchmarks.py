"""Tests of the benchmark layer: statistics on hand-made inputs, redrawing from stored results,
the training pipeline against a stub agent, and a smoke run with the real agents (when present)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import dense_vs_sparse as bench
from benchmarks import stats

# ----------------------------------------------------------------------------- statistics


def test_bootstrap_ci_two_points_is_their_range() -> None:
    # Resampling [0, 1] gives means 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5% and
    # 97.5% quantiles of that distribution are 0 and 1.
    point, low, high = stats.bootstrap_ci([0.0, 1.0])
    assert point == 0.5
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_ci_degenerate_cases() -> None:
    point, low, high = stats.bootstrap_ci([2.0, 2.0, 2.0])
    assert (point, low, high) == (2.0, 2.0, 2.0)
    point, low, high = stats.bootstrap_ci([3.0])
    assert point == 3.0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([1.0, math.nan])


def test_bootstrap_ci_per_column_and_deterministic() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    point, low, high = stats.bootstrap_ci(x)
    np.testing.assert_allclose(point, [1.5, 5.0])
    assert 0.0 <= low[0] < 1.5 < high[0] <= 3.0
    assert low[1] == high[1] == 5.0
    again = stats.bootstrap_ci(x)
    np.testing.assert_array_equal(low, again[1])


def test_iqm_trims_a_quarter_each_side() -> None:
    # 8 values: trim 2 from each end -> mean(3, 4, 5, 6) = 4.5; the outlier 100 is ignored.
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 100], axis=None) == pytest.approx(4.5)
    assert stats.iqm(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # n < 4: nothing trimmed
    point, _, _ = stats.bootstrap_ci([1, 2, 3, 4, 5, 6, 7, 100], "iqm")
    assert point == pytest.approx(4.5)


def test_first_update_reaching() -> None:
    updates = [1, 2, 3, 4, 5]
    assert stats.first_update_reaching(updates, [0, 1, 3, 2, 4], 2.5) == 3
    assert stats.first_update_reaching(updates, [0, 1, 3, 2, 4], 4.0) == 5
    assert stats.first_update_reaching(updates, [0, 1, 3, 2, 4], 9.0) is None


def test_trailing_mean_uses_no_future_values() -> None:
    np.testing.assert_allclose(stats.trailing_mean([1, 3, 5, 7], 2), [1, 2, 4, 6])
    np.testing.assert_allclose(stats.trailing_mean([1, 3, 5, 7], 1), [1, 3, 5, 7])


def test_rank_and_distance_helpers() -> None:
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))  # constant credit: rank correlation undefined
    assert stats.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert stats.total_variation([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    assert stats.total_variation([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert stats.curve_correlation([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert math.isnan(stats.curve_correlation([1, 2, 3], [5, 5, 5]))
    assert stats.format_ci(1.234, 1.0, 1.5) == "1.23 [1.00, 1.50]"
    assert stats.format_ci(1.234, math.nan, math.nan) == "1.23"


def test_episode_fidelity_by_hand() -> None:
    ep = {"attention": np.array([0.1, 0.6, 0.3]), "gold_credit": np.array([0.0, 1.0, 0.0]), "score": 1.0, "gold_score": 0.5}
    f = bench.episode_fidelity(ep, beta=0.8, rng=np.random.default_rng(0))
    # ranks: a -> [1, 3, 2], g -> [1.5, 3, 1.5]; Pearson of the ranks = 0.866
    assert f["spearman_abc"] == pytest.approx(math.sqrt(3) / 2)
    assert f["mass_abc_attention"] == pytest.approx(0.6)
    assert f["mass_abc_beta0.8"] == pytest.approx(0.48)
    assert f["mass_sparse"] == 0.0 and f["tv_sparse"] == pytest.approx(1.0)
    assert f["mass_uniform"] == pytest.approx(1 / 3)
    assert f["top1_abc"] == 1.0 and f["attention_last_token"] == pytest.approx(0.3)
    assert f["spearman_recency"] == pytest.approx(0.0)


def test_fidelity_end_to_end_tiny(tmp_path: Path) -> None:
    # 4 episodes on the default device (TrainConfig's, which may be "auto"): the --fidelity path runs and writes its files
    out = tmp_path / "fid"
    argv = ["--fidelity", "--fidelity-envs", "abc_gym/Sentiment-v0", "--fidelity-episodes", "4", "--fidelity-batch", "4",
            "--out", str(out)]
    assert bench.main(argv) == 0
    summary = json.loads((out / "fidelity.json").read_text())["summary"]["abc_gym/Sentiment-v0"]
    assert summary["episodes"] == 4
    assert "Spearman(ABC a_t, gold)" in (out / "fidelity.md").read_text()


# ----------------------------------------------------------------------------- redraw from results


def _tiny_results() -> list[dict]:
    """2 conditions x 2 seeds x 3 updates with round numbers: rm = update + offset (+ seed)."""
    rows = []
    for cond, mode, offset in (("sparse", "sparse", 0.0), ("abc (beta 0.8)", "abc", 1.0)):
        for seed in (0, 1):
            for u in (1, 2, 3):
                rows.append(dict(
                    sweep="main", task="Tiny task", env_id="abc_gym/Sentiment-v0", condition=cond, baseline="sparse",
                    algo="ppo", reward_mode=mode, beta=0.8, seed=seed, update=u, rm_score=u + offset + seed,
                    gold_score=0.1 * u, kl=0.5 * u, value_loss=1.0 / u, run_wall_s=1.0,
                ))
    return rows


def test_from_results_redraws_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _tiny_results()
    path = bench.save_results(rows, {"command": "python -m benchmarks.dense_vs_sparse --tiny", "wall_s": 12.0}, tmp_path / "run")
    out = tmp_path / "redraw"
    assert bench.main(["--from-results", str(path), "--out", str(out), "--report-update", "2", "--speed-window", "1"]) == 0
    text = (out / "tables.md").read_text()
    assert text == capsys.readouterr().out.split("redrawn in")[0].rstrip("\n") + "\n"
    # 2 seeds: t interval half-width t(0.975, 1 df) * se = 12.706 * 0.5 = 6.35 for values a and a + 1.
    # sparse at update 2: seeds give 2 and 3 -> 2.50 [-3.85, 8.85]; final window = updates 1-3: per-seed
    # means 2 and 3, the same; abc is one higher on every seed
    assert "| sparse | 2 | 2.50 [-3.85, 8.85] | 2.50 [-3.85, 8.85] | 2.50 | 0.71 | 2.50 [-3.85, 8.85] |" in text
    assert "| abc (beta 0.8) | 2 | 3.50 [-2.85, 9.85] | 3.50 [-2.85, 9.85] | 3.50 | 0.71 | 3.50 [-2.85, 9.85] |" in text
    # abc - sparse is exactly 1 on both seeds: no variance, so no test and no ranking
    assert "| abc (beta 0.8) - sparse | RM, updates 1-3 | 2 | 1.00 [1.00, 1.00] | 1.00 | 2/2 [0.16, 1.00] | n/a | n/a | no difference detected |" in text
    # gold rises exactly with RM in every seed -> correlation 1
    assert "1.00 [1.00, 1.00] |" in text.split("corr(RM, gold)")[1]
    for name in ("curves", "diagnostics", "gold_vs_rm", "reach"):
        assert (out / f"{name}_Tiny_task.png").stat().st_size > 1000
    # the CSV holds the same rows and redraws the same table
    out_csv = tmp_path / "redraw_csv"
    bench.main(["--from-results", str(tmp_path / "run" / "results.csv"), "--out", str(out_csv), "--report-update", "2", "--speed-window", "1"])
    assert (out_csv / "tables.md").read_text().split("\n", 2)[2] == text.split("\n", 2)[2]


def _designed_results(n_seeds: int = 5, seed_sd: float = 1.0) -> pd.DataFrame:
    """3 conditions x n seeds x 20 updates: 'big' is 2 above sparse on every seed (+-0.1), 'same' is sparse +- 0.3."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(n_seeds):
        seed_level = rng.normal(0, seed_sd)  # shared by the modes of a seed: cancels in the paired difference
        for cond, shift in (("sparse", 0.0), ("big", 2.0 + rng.normal(0, 0.1)), ("same", rng.normal(0, 0.3))):
            for u in range(1, 21):
                rm = (seed_level + shift) * u / 20 + 1.0
                rows.append(dict(task="T", condition=cond, baseline="sparse", seed=seed, update=u, rm_score=rm,
                                 gold_score=0.1 * rm, kl=0.1 * u, value_loss=1.0))
    return pd.DataFrame(rows)


def test_declared_comparisons_paired_holm_and_verdicts() -> None:
    from benchmarks.dense_vs_sparse import tables

    df = _designed_results()
    family = tables.declared_comparisons(df, final_window=5)
    assert [(c.condition, c.metric) for c in family] == [
        ("big", "rm_score"), ("same", "rm_score"), ("big", "gold_score"), ("same", "gold_score")]
    by = {(c.condition, c.metric): c for c in family}
    assert by["big", "rm_score"].verdict == "higher" and by["big", "rm_score"].result.n_better == 5
    assert by["same", "rm_score"].verdict == "no difference detected"
    assert by["big", "rm_score"].window == "updates 16-20"
    # Holm over the family of 4 (not per table): the adjusted p is never below the raw one
    assert all(c.p_holm >= c.result.p_value for c in family)
    raw = sorted(c.result.p_value for c in family)
    assert min(c.p_holm for c in family) == pytest.approx(min(4 * raw[0], 1.0))
    text = tables.all_tables(df, report_update=5, smooth=1, final_window=5)
    assert "Holm p (family of 4)" in text and "| higher |" in text and "| no difference detected |" in text


def test_setting_contrast_pairs_seeds_per_condition_and_reads_unadjusted_p() -> None:
    from benchmarks.dense_vs_sparse import tables

    base = _designed_results()
    treat = base.copy()
    up = treat.condition == "big"
    treat.loc[up, "rm_score"] += 0.5 + 0.02 * treat.loc[up, "seed"]  # +0.5..0.58 on every seed of 'big' only
    treat = treat[treat.seed != 4]  # a seed the treatment lacks is left out of the pairs, not compared unpaired
    text = tables.setting_contrast(base, treat, "A", "B", final_window=5)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    big = rows["big", "RM, updates 16-20"]
    assert big[0] == "4" and big[1].startswith("0.53 [") and big[3] == "4/4 [0.40, 1.00]"
    assert big[-1] == "higher (unadjusted)"
    assert rows["sparse", "RM, updates 16-20"][-1] == "no difference detected"
    assert rows["sparse", "RM, updates 16-20"][1].startswith("0.00") and rows["sparse", "RM, updates 16-20"][3] == "0/4 [0.00, 0.60]"
    assert "B - A, mean [95% CI]" in text and "Not a verdict." in text
    with pytest.raises(ValueError, match="final windows differ"):
        tables.setting_contrast(base, base[base["update"] <= 19], "A", "B", final_window=5)
    with pytest.raises(ValueError, match="no condition in both"):
        tables.setting_contrast(base, base.assign(condition="other"), "A", "B", final_window=5)


def test_levels_table_counts_seeds_that_never_reach() -> None:
    from benchmarks.dense_vs_sparse import tables

    df = _designed_results(seed_sd=0.3)
    updates = tables.final_updates(df[df.task == "T"], 5)
    start, best, best_cond, marks = tables.reach_levels(df, updates)
    assert best_cond == "big" and start == pytest.approx(df[df["update"] == 1].rm_score.mean())
    assert marks == pytest.approx([start + 0.5 * (best - start), start + 0.8 * (best - start)])
    text = tables.levels_table(df, updates, window=1)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| ")}
    # 'big' reaches 50% on all 5 seeds, each before sparse (Clopper-Pearson 5/5: [0.48, 1]); its weakest seed
    # (final RM 2.28 < 80% level 2.35) never reaches 80%: counted as 4/5, and the interval's top is "never"
    assert rows["big", "50%"].split("|")[3:6] == [" 5/5 ", " 9 [7, 14] (94%: min-max) ", " 5/5 [0.48, 1.00] "]
    assert rows["big", "80%"].split("|")[3:5] == [" 4/5 ", " 14 [11, never] (94%: min-max) "]
    assert rows["sparse", "80%"].split("|")[3:5] == [" 0/5 ", " never [never, never] (94%: min-max) "]


# ----------------------------------------------------------------------------- pipeline with a stub agent


def _agents_importable() -> bool:
    try:
        return importlib.util.find_spec("agents.training") is not None
    except ModuleNotFoundError:
        return False


needs_agents = pytest.mark.skipif(not _agents_importable(), reason="agents.training is not importable (agents/ is another engineer's work)")


def _real_config() -> type:
    from agents.training import TrainConfig

    return TrainConfig


def _stub_agent(config: type | None = None) -> types.ModuleType:
    """agents.training with the real TrainConfig (or ``config``) and a fake train(): rm_score = update + seed (+1 for abc)."""
    calls: list = []

    def train(cfg) -> list[dict]:
        calls.append(cfg)
        bonus = 1.0 if cfg.reward_mode == "abc" else 0.0
        return [dict(update=u, rm_score=u + cfg.seed + bonus, gold_score=0.1 * u, kl=0.2 * u, value_loss=1.0, entropy=3.0)
                for u in range(1, cfg.n_updates + 1)]

    mod = types.ModuleType("agents.training")
    mod.TrainConfig, mod.train, mod.calls = config or _real_config(), train, calls
    return mod


def _config_without(field: str) -> type:
    """The real TrainConfig less one field: what a refactor of agents/ might leave the benchmark with."""
    keep = [(f.name, f.type, dataclasses.field(default=getattr(_real_config()(), f.name)))
            for f in dataclasses.fields(_real_config()) if f.name != field]
    return dataclasses.make_dataclass("TrainConfig", keep)


@needs_agents
def test_pipeline_with_stub_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = _stub_agent()
    monkeypatch.setitem(sys.modules, "agents.training", stub)
    out = tmp_path / "run"
    argv = ["--seeds", "2", "--n-updates", "3", "--modes", "sparse", "abc", "--jobs", "1", "--out", str(out),
            "--set", "lr=0.001"]
    assert bench.main(argv) == 0
    assert [(c.reward_mode, c.seed) for c in stub.calls] == [("sparse", 0), ("abc", 0), ("sparse", 1), ("abc", 1)]
    default = _real_config()()
    assert all(c.lr == 0.001 and c.progress is False for c in stub.calls)
    # everything not set keeps TrainConfig's default: the benchmark re-declares none of them
    assert all(c.episodes_per_update == default.episodes_per_update and c.n_epochs == default.n_epochs for c in stub.calls)
    assert all(c.algo == bench.BENCH_OVERRIDES["algo"][0] for c in stub.calls)
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["rows"]) == 2 * 2 * 3
    assert payload["meta"]["settings"]["seeds"] == 2 and "artefacts" in payload["meta"]
    assert payload["rows"][0]["entropy"] == 3.0  # extra numeric keys are kept
    # stub: rm = update + seed; update 3 -> seeds 3, 4; final window (updates 1-3) -> per-seed means 2, 3
    assert "| sparse | 2 | 3.50 [-2.85, 9.85] | 2.50 [-3.85, 8.85] |" in (out / "tables.md").read_text()
    # --resume finds every run stored and trains nothing
    stub.calls.clear()
    assert bench.main(argv + ["--resume"]) == 0
    assert stub.calls == []


@needs_agents
def test_set_takes_real_trainconfig_fields_only(capsys: pytest.CaptureFixture) -> None:
    # The help and docstring once offered `--set learning_rate=1e-4`, a field TrainConfig does not have (it is lr).
    fields = {f.name for f in dataclasses.fields(_real_config())}
    documented = bench.build_parser().format_help() + (bench.__doc__ or "")
    examples = re.findall(r"--set\s+([a-z_]\w*)=", documented)  # FIELD=VALUE (capitals) is the syntax
    assert examples and set(examples) <= fields, f"--set examples {examples} name fields TrainConfig lacks"
    assert bench.parse_args(["--set", "lr=1e-4"]).set == ["lr=1e-4"]
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--set", "learning_rate=1e-4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and re.search(r"valid fields:.*\blr\b", err)
    # fields with their own flag are refused with the flag to use
    with pytest.raises(SystemExit):
        bench.parse_args(["--set", "n_updates=3"])
    assert "--n-updates" in capsys.readouterr().err


@needs_agents
def test_defaults_are_trainconfigs(monkeypatch: pytest.MonkeyPatch) -> None:
    default = _real_config()()
    args = bench.parse_args([])
    assert (args.episodes_per_update, args.beta, args.device) == (default.episodes_per_update, default.beta, default.device)
    # they follow TrainConfig when it changes, rather than a copy in the benchmark
    changed = dataclasses.make_dataclass("TrainConfig", [("episodes_per_update", int, dataclasses.field(default=7))],
                                         bases=(_real_config(),))
    monkeypatch.setitem(sys.modules, "agents.training", _stub_agent(changed))
    assert bench.parse_args([]).episodes_per_update == 7
    # the deliberate departures are stated in --help
    help_text = bench.build_parser().format_help()
    assert "BENCH_OVERRIDES" in help_text and f"TrainConfig's default: {default.algo!r}" in help_text
    assert "docs/results.md" in help_text  # why the benchmark runs SB3 ppo


@needs_agents
def test_missing_trainconfig_field_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "agents.training", _stub_agent(_config_without("episodes_per_update")))
    with pytest.raises(RuntimeError, match="lacks field.*episodes_per_update"):
        bench.main(["--seeds", "1", "--n-updates", "1", "--modes", "sparse", "--jobs", "1", "--out", str(tmp_path)])


def test_sweep_plans() -> None:
    beta = bench.build_specs(bench.parse_args(["--sweep", "beta", "--seeds", "2"]))
    assert len(beta) == 12 and {s.reward_mode for s in beta} == {"abc"}
    assert {s.baseline for s in beta} == {"beta 0"} and sorted({s.beta for s in beta}) == list(bench.BETA_GRID)
    algos = bench.build_specs(bench.parse_args(["--sweep", "algos", "--seeds", "1"]))
    assert sorted({(s.algo, s.reward_mode) for s in algos}) == sorted(
        (a, m) for a in ("ppo", "a2c", "trpo", "maskable_ppo") for m in ("sparse", "abc"))
    quick = bench.parse_args(["--quick"])
    assert (quick.seeds, quick.modes, quick.n_updates) == (3, ["sparse", "abc", "red"], quick.quick_updates)
    assert (quick.algo, quick.env_id, quick.quick_updates) == ("token_ppo", "abc_gym/Sentiment-v0", 50)
    plain = bench.parse_args([])
    assert (plain.algo, plain.env_id) == ("ppo", "abc_gym/Sentiment-v0")
    length = bench.build_specs(bench.parse_args(["--sweep", "length", "--seeds", "1", "--modes", "sparse"]))
    assert [s.env_id for s in length] == ["abc_gym/Sentiment-v0", "abc_gym/SentimentLong-v0", "abc_gym/Sentiment-90-109-v0"]
    import gymnasium as gym

    # registered by abc_gym (not the benchmark): Sentiment-v0's kwargs with the new range
    spec, base = gym.spec("abc_gym/Sentiment-90-109-v0"), gym.spec("abc_gym/Sentiment-v0")
    assert (spec.kwargs["min_new_tokens"], spec.kwargs["max_new_tokens"]) == (90, 109)
    assert spec.kwargs["reward_model"] == base.kwargs["reward_model"] and spec.vector_entry_point == base.vector_entry_point


def test_register_length_variant() -> None:
    import gymnasium as gym

    from abc_gym.registration import register_length_variant

    env_id = register_length_variant("abc_gym/SentimentLong-v0", 20, 30)
    assert env_id == "abc_gym/SentimentLong-20-30-v0" and register_length_variant("abc_gym/SentimentLong-v0", 20, 30) == env_id
    kw, base = gym.spec(env_id).kwargs, gym.spec("abc_gym/SentimentLong-v0").kwargs
    assert (kw["min_new_tokens"], kw["max_new_tokens"]) == (20, 30)
    assert {k: v for k, v in kw.items() if "new_tokens" not in k} == {k: v for k, v in base.items() if "new_tokens" not in k}
    with pytest.raises(ValueError, match="min_new_tokens <= max_new_tokens"):
        register_length_variant("abc_gym/Sentiment-v0", 9, 8)
    # the benchmark's worker processes re-register variants from the id alone
    bench.ensure_env("abc_gym/Sentiment-33-44-v0")
    assert gym.spec("abc_gym/Sentiment-33-44-v0").kwargs["max_new_tokens"] == 44


# ----------------------------------------------------------------------------- smoke run with the real agents


@needs_agents
def test_smoke_run_with_real_agents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # In-process (the CLI path minus interpreter start-up): 1 seed, 2 updates, ABC (the mode with the most machinery).
    out = tmp_path / "smoke"
    argv = ["--seeds", "1", "--n-updates", "2", "--modes", "abc", "--jobs", "1", "--threads-per-job", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["update"] for r in rows] == [1, 2]
    assert all(r[m] is not None and math.isfinite(r[m]) for r in rows for m in bench.METRICS)
    assert "total run time" in capsys.readouterr().out
    assert (out / "tables.md").exists()


# ----------------------------------------------------------------------------- issue 10: RED


def test_red_is_a_benchmark_mode_but_not_a_default() -> None:
    args = bench.parse_args(["--modes", "sparse", "abc", "red", "--smoke"])
    specs = bench.build_specs(args)
    assert {s.condition for s in specs} == {"sparse", "abc (beta 0.8)", "red (beta 0.8)"}
    assert "red" not in bench.parse_args([]).modes


def test_episode_fidelity_red_by_hand() -> None:
    ep = {"attention": np.array([0.1, 0.6, 0.3]), "gold_credit": np.array([0.0, 1.0, 0.0]), "score": 3.0,
          "gold_score": 0.5, "prefix_scores": np.array([0.5, 2.5, 3.0])}
    f = bench.episode_fidelity(ep, beta=0.8, rng=np.random.default_rng(0))
    # d = [0.5, 2.0, 0.5]: the middle token is the gold one
    assert f["top1_red"] == 1.0 and f["mass_red_abs"] == pytest.approx(2.0 / 3.0)
    assert f["spearman_red"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- issue 19: raw results, generated docs blocks, headline

RAW_FIXTURE = Path(__file__).resolve().parents[1] / "docs" / "raw" / "quick_3x12.json.gz"


def test_raw_results_round_trip_and_are_deterministic(tmp_path: Path) -> None:
    from benchmarks.dense_vs_sparse import tables
    from benchmarks.dense_vs_sparse.results import save_raw

    rows = _tiny_results()
    json_path = bench.save_results(rows, {"command": "tiny"}, tmp_path / "run")
    a = save_raw(rows, {"command": "tiny"}, tmp_path / "a.json.gz")
    b = save_raw(bench.load_results(json_path)[0], {"command": "tiny"}, tmp_path / "b.json.gz")
    assert a.read_bytes() == b.read_bytes()  # no timestamp in the gzip header; same rows -> same bytes
    df_json, _ = bench.load_results(json_path)
    df_raw, meta = bench.load_results(a)
    assert meta == {"command": "tiny"} and list(df_raw.dtypes) == list(df_json.dtypes)
    assert tables.all_tables(df_raw, 2, 1) == tables.all_tables(df_json, 2, 1)
    # floats keep 7 significant digits (float32's), unless asked for all
    rows[0]["rm_score"] = 1.2345678912345
    assert bench.load_results(save_raw(rows, {}, tmp_path / "c.json.gz"))[0]["rm_score"][0] == 1.234568
    assert bench.load_results(save_raw(rows, {}, tmp_path / "d.json.gz", significant=None))[0]["rm_score"][0] == 1.2345678912345


def _markdown_files() -> list[Path]:
    root = RAW_FIXTURE.parents[2]
    skip = {".git", ".venv", "venv", "results", "node_modules", "runs", "build", "dist"}
    return [p for p in root.rglob("*.md") if not skip & set(p.relative_to(root).parts)]


def test_every_docs_block_is_the_scripts_output() -> None:
    # regenerates each <!-- table:NAME ... --> block of every markdown file from its stored raw results
    from benchmarks.dense_vs_sparse import docs_blocks

    files = _markdown_files()
    blocks = {b.name for p in files for b in docs_blocks.find_blocks(p.read_text())}
    assert {"example-quick", "example-headline"} <= blocks  # docs/statistics.md: the test is never vacuous
    assert docs_blocks.check(files) == []


def test_docs_block_detects_a_changed_number(tmp_path: Path) -> None:
    from benchmarks.dense_vs_sparse import docs_blocks

    text = (RAW_FIXTURE.parents[1] / "statistics.md").read_text()
    body = docs_blocks.find_blocks(text)[0].body
    tampered = text.replace(body, body.replace("| sparse | 3 |", "| sparse | 4 |", 1))
    assert tampered != text
    doc = tmp_path / "doc.md"
    doc.write_text(tampered)
    assert docs_blocks.check([doc]) == [f"{doc}: example-quick"]
    assert docs_blocks.main(["update", str(doc)]) == 0 and doc.read_text() == text
    with pytest.raises(ValueError, match="unknown block kind"):
        docs_blocks.render({"results": str(RAW_FIXTURE), "kind": "nope"})


def test_only_markers_at_line_start_are_blocks() -> None:
    from benchmarks.dense_vs_sparse import docs_blocks

    text = ("    <!-- table:a results=x kind=tables -->\n    <!-- /table:a -->\n"
            "see `<!-- table:b results=y -->` and\n<!-- table:c results=z kind=levels task=40-59 -->\nold\n<!-- /table:c -->\n")
    [block] = docs_blocks.find_blocks(text)
    assert (block.name, block.attrs, block.body) == ("c", {"results": "z", "kind": "levels", "task": "40-59"}, "old\n")


def test_docs_block_parts_are_the_full_tables_pieces() -> None:
    from benchmarks.dense_vs_sparse import docs_blocks

    full = docs_blocks.render({"results": str(RAW_FIXTURE), "kind": "tables", "report_update": "5"})
    for kind in ("conditions", "diagnostics", "comparisons", "levels"):
        part = docs_blocks.render({"results": str(RAW_FIXTURE), "kind": kind, "task": "40-59", "report_update": "5"})
        assert part.strip() in full  # the same text, Holm family included, as the whole-file tables
    with pytest.raises(ValueError, match="no task matches"):
        docs_blocks.render({"results": str(RAW_FIXTURE), "kind": "levels", "task": "90-109"})


def test_headline_from_raw_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.dense_vs_sparse import tables

    # raw results in docs/raw are redrawn elsewhere by default, never into docs/raw
    assert bench.parse_args(["--from-results", str(RAW_FIXTURE)]).out == "results/from_raw/quick_3x12"
    assert bench.main(["--from-results", str(RAW_FIXTURE), "--out", str(tmp_path), "--headline"]) == 0
    text = (tmp_path / "headline.md").read_text()
    assert tables.REPRODUCIBILITY in text and text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| quick_3x12 |")]
    family = tables.declared_comparisons(bench.load_results(RAW_FIXTURE)[0])
    # every declared comparison, whatever its sign or verdict, gets its row
    assert len(rows) == len(family) == 4
    assert all(f"**{c.verdict}**" in row for c, row in zip(family, rows))


# ----------------------------------------------------------------------------- stage 5: tuning


def _grid_folder(root: Path, lr: float, g: float, gain: dict[str, float], seeds: range) -> Path:
    """A benchmark --out folder of one grid point: each mode's RM climbs to ``gain[mode] * f(lr, g)``."""
    from benchmarks.dense_vs_sparse.results import save_results

    rows = []
    for mode, scale in gain.items():
        cond = "abc (beta 0.8)" if mode == "abc" else mode
        for seed in seeds:
            top = scale * (1.0 + lr * 1e4 - abs(g - (2.0 if mode == "sparse" else 0.5))) + 0.01 * seed * scale
            for u in range(1, 21):
                rows.append(dict(task="T", env_id="E", condition=cond, baseline="sparse", reward_mode=mode, seed=seed,
                                 update=u, rm_score=top * u / 20, gold_score=0.1 * u + 0.01 * ((7 * seed + len(mode)) % 5), kl=0.1 * u, value_loss=1.0))
    out = root / f"lr{lr:g}_g{g:g}"
    save_results(rows, {"command": "x", "settings": {"set": [f"lr={lr:g}", f"max_grad_norm={g:g}"]}}, out)
    return out


def test_tuning_selects_each_modes_best_point_by_rm_and_combines_evaluations(tmp_path: Path) -> None:
    from benchmarks.dense_vs_sparse import tables, tuning

    # sparse peaks at max_grad_norm 2, abc at 0.5; both prefer the larger lr: each mode gets its own point
    dirs = [_grid_folder(tmp_path, lr, g, {"sparse": 1.0, "abc": 1.0}, range(1000, 1003))
            for lr in (1e-4, 3e-4) for g in (0.5, 2.0)]
    df = tuning.store(dirs, tmp_path / "grid.json.gz")
    text, selected = tuning.grid_table(tuning.load_results(tmp_path / "grid.json.gz")[0], final_window=5)
    assert selected == {"sparse": {"lr": 3e-4, "max_grad_norm": 2.0},
                        "abc (beta 0.8)": {"lr": 3e-4, "max_grad_norm": 0.5}}
    assert "| **sparse** | 0.0003 | 2 | 3 |" in text and "| sparse | 0.0001 | 0.5 | 3 |" in text
    from benchmarks.dense_vs_sparse import docs_blocks  # the docs block is the same table

    assert docs_blocks.render({"results": "grid.json.gz", "kind": "tune_grid", "final_window": "5"}, tmp_path) == text
    # a grid widened later, stored apart, is selected over as one grid: here the wider lr wins for sparse only
    wide = [_grid_folder(tmp_path / "wide", 1e-3, g, {"sparse": 1.5, "abc": 0.3}, range(1000, 1003)) for g in (0.5, 2.0)]
    tuning.store(wide, tmp_path / "wide.json.gz")
    both = docs_blocks.render({"results": "grid.json.gz,wide.json.gz", "kind": "tune_grid", "final_window": "5"}, tmp_path)
    assert "| **sparse** | 0.001 |" in both and "| **abc (beta 0.8)** | 0.0003 | 0.5 |" in both
    assert tuning.evaluation_flags(df, selected)["abc (beta 0.8)"] == "--modes abc --set lr=0.0003 max_grad_norm=0.5"
    # evaluation: one folder per mode at its point, seeds 0..4, joined into one task compared pairwise
    ev = [_grid_folder(tmp_path / "eval_s", 3e-4, 2.0, {"sparse": 1.0}, range(5)),
          _grid_folder(tmp_path / "eval_a", 3e-4, 0.5, {"abc": 1.5}, range(5))]
    joined = tuning.combine(ev, tmp_path / "tuned.json.gz")
    assert joined["task"].nunique() == 1
    family = tables.declared_comparisons(joined, final_window=5)
    assert [(c.condition, c.metric) for c in family] == [("abc (beta 0.8)", "rm_score"), ("abc (beta 0.8)", "gold_score")]
    assert family[0].result.n == 5 and family[0].verdict == "higher"
    partial = df[~((df["tune_lr"] == 3e-4) & (df["seed"] == 1002))]  # one grid point short of a seed
    with pytest.raises(ValueError, match="unequal tuning seeds"):
        tuning.grid_table(partial, final_window=5)
    with pytest.raises(ValueError, match="more than one folder"):
        tuning.combine([ev[0], ev[0]], tmp_path / "bad.json.gz")


def test_tuning_refuses_a_run_without_the_grid_settings(tmp_path: Path) -> None:
    from benchmarks.dense_vs_sparse import tuning

    with pytest.raises(ValueError, match="--set lr=VALUE max_grad_norm=VALUE"):
        tuning.grid_point({"command": "python -m benchmarks.dense_vs_sparse", "settings": {"set": ["lr=1e-4"]}})
