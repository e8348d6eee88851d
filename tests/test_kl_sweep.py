"""``--sweep kl`` (issue 19, stage 4): the plan (fixed coefficients, adaptive KL off), resume, the tables and
frontier from hand-made rows, the generated docs blocks, and a tiny end-to-end run with the real agents."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import dense_vs_sparse as bench
from benchmarks.dense_vs_sparse import docs_blocks, tables
from benchmarks.dense_vs_sparse.defaults import KL_GRID
from benchmarks.dense_vs_sparse.plan import kl_task, kl_title
from benchmarks.dense_vs_sparse.results import row_spec, save_raw
from benchmarks.dense_vs_sparse.training import config_hash, history_rows, make_train_config, run_config

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"n_updates": 3, "episodes_per_update": 4, "device": "cpu", "set": {}, "threads_per_job": 1, "log_root": None}

# ----------------------------------------------------------------------------- plan and flags


def test_kl_plan_fixes_each_coefficient_and_turns_adaptation_off() -> None:
    args = bench.parse_args(["--sweep", "kl", "--seeds", "2"])
    assert args.kl_coefs == list(KL_GRID) == [0.05, 0.1, 0.2, 0.4]
    assert args.modes == list(bench.defaults.DEFAULT_MODES) and args.env_id == "abc_gym/Sentiment-v0"
    specs = bench.build_specs(args)
    assert len(specs) == 4 * len(args.modes) * 2
    # seed-major: a cut-short sweep has every (coefficient, mode) point at the first seeds
    assert [s.seed for s in specs] == [0] * 16 + [1] * 16
    assert {s.fixed_kl_coef for s in specs} == set(KL_GRID)
    for s in specs:
        cfg = make_train_config(s, SETTINGS, None)
        assert (cfg.kl_coef, cfg.adaptive_kl) == (s.fixed_kl_coef, False)
        assert kl_title(s.task) == "Sentiment-v0 (8-15 new tokens)" and s.task == kl_task(kl_title(s.task), s.fixed_kl_coef)
    assert len({s.name for s in specs}) == len(specs)  # the task names the coefficient
    # the same mode and seed at two coefficients: two run configs, two hashes
    sparse0 = [s for s in specs if s.reward_mode == "sparse" and s.seed == 0]
    hashes = {config_hash(run_config(s, SETTINGS)) for s in sparse0}
    assert len(hashes) == 4
    # the other sweeps keep TrainConfig's controller
    main = bench.build_specs(bench.parse_args(["--seeds", "1"]))
    default = bench.defaults.train_config_class()()
    assert all(s.fixed_kl_coef is None for s in main)
    assert all(make_train_config(s, SETTINGS, None).adaptive_kl == default.adaptive_kl for s in main)


@pytest.mark.parametrize("argv, needle", [
    (["--kl-coefs", "0.1"], "add --sweep kl"),
    (["--sweep", "kl", "--kl-coefs", "0.1", "0.1"], "repeated"),
    (["--sweep", "kl", "--kl-coefs", "-0.1"], ">= 0"),
    (["--sweep", "kl", "--set", "kl_coef=0.3"], "use --kl-coefs"),
    (["--sweep", "kl", "--set", "adaptive_kl=true"], "use --kl-coefs"),
])
def test_kl_flags_refused_with_the_fix(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_set_kl_coef_still_works_outside_the_kl_sweep() -> None:
    args = bench.parse_args(["--set", "kl_coef=0.3", "adaptive_kl=false", "--seeds", "1", "--modes", "sparse"])
    [spec] = bench.build_specs(args)
    cfg = make_train_config(spec, {**SETTINGS, "set": bench.parse_set(args.set)}, None)
    assert (cfg.kl_coef, cfg.adaptive_kl) == (0.3, False)


def test_rows_carry_the_coefficient_and_other_sweeps_rows_are_unchanged() -> None:
    history = [{"update": 1, "rm_score": 1.0, "gold_score": 0.5, "kl": 2.0, "value_loss": 1.0, "kl_coef": 0.1}]
    kl_spec = bench.build_specs(bench.parse_args(["--sweep", "kl", "--seeds", "1", "--modes", "sparse", "--kl-coefs", "0.1"]))[0]
    [row] = history_rows(kl_spec, history, 1.0)
    # fixed_kl_coef: the sweep's setting; kl_coef: the controller's value the agent reports (the same when fixed)
    assert (row["sweep"], row["fixed_kl_coef"], row["kl_coef"]) == ("kl", 0.1, 0.1)
    assert row_spec(json.loads(json.dumps(row))) == kl_spec
    main_spec = bench.build_specs(bench.parse_args(["--seeds", "1", "--modes", "sparse"]))[0]
    [main_row] = history_rows(main_spec, history, 1.0)
    assert "fixed_kl_coef" not in main_row and row_spec(main_row) == main_spec
    # a table mixing both kinds of rows (pandas fills NaN) still gives each row its own spec
    assert row_spec({**main_row, "fixed_kl_coef": math.nan}) == main_spec


# ----------------------------------------------------------------------------- resume (stub agent)


def _stub_agent() -> types.ModuleType:
    """agents.training with the real TrainConfig and a fake train(): numbers from the config, calls recorded."""
    from agents.training import TrainConfig

    calls: list = []

    def train(cfg) -> list[dict]:
        calls.append(cfg)
        return [dict(update=u, rm_score=u + cfg.seed - cfg.kl_coef, gold_score=0.1 * u, kl=1.0 / (cfg.kl_coef + 0.1),
                     value_loss=1.0, kl_coef=cfg.kl_coef) for u in range(1, cfg.n_updates + 1)]

    mod = types.ModuleType("agents.training")
    mod.TrainConfig, mod.train, mod.calls = TrainConfig, train, calls
    return mod


def test_kl_resume_adds_coefficients_but_refuses_unnamed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    stub = _stub_agent()
    monkeypatch.setitem(sys.modules, "agents.training", stub)
    out = tmp_path / "kl"
    base = ["--sweep", "kl", "--seeds", "1", "--n-updates", "2", "--modes", "sparse", "abc", "--jobs", "1", "--out", str(out)]
    assert bench.main([*base, "--kl-coefs", "0.1", "0.4"]) == 0
    assert [(c.kl_coef, c.adaptive_kl) for c in stub.calls] == [(0.1, False)] * 2 + [(0.4, False)] * 2
    payload = json.loads((out / "results.json").read_text())
    assert {r["fixed_kl_coef"] for r in payload["rows"]} == {0.1, 0.4}
    by_coef = {r["fixed_kl_coef"]: r["config_hash"] for r in payload["rows"] if r["reward_mode"] == "sparse"}
    assert len(set(by_coef.values())) == 2
    assert all(run["config"]["train"]["adaptive_kl"] is False for run in payload["meta"]["runs"].values())
    # a stored coefficient the command does not name: refused, with the command that resumes
    stub.calls.clear()
    assert bench.main([*base, "--kl-coefs", "0.1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "coefficient(s) 0.4" in err and "--kl-coefs 0.1 0.4" in err and stub.calls == []
    # another sweep into the same folder: refused by the existing rule
    assert bench.main(["--seeds", "1", "--n-updates", "2", "--modes", "sparse", "--jobs", "1", "--out", str(out), "--resume"]) == 2
    assert "--sweep kl" in capsys.readouterr().err
    # adding a coefficient runs only the new one; the stored runs are checked and kept
    assert bench.main([*base, "--kl-coefs", "0.1", "0.4", "0.8", "--resume"]) == 0
    assert [c.kl_coef for c in stub.calls] == [0.8, 0.8]
    assert "Holm p (family of 6)" in (out / "tables.md").read_text()  # 3 coefficients x abc x (RM, gold)
    assert (out / "frontier_Sentiment-v0_8-15_new_tokens.png").stat().st_size > 1000
    for coef in ("0.1", "0.4", "0.8"):  # each coefficient's learning curves beside the frontier
        assert (out / f"curves_Sentiment-v0_8-15_new_tokens_fixed_KL_coef_{coef}.png").exists()


# ----------------------------------------------------------------------------- tables from hand-made rows

TITLE = "Tiny (8-15 new tokens)"


def _kl_rows() -> pd.DataFrame:
    """2 coefficients x (sparse, abc) x 3 seeds x 3 updates, constant over updates (so the window mean is the value).

    RM: sparse 1 + seed at both coefficients; abc - sparse = [1, 2, 3] at 0.1 and [3.9, 4, 4.1] at 0.4
    (seeds 0, 1, 2). Gold = RM / 10. KL: sparse 8 + seed (0.1) and 3 + seed (0.4), abc 10 + seed and 4 + seed.
    """
    diffs = {0.1: [1.0, 2.0, 3.0], 0.4: [3.9, 4.0, 4.1]}
    kls = {(0.1, "sparse"): 8.0, (0.1, "abc"): 10.0, (0.4, "sparse"): 3.0, (0.4, "abc"): 4.0}
    rows = []
    for seed in range(3):
        for coef in (0.1, 0.4):
            for cond in ("sparse", "abc"):
                rm = 1.0 + seed + (diffs[coef][seed] if cond == "abc" else 0.0)
                for u in (1, 2, 3):
                    rows.append(dict(sweep="kl", task=kl_task(TITLE, coef), env_id="abc_gym/Sentiment-v0", condition=cond,
                                     baseline="sparse", algo="token_ppo", reward_mode=cond, beta=0.8, seed=seed,
                                     fixed_kl_coef=coef, update=u, rm_score=rm, gold_score=rm / 10,
                                     kl=kls[coef, cond] + seed, kl_coef=coef, value_loss=1.0, run_wall_s=1.0))
    return pd.DataFrame(rows)


def _p_2df(t: float) -> float:
    """Two-sided p of a t statistic with 2 degrees of freedom (3 paired seeds), in closed form: 1 - t / sqrt(2 + t^2)."""
    return 1 - t / math.sqrt(2 + t * t)


def test_kl_tables_by_hand() -> None:
    df = _kl_rows()
    assert tables.is_kl_sweep(df) and not tables.is_kl_sweep(df.drop(columns="fixed_kl_coef"))
    family = tables.declared_comparisons(df)
    # the declared family: 2 coefficients x 1 condition vs sparse x 2 metrics
    assert [(float(df.loc[df.task == c.task, "fixed_kl_coef"].iloc[0]), c.metric) for c in family] == [
        (0.1, "rm_score"), (0.1, "gold_score"), (0.4, "rm_score"), (0.4, "gold_score")]
    # differences [1, 2, 3]: mean 2, sd 1, t = 2 * sqrt(3); [3.9, 4, 4.1]: mean 4, sd 0.1, t = 40 * sqrt(3)
    p_small, p_big = _p_2df(2 * math.sqrt(3)), _p_2df(40 * math.sqrt(3))
    assert p_small == pytest.approx(0.07418, abs=1e-5)
    assert [c.result.p_value for c in family] == pytest.approx([p_small, p_small, p_big, p_big], rel=1e-6)
    # Holm over the 4: the two smallest x 4 (then the running max), the two largest x 2 (then the running max)
    assert [c.p_holm for c in family] == pytest.approx([2 * p_small, 2 * p_small, 4 * p_big, 4 * p_big], rel=1e-6)
    assert [c.verdict for c in family] == ["no difference detected"] * 2 + ["higher"] * 2

    text = tables.kl_tables(df)
    lines = text.splitlines()
    # sparse at 0.1: RM [1, 2, 3] -> 2 +- t(0.975, 2) * 1 / sqrt(3) = 2 +- 2.484; KL [8, 9, 10] -> 9.0 [6.5, 11.5];
    # abc - sparse gold at 0.4: [0.39, 0.40, 0.41] -> 0.4 +- 4.303 * 0.01 / sqrt(3) = 0.4 +- 0.025
    assert "| 0.1 | sparse | 3 | 2.00 [-0.48, 4.48] | 2.00 | 1.00 | 0.200 [-0.048, 0.448] | 9.0 [6.5, 11.5] |" in lines
    assert ("| 0.1 | abc - sparse | RM, updates 1-3 | 3 | 2.00 [-0.48, 4.48] | 2.00 | 3/3 [0.29, 1.00] | 0.074 | 0.148 | "
            "no difference detected |") in lines
    assert ("| 0.4 | abc - sparse | gold, updates 1-3 | 3 | 0.400 [0.375, 0.425] | 0.400 | 3/3 [0.29, 1.00] | < 0.001 | "
            "< 0.001 | higher |") in lines  # Holm p = 4 * 0.00021
    assert "Holm p (family of 4)" in text
    assert "declared family of 4 (2 coefficients x 1 condition vs sparse x 2 metrics: RM, gold)" in text
    # the frontier: per condition in order of mean KL (sparse: 0.4 at KL 4, then 0.1 at KL 9), and the shared range
    frontier = text.split("| condition | KL coef |")[1]
    assert frontier.index("| sparse | 0.4 | 4.0 [1.5, 6.5] |") < frontier.index("| sparse | 0.1 | 9.0 [6.5, 11.5] |")
    assert "Mean KL covered by each frontier: sparse 4.0-9.0; abc 5.0-11.0. Range every condition covers: 5.0-9.0." in text
    assert "better at equal KL only where its frontier lies above another's over the same KL range" in text
    assert "winner" in text and "frontier_Tiny_8-15_new_tokens.png" in text


def test_kl_docs_blocks_regenerate_from_raw(tmp_path: Path) -> None:
    raw = save_raw(_kl_rows(), {"command": "hand-made"}, tmp_path / "docs" / "raw" / "kl_tiny.json.gz")
    rel = raw.relative_to(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- table:kl results={rel} kind=kl_tables -->\n<!-- /table:kl -->\n"
                   f"<!-- table:klf results={rel} kind=kl_frontier -->\nstale\n<!-- /table:klf -->\n")
    assert docs_blocks.check([doc], tmp_path) == [f"{doc}: kl", f"{doc}: klf"]
    docs_blocks.update([doc], tmp_path)
    assert docs_blocks.check([doc], tmp_path) == []
    full = docs_blocks.render({"results": str(rel), "kind": "kl_tables"}, tmp_path)
    assert full == tables.kl_tables(_kl_rows())
    for part in tables.KL_PARTS:  # each one-table block is a piece of the full block (Holm family included)
        assert docs_blocks.render({"results": str(rel), "kind": f"kl_{part}"}, tmp_path).strip() in full
    tampered = doc.read_text().replace("| 0.1 | sparse | 3 |", "| 0.1 | sparse | 4 |", 1)
    doc.write_text(tampered)
    assert docs_blocks.check([doc], tmp_path) == [f"{doc}: kl"]


@pytest.mark.skipif(not (ROOT / "docs" / "raw" / "kl_8_15.json.gz").exists(), reason="stage 4 not run yet: no docs/raw/kl_8_15.json.gz")
def test_stored_kl_sweep_renders() -> None:
    # the stage-4 raw results, once stored: they are a kl sweep and their block renders (docs blocks are then
    # compared with the docs by tests/test_benchmarks.py, which regenerates every block)
    df, _ = bench.load_results(ROOT / "docs" / "raw" / "kl_8_15.json.gz")
    assert tables.is_kl_sweep(df)
    text = docs_blocks.render({"results": "docs/raw/kl_8_15.json.gz", "kind": "kl_tables"})
    assert "Holm p (family of" in text and "no single winner is computed" in text


# ----------------------------------------------------------------------------- end to end with the real agents


def test_kl_smoke_end_to_end(tmp_path: Path) -> None:
    # the smallest real sweep: --smoke (1 seed x 2 updates), 2 coefficients x (sparse, abc), 4 completions per update
    out = tmp_path / "kl"
    argv = ["--sweep", "kl", "--smoke", "--kl-coefs", "0.1", "0.4", "--modes", "sparse", "abc", "--algo", "token_ppo",
            "--episodes-per-update", "4", "--jobs", "1", "--threads-per-job", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 2
    # the agent's own report of its coefficient: fixed at the sweep's value on every update (no adaptation)
    assert all(r["kl_coef"] == r["fixed_kl_coef"] for r in rows) and {r["fixed_kl_coef"] for r in rows} == {0.1, 0.4}
    assert all(math.isfinite(r[m]) for r in rows for m in bench.METRICS)
    text = (out / "tables.md").read_text()
    assert "| KL coef | condition | seeds |" in text and "Holm p (family of 4)" in text  # 2 coefficients x abc x (RM, gold)
    assert (out / "frontier_Sentiment-v0_8-15_new_tokens.png").stat().st_size > 1000
    # --from-results redraws the same tables
    redraw = tmp_path / "redraw"
    assert bench.main(["--from-results", str(out / "results.json"), "--out", str(redraw)]) == 0
    assert (redraw / "tables.md").read_text().split("\n", 2)[2] == text.split("\n", 2)[2]
    assert (redraw / "frontier_Sentiment-v0_8-15_new_tokens.png").exists()


def test_kl_points_match_the_window_rule() -> None:
    df = _kl_rows()
    [p] = [p for p in tables.kl_points(df) if p.coef == 0.4 and p.condition == "abc"]
    assert p.title == TITLE and p.window == "updates 1-3"
    np.testing.assert_allclose(p.kl.to_numpy(), [4.0, 5.0, 6.0])
    assert dataclasses.is_dataclass(p) and p.ci("kl")[0] == pytest.approx(5.0)
