"""The envs from the clients researchers already use (issue 20): SB3 helpers and stock PPO with the
credit callback, the credit write-back for CleanRL-style loops, the CleanRL-style example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from abc_gym.infos import episode_token_rewards
from abc_gym.writeback import CreditWriteback, write_back_credit

ENV = "abc_gym/Sentiment-v0"
SHORT = {"device": "cpu", "min_new_tokens": 2, "max_new_tokens": 7}
REPO = Path(__file__).resolve().parents[1]


def _run(env, steps: int, seed: int):
    """Random actions for ``steps`` steps: rewards, ends ``(steps, N)`` and the per-step infos."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n = env.num_envs
    rewards, ends, infos = np.zeros((steps, n)), np.zeros((steps, n), dtype=bool), []
    for t in range(steps):
        _, r, term, trunc, info = env.step(rng.integers(0, env.single_action_space.n, size=n))
        rewards[t], ends[t] = r, term | trunc
        infos.append(info)
    return rewards, ends, infos


def _episodes(ends: np.ndarray, infos: list, next_step: bool) -> list[tuple[int, list[int], np.ndarray]]:
    """Independent bookkeeping: (env, global steps of its tokens, credit) of each finished episode."""
    out, open_steps, skip = [], [[] for _ in range(ends.shape[1])], np.zeros(ends.shape[1], dtype=bool)
    for t in range(len(ends)):
        final = infos[t] if next_step else infos[t].get("final_info", {})
        for i in range(ends.shape[1]):
            if skip[i]:
                skip[i] = False
                continue
            open_steps[i].append(t)
            if ends[t, i]:
                credit = final["token_rewards"][i][: final["num_tokens"][i]]
                assert len(credit) == len(open_steps[i])
                out.append((i, open_steps[i], credit))
                open_steps[i], skip[i] = [], next_step
    return out


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
@pytest.mark.parametrize("spanning", ["fold", "drop"])
def test_writeback_over_rollouts_matches_each_episodes_credit(mode, spanning):
    """One run cut into rollouts of 5 steps (most episodes span two), numpy and torch alternating."""
    env = gym.make_vec(ENV, 3, vectorization_mode=mode, **SHORT)
    next_step = env.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    rewards, ends, infos = _run(env, 60, seed=1)
    env.close()
    writeback = CreditWriteback(3, env.autoreset_mode, spanning=spanning)
    dense = np.concatenate(
        [
            np.asarray(writeback(torch.as_tensor(rewards[s : s + 5]) if s % 10 else rewards[s : s + 5], ends[s : s + 5], infos[s : s + 5]))
            for s in range(0, 60, 5)
        ]
    )
    episodes = _episodes(ends, infos, next_step)
    spanning_seen = 0
    for i, steps, credit in episodes:
        first = [k for k, t in enumerate(steps) if t // 5 == steps[-1] // 5][0]  # first token in the last rollout
        np.testing.assert_allclose(dense[steps[first + 1 :], i], credit[first + 1 :], atol=1e-6)
        head = credit[:first].sum() if spanning == "fold" else 0.0
        assert dense[steps[first], i] == pytest.approx(credit[first] + head, abs=1e-6)
        if spanning == "fold":
            assert dense[steps[first:], i].sum() == pytest.approx(rewards[steps[-1], i], abs=1e-6), "R kept"
        spanning_seen += first > 0
    assert spanning_seen >= 5 and writeback.stats["spanning_episodes"] == spanning_seen
    assert writeback.stats["episodes"] == len(episodes) >= 20
    if next_step:  # reset steps keep their reward (0.0)
        resets = np.zeros_like(ends)
        resets[1:] = ends[:-1]
        assert not dense[resets].any()


def test_writeback_refuses_the_wrong_autoreset_mode():
    env = gym.make_vec(ENV, 2, vectorization_mode="sync", **SHORT)  # NEXT_STEP
    rewards, ends, infos = _run(env, 40, seed=2)
    env.close()
    with pytest.raises(ValueError, match="is autoreset_mode right"):
        write_back_credit(rewards, ends, infos, autoreset_mode="SameStep")
    with pytest.raises(ValueError, match=r"shape \(T, 2\)"):
        CreditWriteback(2)(rewards[:, :1], ends, infos)


# ------------------------------------------------------------------ SB3
def test_sb3_make_vec_env_and_check_env():
    """SB3's make_vec_env passes render_mode='rgb_array' and retries only on TypeError."""
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ENV, n_envs=2, seed=0, env_kwargs=SHORT)
    venv.reset()
    for _ in range(12):
        _, _, dones, infos = venv.step(np.random.default_rng(0).integers(0, venv.action_space.n, size=2))
    check_env(gym.make(ENV, **SHORT).unwrapped, warn=False)
    venv.close()


class _Spy:
    """Records, at each rollout's end (after the credit callback), what the buffer holds."""

    def __init__(self):
        from stable_baselines3.common.callbacks import BaseCallback

        spy = self
        self.rollouts: list[dict] = []

        class Callback(BaseCallback):
            def _on_rollout_start(self):
                self.steps = []

            def _on_step(self):
                self.steps.append((np.asarray(self.locals["dones"]).copy(), self.locals["infos"]))
                return True

            def _on_rollout_end(self):
                buf = self.model.rollout_buffer
                spy.rollouts.append(
                    {"steps": self.steps, "rewards": buf.rewards.copy(), "returns": buf.returns.copy(), "values": buf.values.copy(), "advantages": buf.advantages.copy()}
                )

        self.callback = Callback()


