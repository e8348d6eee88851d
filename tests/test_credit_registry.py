"""Credit schemes as registry entries: a scheme defined here, outside the package, runs end to end.

The scheme (``first-token``: all of R on the first completion token) goes through
``gym.make``, ``gym.make_vec``, the SB3 VecEnv, one ``agents`` update and the benchmark's
run plan; a scheme that breaks the conservation contract is refused by the engine; the
docs' example (docs/extending.md) is executed as written. Each test registers its
schemes in a fixture and removes them after, so other test files see the built-in
registry only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import abc_gym
from abc_gym.credit import (
    CONTRACT_TOL,
    abc_credit,
    credit_registry,
    credit_scheme,
    redistribute,
    register_credit,
    reward_modes,
    token_rewards,
    unregister_credit,
)
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import POLICY_PATH
from tests.conftest import tiny_bert

REPO = Path(__file__).resolve().parents[1]
ENV = "abc_gym/Sentiment-v0"
# fixed-length episodes of 3 tokens, so every row of a batch ends on the same step
FIXED = {"min_new_tokens": 3, "max_new_tokens": 3, "eos_ends_episode": False, "device": "cpu"}


def first_token_credit(score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """All of R on the first completion token.

    score ``(B,)``, completion_mask ``(B, L)`` bool -> ``(B, L)`` float64.
    """
    mask = completion_mask.bool()
    out = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    out[torch.arange(mask.shape[0], device=mask.device), mask.long().argmax(-1)] = score.double()
    return out


def double_credit(score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Breaks the contract: 2R on the last token."""
    mask = completion_mask.bool()
    last = mask.long().cumsum(-1).argmax(-1)
    out = torch.zeros(mask.shape, dtype=torch.float64)
    out[torch.arange(mask.shape[0]), last] = 2 * score.double()
    return out


def prompt_credit(score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Breaks the contract: R / L on every position, prompt and padding included."""
    return score.double().unsqueeze(-1).expand(completion_mask.shape) / completion_mask.shape[1]


@pytest.fixture
def first_token():
    scheme = register_credit("first-token", first_token_credit)
    yield scheme
    unregister_credit("first-token")


def completion_credit(info: dict) -> np.ndarray:
    """``(T,)`` the episode's token rewards (final infos may pad per-token arrays to max_new_tokens)."""
    values = np.asarray(info["token_rewards"], dtype=np.float64)
    return values[: int(info["num_tokens"])] if "num_tokens" in info else values


def expected_first_token(score: float, length: int) -> np.ndarray:
    out = np.zeros(length)
    out[0] = score
    return out


# ------------------------------------------------------------------ the registry itself
def test_builtins_are_registry_entries_with_their_needs():
    assert reward_modes()[:5] == ("sparse", "abc", "uniform", "oracle", "red")
    assert abc_gym.REWARD_MODES == reward_modes()
    abc, red, oracle = credit_registry["abc"], credit_registry["red"], credit_registry["oracle"]
    assert abc.fn is abc_credit and abc.needs_attention and abc.uses_beta and not abc.needs_prefix_scores
    assert red.needs_prefix_scores and red.uses_beta and not red.needs_attention
    assert oracle.needs_gold_credit and not oracle.uses_beta
    assert not any(credit_registry[m].uses_beta for m in ("sparse", "uniform", "oracle"))


def test_register_lookup_and_remove(first_token):
    assert credit_scheme("first-token") is first_token and first_token.fn is first_token_credit
    assert "first-token" in reward_modes() and "first-token" in abc_gym.REWARD_MODES
    assert first_token.doc == "All of R on the first completion token."  # first docstring line
    mask = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    np.testing.assert_array_equal(token_rewards("first-token", torch.tensor([3.0]), mask)[0].numpy(), [0, 3, 0, 0])
    unregister_credit("first-token")
    assert "first-token" not in reward_modes()
    with pytest.raises(ValueError, match="unknown reward_mode 'first-token'.*register_credit"):
        credit_scheme("first-token")
    register_credit("first-token", first_token_credit)  # for the fixture's teardown


def test_a_taken_name_needs_override(first_token):
    with pytest.raises(ValueError, match="'first-token' is already registered: pass override=True"):
        register_credit("first-token", first_token_credit)
    with pytest.raises(ValueError, match="'sparse' is already registered: pass override=True"):
        register_credit("sparse", first_token_credit)
    replaced = register_credit("first-token", double_credit, override=True)
    assert credit_scheme("first-token") is replaced
    with pytest.raises(ValueError, match="built-in credit scheme"):
        unregister_credit("sparse")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"name": "a:b"}, ValueError, "without ':'"),
        ({"name": ""}, ValueError, "non-empty"),
        ({"fn": "not a function"}, TypeError, "fn must be a function"),
        ({"uses_beta": 1}, TypeError, "uses_beta must be True or False"),
        ({"accepts": 3}, TypeError, "accepts must be None or a function"),
        # declares attention, but the function cannot take it: refused at registration, not mid-training
        ({"needs_attention": True}, TypeError, "must accept the keywords score, completion_mask, attention"),
    ],
)
def test_bad_registrations_name_the_fix(kwargs, error, message):
    args = {"name": "bad", "fn": first_token_credit, **kwargs}
    with pytest.raises(error, match=message):
        register_credit(**args)
    assert "bad" not in credit_registry


