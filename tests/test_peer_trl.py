"""benchmarks/peer_trl.py at tiny sizes (2 completions x 4 tokens, 1 repeat).

The TokenPPO and floor half runs in the project venv; the TRL half only where TRL 1.12 is
installed (its own venv: the main CI leg has no trl, and the test says so when it skips).
"""

from __future__ import annotations

import math
import sys
import types

import pytest

pytest.importorskip("stable_baselines3")

from benchmarks import peer_trl  # noqa: E402

TINY = ["--completions", "2", "--new-tokens", "4", "--repeats", "1"]


def _medians_ok(medians: dict[str, float], names: list[str]) -> None:
    for name in names:
        assert name in medians and medians[name] > 0 and math.isfinite(medians[name]), (name, medians)


def test_tokenppo_and_floor_tables_at_tiny_sizes(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import json

    peer_trl.main(["--skip-trl", *TINY, "--no-variant", "--json", str(tmp_path / "peer.json")])
    out = capsys.readouterr().out
    raw = json.loads((tmp_path / "peer.json").read_text())
    assert raw["trl"] is None and len(raw["results"]["2"]["seconds"]["abc.rollout"]) == 1
    rows = [line for line in out.splitlines() if line.startswith("| 2 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["abc", "sparse"], out
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        rollout, update, total, floor = (float(c) for c in cells[:4])
        assert rollout > 0 and update > 0 and floor > 0 and total >= max(rollout, update) - 0.01, row
        assert cells[-1].endswith("x") and float(cells[-1][:-1]) > 0, row
    assert "Settings that could not be made equal" in out
    assert "TRL / TokenPPO" not in out  # no peer column without TRL


def test_the_variant_row_runs_its_switches_and_is_labelled() -> None:
    assert peer_trl.variant_options("cuda") == {"compile_decode": True}
    assert peer_trl.variant_options("cpu") == {"fused_activation": False}  # TRL's activation code; see its doc
    timers = peer_trl.our_timers(2, 4, "cpu", variant={"fused_activation": False})
    assert set(timers) == {"abc", "sparse", "floor", "abc_variant"}
    r = peer_trl.measure(2, 4, "cpu", repeats=1, with_trl=False, threads=1, variant={"fused_activation": False})
    assert r["variant"] == "fused_activation=False"
    _medians_ok(r["medians"], ["abc_variant", "abc_variant.rollout", "abc_variant.update"])
    rows = [line for line in peer_trl.tables({2: r}, 4, with_trl=False).splitlines() if line.startswith("| 2 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["abc", "sparse", "abc, fused_activation=False"]


def test_the_rows_run_the_activation_they_are_labelled_with() -> None:
    """The default rows fuse GPT-2's GELU (TokenPPO's default); the CPU variant runs transformers' formula."""
    gelus = lambda m: {type(x).__name__ for x in m.policy.lm.modules() if "GELU" in type(x).__name__}  # noqa: E731
    assert gelus(peer_trl.token_ppo("abc", 2, 4, "cpu")) <= {"GELUTanh", "PytorchGELUTanh"}
    assert gelus(peer_trl.token_ppo("abc", 2, 4, "cpu", options=peer_trl.variant_options("cpu"))) == {"NewGELUActivation"}


def test_gold_diagnostics_are_off_unless_asked() -> None:
    """TRL computes no gold score, so the peer's TokenPPO env has none; --gold keeps the registered env's."""
    off = peer_trl.token_ppo("abc", 2, 4, "cpu")
    on = peer_trl.token_ppo("abc", 2, 4, "cpu", gold=True)
    assert off.env.episodes.gold_scorer is None and on.env.episodes.gold_scorer is not None
    assert "gold_scorer=None" in peer_trl.gold_note(False) and "--gold" in peer_trl.gold_note(True)
    on.collect_rollout()
    off.collect_rollout()
    assert on._rollout_stats["gold_score"] is not None and off._rollout_stats["gold_score"] is None


def test_measure_keeps_every_part_once_per_repeat() -> None:
    r = peer_trl.measure(2, 4, "cpu", repeats=1, with_trl=False, threads=1)
    parts = ["abc", "abc.rollout", "abc.update", "sparse", "sparse.rollout", "sparse.update", "floor"]
    _medians_ok(r["medians"], parts)
    assert r["repeats"] == dict.fromkeys(parts, 1)  # the warm-up round is not kept


def test_one_output_reward_model_scores_as_the_env() -> None:
    """TRL's 1-output RM copy gives the env's R = logit_pos - logit_neg on the same sequences."""
    import torch
    from transformers import AutoTokenizer

    from abc_gym.reward_model import RewardModel
    from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH, load_prompts

    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    rm1, rm2 = peer_trl.one_output_reward_model(str(REWARD_MODEL_PATH))
    assert rm1.config.num_labels == 1 and peer_trl.check_equal_reward(rm1, rm2, tok) < 1e-4
    env_rm = RewardModel.from_pretrained(REWARD_MODEL_PATH, tok, device="cpu")
    batch = tok(load_prompts()[:6], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        ours = rm1(**batch).logits[:, 0]
    env = env_rm.score(batch["input_ids"], batch["attention_mask"], with_attention=False).score
    torch.testing.assert_close(ours, env.to(ours.dtype), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fake", ["missing", "no_ppo"])
def test_without_trl_ppo_the_script_fails_in_one_line_naming_the_install(
    fake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
        monkeypatch.delitem(sys.modules, name)  # a real trl imported by another test must not answer for the fake
    if fake == "missing":
        monkeypatch.setitem(sys.modules, "trl", None)  # import trl -> ImportError
    else:
        monkeypatch.setitem(sys.modules, "trl", types.SimpleNamespace(__version__="1.13.0"))  # not a package
    with pytest.raises(SystemExit) as err:
        peer_trl.main(TINY)
    msg = str(err.value.code)
    assert msg.startswith("peer_trl: ") and "\n" not in msg and 'trl>=1.12,<1.13' in msg, msg
    if fake == "no_ppo":
        assert "TRL 1.13.0 has no trl.experimental.ppo.PPOTrainer" in msg


def test_a_dependency_of_trl_that_fails_to_import_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """TRL 1.12 installed but its PPO module fails on a dependency (pyarrow built for NumPy 2 on NumPy 1.26)."""
    ppo = tmp_path / "trl" / "experimental" / "ppo"
    ppo.mkdir(parents=True)
    (tmp_path / "trl" / "__init__.py").write_text('__version__ = "1.12.0"\n')
    (tmp_path / "trl" / "experimental" / "__init__.py").write_text("")
    (ppo / "__init__.py").write_text('raise ImportError("pyarrow requires NumPy 2.0 or newer, found 1.26.4")\n')
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(peer_trl.TrlMissing, match=r"TRL 1\.12\.0's PPO does not import here \(pyarrow requires NumPy 2\.0"):
        peer_trl.load_trl()
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
        del sys.modules[name]  # the fake package must not outlive the test (monkeypatch puts any real one back)


def test_trl_half_at_tiny_sizes() -> None:
    try:
        version, _, _ = peer_trl.load_trl()
    except peer_trl.TrlMissing as err:
        pytest.skip(f"TRL with PPO is not installed here (the main CI leg has none; run in its own venv): {err}")
    r = peer_trl.measure(2, 4, "cpu", repeats=1, with_trl=True, threads=1)
    _medians_ok(r["medians"], ["trl", "trl.generate", "trl.gc", "abc", "sparse", "floor"])
    assert r["medians"]["trl.generate"] + r["medians"]["trl.gc"] < r["medians"]["trl"]  # parts of TRL's update
    assert r["repeats"]["trl"] == 1 and r["trl_threads"] == [1], (version, r)
    table = peer_trl.tables({2: r}, 4, with_trl=True)
    assert "| 2 |" in table.splitlines()[2] and table.count("x |") >= 2 and "paired by repeat" in table
    assert "variant" not in table
    r["medians"].update({"abc_variant": 1.0, "abc_variant.rollout": 0.4, "abc_variant.update": 0.6})
    r["seconds"]["abc_variant"], r["variant"] = [1.0], "fused_activation=False"
    table = peer_trl.tables({2: r}, 4, with_trl=True)
    assert "TokenPPO abc with fused_activation=False (variant_options)" in table
    assert "activation: TokenPPO runs GPT-2's tanh GELU on torch's fused kernel" in table
    opt = [line for line in table.splitlines() if line.startswith("| 2 |") and "| 1.00 |" in line]
    assert len(opt) == 2 and "abc, fused_activation=False" in opt[1], opt  # the peer row and the rollout / floor row


def test_trl_alone_runs_before_any_tokenppo_object_and_is_tabled() -> None:
    try:
        peer_trl.load_trl()
    except peer_trl.TrlMissing as err:
        pytest.skip(f"TRL with PPO is not installed here (the main CI leg has none; run in its own venv): {err}")
    built = []
    real = peer_trl.token_ppo
    peer_trl.token_ppo = lambda *a, **k: built.append(a) or real(*a, **k)
    try:
        alone = peer_trl.trl_alone(2, 4, "cpu", repeats=1, threads=1)
    finally:
        peer_trl.token_ppo = real
    assert built == [], "TRL alone must not build a TokenPPO model"
    _medians_ok(alone["medians"], ["trl", "trl.gc"])
    assert not any(k.startswith(("abc", "sparse", "floor")) for k in alone["medians"]) and alone["python_objects"] > 0
    r = {"medians": {"trl": 2.0, "abc": 1.0, "sparse": 0.8, "abc.rollout": 0.5, "abc.update": 0.5, "sparse.rollout": 0.4,
                     "sparse.update": 0.4, "floor": 0.5, "trl.generate": 0.5, "trl.gc": 0.3},
         "seconds": {"trl": [2.0], "abc": [1.0], "sparse": [0.8]}, "python_objects": 10, "trl_alone": alone}
    table = peer_trl.tables({2: r}, 4, with_trl=True)
    row = [line for line in table.splitlines() if line.startswith("| 2 |") and f"{alone['python_objects']:,}" in line]
    assert len(row) == 1 and row[0].endswith(f"| {alone['medians']['trl'] / 0.8:.2f}x |"), table