@pytest.mark.parametrize("algo", ["PPO", "A2C"])
def test_stock_sb3_learns_from_the_written_back_credit(algo):
    """Stock stable_baselines3 PPO / A2C + DenseCreditCallback: the buffer's rewards are each episode's
    token_rewards and the returns are recomputed from them (gamma = lambda = 1: return = credit to go)."""
    import stable_baselines3
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.env_util import make_vec_env

    from agents.sb3_credit import DenseCreditCallback

    venv = make_vec_env(ENV, n_envs=2, seed=0, env_kwargs=SHORT)
    kwargs = {"n_steps": 16, "gamma": 1.0, "gae_lambda": 1.0, "seed": 0, "device": "cpu"}
    if algo == "PPO":
        kwargs.update(batch_size=16, n_epochs=1)
    model = getattr(stable_baselines3, algo)("MultiInputPolicy", venv, **kwargs)
    credit_cb, spy = DenseCreditCallback(), _Spy()
    model.learn(96, callback=CallbackList([credit_cb, spy.callback]))  # 3 rollouts of 2 x 16 steps
    assert len(spy.rollouts) == 3
    checked = 0
    for rollout in spy.rollouts:
        open_rows: list[list[int]] = [[], []]
        for k, (dones, infos) in enumerate(rollout["steps"]):
            for i in range(2):
                open_rows[i].append(k)
                if dones[i]:
                    credit = episode_token_rewards(infos[i])
                    rows = open_rows[i]
                    open_rows[i] = []
                    if len(rows) != len(credit):  # begun in the previous rollout: checked in test_writeback_*
                        continue
                    np.testing.assert_allclose(rollout["rewards"][rows, i], credit.astype(np.float32), atol=1e-6)
                    to_go = np.cumsum(credit[::-1])[::-1]
                    np.testing.assert_allclose(rollout["returns"][rows, i], to_go, atol=1e-4)
                    checked += 1
        np.testing.assert_allclose(rollout["returns"], rollout["advantages"] + rollout["values"], atol=1e-5)
    assert checked >= 6
    assert credit_cb.writeback.stats["episodes"] >= checked and credit_cb.writeback.stats["spanning_episodes"] >= 1


def test_credit_callback_refuses_reward_normalisation():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.sb3_credit import DenseCreditCallback

    venv = VecNormalize(make_vec_env(ENV, n_envs=1, env_kwargs=SHORT), norm_obs=False, norm_reward=True)
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="norm_reward=False"):
        model.learn(8, callback=DenseCreditCallback())


# ------------------------------------------------------------------ CleanRL-style example
def test_cleanrl_style_example_runs_and_uses_the_credit():
    script = REPO / "examples" / "cleanrl_ppo_dense.py"
    done = subprocess.run(
        [sys.executable, str(script), "--num-updates", "2", "--num-envs", "4", "--num-steps", "12", "--update-epochs", "1",
         "--num-minibatches", "1", "--threads", "1", "--seed", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("update")]
    assert len(lines) == 2 and "dense_steps" in lines[0], done.stdout[-2000:]
    # the loop trained on dense rewards: more nonzero-reward steps than finished episodes (sparse: at most equal)
    dense_steps = sum(int(line.split("dense_steps=")[1].split()[0]) for line in lines)
    episodes = sum(int(line.split("episodes=")[1].split()[0]) for line in lines)
    assert dense_steps > episodes >= 4


# ------------------------------------------------------------------ TorchRL
# GymEnv("abc_gym:" + id, num_envs=N) and the collector write-back: tests/test_torchrl.py.
@pytest.mark.parametrize("client", ["GymEnv", "GymWrapper-make", "GymWrapper-make_vec"])
def test_torchrl_reads_the_credit_into_the_tensordict(client):
    """TorchRL's GymEnv passes frameskip= (retried on the standard TypeError) and needs autoreset_mode;
    CreditInfoReader declares the final-step keys so they stack over steps and envs."""
    pytest.importorskip("torchrl")
    from torchrl.envs import GymEnv, GymWrapper

    from abc_gym.torchrl_info import CreditInfoReader

    env = {
        "GymEnv": lambda: GymEnv(ENV, **SHORT),
        "GymWrapper-make": lambda: GymWrapper(gym.make(ENV, **SHORT)),
        "GymWrapper-make_vec": lambda: GymWrapper(gym.make_vec(ENV, 3, **SHORT)),
    }[client]()
    env.set_info_dict_reader(CreditInfoReader.for_env(env))
    env.set_seed(0)
    td = env.rollout(60, break_when_any_done=False)
    nxt = td["next"]
    done = nxt["done"].squeeze(-1)
    reward = nxt["reward"].squeeze(-1).double()
    credit = nxt["token_rewards"]
    assert credit.shape == (*td.shape, 7) and credit.dtype == torch.float64
    assert int(done.sum()) >= 3
    torch.testing.assert_close(credit[done].sum(-1), reward[done], rtol=1e-5, atol=1e-5)
    # failed on the batched env while its step infos were views of the engine's state, which TorchRL wrote into
    torch.testing.assert_close(nxt["score"][done], credit[done].sum(-1), rtol=1e-9, atol=1e-9)
    n = nxt["num_tokens"][done]
    assert ((n >= 1) & (n <= 7)).all() and not credit[~done].any() and not nxt["num_tokens"][~done].any()
    env.close()