# ------------------------------------------------------------------ the contract, for every scheme
@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (double_credit, r"row 0 sums to 4, not R = 2"),
        (prompt_credit, "non-zero credit outside the completion"),
        (lambda score, completion_mask: torch.zeros(3), r"returned shape \(3,\), expected \(B, L\) = \(1, 4\)"),
        (lambda score, completion_mask: [[0.0] * 4], "it must return a real \\(B, L\\) torch tensor"),
        (lambda score, completion_mask: torch.where(completion_mask, float("nan"), 0.0), "NaN or inf"),
    ],
)
def test_contract_breaking_scheme_is_refused_naming_it(fn, message):
    register_credit("broken", fn)
    try:
        with pytest.raises(ValueError, match=rf"credit scheme 'broken' broke the credit contract: {message}"):
            token_rewards("broken", torch.tensor([2.0]), torch.tensor([[0, 1, 1, 0]], dtype=torch.bool))
    finally:
        unregister_credit("broken")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(1e-3, 10.0), min_size=1, max_size=8),
    st.integers(0, 3),
    st.floats(-50, 50),
    st.floats(10 * CONTRACT_TOL, 1.0),
)
def test_the_contract_check_accepts_exact_credit_and_refuses_a_shifted_one(weights, prompt, score, shift):
    """Any non-negative weights through ``redistribute`` pass; moving ``shift`` (> tolerance) of R's sum fails."""
    length = prompt + len(weights)
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[0, prompt:] = True
    w = torch.zeros(1, length, dtype=torch.float64)
    w[0, prompt:] = torch.tensor(weights, dtype=torch.float64)
    r = torch.tensor([score], dtype=torch.float64)
    register_credit("weights", lambda score, completion_mask: redistribute(score, w, completion_mask), override=True)
    register_credit("shifted", lambda score, completion_mask: redistribute(score, w, completion_mask)
                    + shift * (1 + abs(score)) * completion_mask, override=True)
    try:
        np.testing.assert_allclose(token_rewards("weights", r, mask).sum(-1).numpy(), [score], rtol=1e-12, atol=1e-9)
        with pytest.raises(ValueError, match="broke the credit contract"):
            token_rewards("shifted", r, mask)
    finally:
        unregister_credit("weights")
        unregister_credit("shifted")


# ------------------------------------------------------------------ bugs of issue 17 item 6 (fail on the old code)
def test_oracle_without_gold_weights_names_gold_credit_not_gold_scorer():
    mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="gold per-token credit") as err:
        token_rewards("oracle", torch.ones(1), mask)
    assert "gold_credit=" in str(err.value) and "gold_scorer" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_encoder_rm(policy_tokenizer):
    bert = tiny_bert(len(policy_tokenizer), policy_tokenizer.pad_token_id)
    return RewardModel(bert, policy_tokenizer, policy_tokenizer, device="cpu")


def test_oracle_on_an_env_without_gold_lists_every_alternative(tiny_encoder_rm):
    """The engine's refusal lists every mode that needs no gold credit, ``red`` included."""
    env = gym.make("abc_gym/TokenGeneration-v0", policy=str(POLICY_PATH), reward_model=tiny_encoder_rm,
                   prompts=["a b"], reward_mode="sparse", device="cpu")
    with pytest.raises(ValueError, match="reward_mode='oracle' needs .*gold_credit=") as err:
        env.unwrapped.reward_mode = "oracle"
    alternatives = str(err.value).split("use one of ")[1].split(", or")[0].split(", ")
    assert alternatives == [m for m in reward_modes() if m != "oracle"] and "red" in alternatives
    with pytest.raises(ValueError, match="gold_credit="):  # at make time too, before any model is loaded
        gym.make("abc_gym/TokenGeneration-v0", policy=str(POLICY_PATH), reward_model="/not/loaded",
                 prompts=["a b"], reward_mode="oracle", device="cpu")


