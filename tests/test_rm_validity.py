"""benchmarks.rm_validity: runs, scores exactly as the env does, counts polar accuracy right."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

from benchmarks import rm_validity as rv


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return rv.load_models()


def test_polar_accuracy_by_hand() -> None:
    scores = [1.0, -2.0, 0.5, -0.1, 3.0, 0.0, -4.0]
    compounds = [0.6, -0.3, -0.5, 0.01, 0.05, 0.2, -0.05]
    # polar: 0.6 hit, -0.3 hit, -0.5 miss (R > 0), 0.01 neutral (skipped), 0.05 hit (threshold is positive),
    # 0.2 miss (R == 0 is not positive), -0.05 hit (threshold is negative): 4 of 6
    assert rv.polar_accuracy(scores, compounds) == (4 / 6, 6)
    # the build's function on the same texts (targets 1 / 0 / 0.5 from vader_label's thresholds)
    from abc_gym.tasks.sentiment.build import polar_accuracy

    targets = [1.0 if c >= 0.05 else 0.0 if c <= -0.05 else 0.5 for c in compounds]
    assert polar_accuracy(scores, targets) == (4 / 6, 6)
    acc, n = rv.polar_accuracy([1.0], [0.0])
    assert n == 0 and acc != acc  # no polar text: NaN


def test_intervals() -> None:
    lo, hi = rv.wilson_interval(90, 100)
    assert lo < 0.9 < hi and 0.8 < lo and hi < 0.96
    rho, (lo, hi) = rv.spearman_with_ci([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])
    assert lo < rho < hi


def test_r_and_gold_equal_the_envs(models) -> None:
    tok, _, rm = models
    env = gym.make("abc_gym/Sentiment-v0", device="cpu")
    obs, info = env.reset(seed=3)
    prompt = obs["input_ids"][: int(info["prompt_length"])].tolist()
    words = tok(" the acting was wonderful but the plot was boring and the ending was great .",
                add_special_tokens=False)["input_ids"]
    actions = []
    while True:
        actions.append(words[len(actions) % len(words)])
        _, _, term, trunc, info = env.step(actions[-1])
        if term or trunc:
            break
    seq = prompt + actions
    r = rv.score_sequences(rm, [seq, prompt + words[:9]])[0]  # padded batch, as in the script
    assert r == pytest.approx(float(info["score"]), abs=1e-5)
    from abc_gym.tasks.sentiment.build import rm_scores

    assert r == pytest.approx(rm_scores(rm.model, [seq], tok.pad_token_id)[0], abs=1e-5)
    from abc_gym.tasks.sentiment.gold import gold_score

    assert gold_score(rv.gold_texts(tok, [seq])[0]) == float(info["gold_score"])


def test_runs_small(tmp_path, capsys) -> None:
    out = tmp_path / "rmv.json"
    result = rv.main(["--n", "8", "--lengths", "8-10", "--no-reference", "--n-heldout", "40", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| 8-10 | policy | 8 |" in printed and "| 8-10 | corpus | 8 |" in printed
    saved = json.loads(out.read_text())
    assert saved["verdicts"].keys() == {"8-10"} and len(saved["rows"]) == 2
    for row in result["rows"]:
        assert 8 <= row["mean_new_tokens"] <= 10 and row["n"] == 8


def test_refuses_a_range_that_does_not_fit() -> None:
    with pytest.raises(SystemExit, match="do not fit"):
        rv.check_fits([(8, 15), (200, 250)], 256, 256)
    rv.check_fits([(90, 109)], 256, 256)