# ------------------------------------------------------------------ needs and accepts drive the engine
def test_a_user_scheme_needing_gold_credit_is_refused_naming_gold_credit():
    register_credit("gold-only", lambda score, completion_mask, gold_weights: redistribute(score, gold_weights, completion_mask),
                    needs_gold_credit=True)
    try:
        with pytest.raises(ValueError, match="reward_mode='gold-only' needs the task's gold per-token credit.*gold_credit="):
            gym.make("abc_gym/TokenGeneration-v0", policy=str(POLICY_PATH), reward_model="/not/loaded",
                     prompts=["a b"], reward_mode="gold-only", device="cpu")
    finally:
        unregister_credit("gold-only")


def test_accepts_and_prefix_needs_refuse_reward_models(tiny_encoder_rm):
    register_credit("no-encoders", first_token_credit,
                    accepts=lambda rm: "it pools [CLS]" if rm.pooling != "last" else None)
    register_credit("my-red", lambda score, completion_mask, prefix_scores: redistribute(
        score, prefix_scores.abs() + 1e-3, completion_mask), needs_prefix_scores=True)
    make = dict(policy=str(POLICY_PATH), reward_model=tiny_encoder_rm, prompts=["a b"], device="cpu")
    try:
        with pytest.raises(ValueError, match="reward_mode='no-encoders' cannot use this reward model: it pools"):
            gym.make("abc_gym/TokenGeneration-v0", reward_mode="no-encoders", **make)
        with pytest.raises(ValueError, match="reward_mode='my-red' needs the reward model's score of every completion prefix"):
            gym.make("abc_gym/TokenGeneration-v0", reward_mode="my-red", **make)
    finally:
        unregister_credit("no-encoders")
        unregister_credit("my-red")


def test_the_engine_computes_what_a_user_scheme_declares():
    """A scheme needing attention gets the reward model's attention without record_attention."""
    seen = {}

    def attention_only(score, completion_mask, attention):
        seen["attention"] = attention.shape
        return abc_credit(score, attention, completion_mask, beta=1.0)

    register_credit("attention-only", attention_only, needs_attention=True)
    try:
        env = gym.make(ENV, reward_mode="attention-only", record_attention=False, **FIXED)
        env.reset(seed=1)
        for a in (300, 41, 42):
            _, reward, done, _, info = env.step(a)
        assert done and seen["attention"][0] == 1
        attention = np.asarray(info["attention"])[: len(completion_credit(info))]
        np.testing.assert_allclose(completion_credit(info), info["score"] * attention, atol=1e-9)
    finally:
        unregister_credit("attention-only")


# ------------------------------------------------------------------ end to end: every front end
def test_user_scheme_through_gym_make(first_token):
    env = gym.make(ENV, reward_mode="first-token", **FIXED)
    assert env.unwrapped.reward_mode == "first-token"
    env.reset(seed=0)
    rewards = []
    for a in (300, 41, 42):
        _, reward, done, _, info = env.step(a)
        rewards.append(reward)
    assert done and rewards[:2] == [0.0, 0.0], "non-final steps pay 0"
    assert info["reward_mode"] == "first-token" and rewards[2] == pytest.approx(info["score"])
    np.testing.assert_array_equal(completion_credit(info), expected_first_token(info["score"], 3))
    env.unwrapped.reward_mode = "sparse"  # and back, between episodes
    env.unwrapped.reward_mode = "first-token"


def test_user_scheme_through_make_vec(first_token):
    venv = gym.make_vec(ENV, num_envs=2, vectorization_mode="vector_entry_point", reward_mode="first-token", **FIXED)
    venv.reset(seed=0)
    for _ in range(3):
        _, rewards, terminated, _, info = venv.step(np.array([300, 41]))
    assert terminated.all()
    final = info["final_info"]
    for row in range(2):
        one = {k: v[row] for k, v in final.items() if not k.startswith("_")}
        assert rewards[row] == pytest.approx(one["score"])
        np.testing.assert_array_equal(completion_credit(one), expected_first_token(one["score"], 3))
    venv.close()


def test_user_scheme_through_the_sb3_vec_env(first_token):
    pytest.importorskip("stable_baselines3")
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    venv = TokenGenerationSB3VecEnv.from_env_id(ENV, num_envs=2, reward_mode="first-token", **FIXED)
    venv.seed(0)
    venv.reset()
    for _ in range(3):
        _, rewards, dones, infos = venv.step(np.array([300, 41]))
    assert dones.all()
    for row in range(2):
        assert rewards[row] == pytest.approx(infos[row]["score"])
        np.testing.assert_array_equal(completion_credit(infos[row]), expected_first_token(infos[row]["score"], 3))
    venv.close()


def test_user_scheme_through_one_agents_update(first_token):
    pytest.importorskip("stable_baselines3")
    from agents.training import TrainConfig, train

    cfg = TrainConfig(reward_mode="first-token", n_updates=1, episodes_per_update=2, minibatch_episodes=2, n_epochs=1,
                      log_dir=None, progress=False, quiet=True, device="cpu")
    history = train(cfg)
    assert len(history) == 1 and np.isfinite(history[0]["rm_score"])
    with pytest.raises(ValueError, match="unknown reward_mode 'second-token'.*first-token"):
        TrainConfig(reward_mode="second-token").validate()


def test_user_scheme_in_the_benchmark_plan():
    """``--modes`` takes registered schemes (choices read the registry when parsed); beta labels follow uses_beta."""
    from benchmarks import dense_vs_sparse as bench

    register_credit("first-token", first_token_credit)
    register_credit("ramp-beta", lambda score, completion_mask, beta: first_token_credit(score, completion_mask),
                    uses_beta=True)
    try:
        args = bench.parse_args(["--modes", "sparse", "first-token", "ramp-beta", "--smoke"])
        specs = bench.build_specs(args)
        assert {s.condition for s in specs} == {"sparse", "first-token", f"ramp-beta (beta {args.beta:g})"}
    finally:
        unregister_credit("first-token")
        unregister_credit("ramp-beta")
    with pytest.raises(SystemExit):  # unregistered: argparse's invalid choice
        bench.parse_args(["--modes", "sparse", "first-token", "--smoke"])


def test_user_scheme_through_a_benchmark_run(first_token, tmp_path, monkeypatch):
    """``python -m benchmarks.dense_vs_sparse --modes sparse first-token`` in-process, with a stand-in learner
    that validates the real TrainConfig (the real learner is run by the agents test above)."""
    pytest.importorskip("stable_baselines3")
    import types

    from agents.training import TrainConfig
    from benchmarks import dense_vs_sparse as bench

    seen = []

    def train(cfg):
        cfg.validate()
        seen.append(cfg.reward_mode)
        return [dict(update=u, rm_score=u + cfg.seed, gold_score=0.1 * u, kl=0.2 * u, value_loss=1.0)
                for u in range(1, cfg.n_updates + 1)]

    stub = types.ModuleType("agents.training")
    stub.TrainConfig, stub.train = TrainConfig, train
    monkeypatch.setitem(sys.modules, "agents.training", stub)
    out = tmp_path / "run"
    assert bench.main(["--seeds", "1", "--n-updates", "2", "--modes", "sparse", "first-token", "--jobs", "1",
                       "--out", str(out)]) == 0
    assert seen == ["sparse", "first-token"]
    assert "| first-token |" in (out / "tables.md").read_text()


# ------------------------------------------------------------------ other processes: "module:name"
PLUGIN = '''
import torch
import abc_gym

def last_two(score, completion_mask):
    """Half of R on each of the last two completion tokens (all of it when T = 1)."""
    mask = completion_mask.bool()
    rank = mask.long().flip(-1).cumsum(-1).flip(-1) * mask  # T, ..., 2, 1 on the completion
    w = ((rank == 1) | (rank == 2)).double()
    return abc_gym.credit.redistribute(score, w, mask)

abc_gym.register_credit("last-two", last_two)
'''


def test_module_colon_name_imports_the_module_that_registers_the_scheme(tmp_path, monkeypatch):
    (tmp_path / "my_credit_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        scheme = credit_scheme("my_credit_plugin:last-two")
        assert scheme.name == "last-two"
        env = gym.make(ENV, reward_mode="my_credit_plugin:last-two", **FIXED)
        assert env.unwrapped.reward_mode == "last-two"
        r = token_rewards("last-two", torch.tensor([2.0]), torch.tensor([[0, 1, 1, 1]], dtype=torch.bool))
        np.testing.assert_array_equal(r[0].numpy(), [0, 0, 1, 1])
    finally:
        sys.modules.pop("my_credit_plugin", None)
        if "last-two" in credit_registry:
            unregister_credit("last-two")
    with pytest.raises(ValueError, match="cannot import 'no_such_plugin'"):
        credit_scheme("no_such_plugin:x")


def test_a_fresh_process_finds_a_user_scheme_by_module_colon_name(tmp_path):
    """What a spawned worker (benchmark --jobs N, AsyncVectorEnv(context='spawn')) does: only the name travels."""
    (tmp_path / "my_credit_plugin.py").write_text(PLUGIN)
    script = textwrap.dedent(
        """
        from agents.config import TrainConfig
        TrainConfig(reward_mode="my_credit_plugin:last-two").validate()
        import abc_gym
        print(abc_gym.reward_modes())
        """
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'last-two'" in done.stdout


# ------------------------------------------------------------------ the docs' example, as written
def test_docs_extending_example_runs_as_written():
    text = (REPO / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/extending.md should hold one runnable python block"
    try:
        exec(compile(blocks[0], "docs/extending.md", "exec"), {"__name__": "docs_extending"})
        assert "ramp" in reward_modes() and credit_scheme("ramp").uses_beta
    finally:
        if "ramp" in credit_registry:
            unregister_credit("ramp")
