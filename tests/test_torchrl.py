"""TorchRL clients (issue 20): GymEnv(id, num_envs=N) under pytest, and the dense credit written back
over collector batches (abc_gym.torchrl_info.TensorDictCreditWriteback) and used by TorchRL's GAE.

Skipped without torchrl (pip install -e '.[torchrl]'); CI's newest leg installs it and runs this file.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

# torchrl is imported inside the tests, not at collection: `import torchrl` sets multiprocessing's start
# method to spawn for the whole process, which the rest of the suite should not inherit.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchrl") is None, reason="needs torchrl: pip install -e '.[torchrl]'")

ENV = "abc_gym/Sentiment-v0"
SHORT = {"device": "cpu", "min_new_tokens": 2, "max_new_tokens": 7, "reward_mode": "abc"}


def _client(name: str):
    from torchrl.envs import GymEnv, GymWrapper

    if name == "GymEnv":
        return GymEnv(ENV, **SHORT)
    return GymWrapper(gym.make_vec(ENV, 3, **SHORT))  # the batched env: one process, SAME_STEP


def _collect(env, batches: int, frames: int) -> tuple[list, Any]:
    """``batches`` collector batches of ``frames`` random steps, each written back by the collector's postproc."""
    from torchrl.collectors import Collector

    from abc_gym.torchrl_info import CreditInfoReader, TensorDictCreditWriteback

    env.set_info_dict_reader(CreditInfoReader.for_env(env))
    env.set_seed(0)
    torch.manual_seed(0)
    writeback = TensorDictCreditWriteback(env.batch_size)
    collector = Collector(env, None, frames_per_batch=frames, total_frames=frames * batches, postproc=writeback)
    out = [batch.clone() for batch in collector]
    collector.shutdown()
    return out, writeback


def _check_episodes(batches: list) -> tuple[int, int]:
    """Each finished episode's token steps (the ``num_tokens`` steps up to its end, in the concatenated
    batches) carry its token_rewards; steps between episodes (NEXT_STEP reset steps) keep 0. Episodes that
    began in an earlier batch: fold rule. Returns (episodes checked whole, spanning episodes)."""
    time = batches[0].shape[-1]
    td = torch.cat([b.reshape(-1, time) for b in batches], dim=-1)  # (N, batches * T)
    nxt = td["next"]
    reward = nxt["reward"].squeeze(-1).double()
    done = nxt["done"].squeeze(-1)
    whole = spanning = 0
    for env in range(td.shape[0]):
        previous_end = -1
        for end in done[env].nonzero().squeeze(-1).tolist():
            n = int(nxt["num_tokens"][env, end])
            credit = nxt["token_rewards"][env, end, :n]
            score = float(nxt["score"][env, end])
            start = end - n + 1
            assert start > previous_end, "an episode's tokens run into the previous episode"
            assert not reward[env, previous_end + 1 : start].any(), "a step without a token got credit"
            assert float(credit.sum()) == pytest.approx(score, abs=1e-5)
            first_batch = start // time
            if first_batch == end // time:
                torch.testing.assert_close(reward[env, start : end + 1], credit, atol=1e-6, rtol=0)
                whole += 1
            elif start >= 0 and end // time > first_batch:  # begun in an earlier batch: fold its head
                cut = (end // time) * time
                torch.testing.assert_close(reward[env, cut + 1 : end + 1], credit[cut - start + 1 :], atol=1e-6, rtol=0)
                assert float(reward[env, cut : end + 1].sum()) == pytest.approx(score, abs=1e-5), "fold keeps R"
                spanning += 1
            previous_end = end
    return whole, spanning


@pytest.mark.parametrize("client", ["GymEnv", "GymWrapper-make_vec"])
def test_collector_batches_carry_the_dense_credit(client):
    """Collector + postproc=TensorDictCreditWriteback: per finished episode the rewards over its steps are its
    token_rewards (sum R); then TorchRL's GAE (gamma = lambda = 1) computes credit-to-go value targets."""
    from tensordict.nn import TensorDictModule
    from torchrl.objectives.value import GAE

    env = _client(client)
    batches, writeback = _collect(env, batches=3, frames=24)
    env.close()
    whole, spanning = _check_episodes(batches)
    assert whole >= 4 and spanning >= 1 and writeback.stats["spanning_episodes"] == spanning
    last = batches[-1]
    nxt = last["next"]
    done = nxt["done"].squeeze(-1)
    reward = nxt["reward"].squeeze(-1)
    assert (reward[~done] != 0).sum() >= 5, "rewards stayed sparse (0 on every step but an episode's last)"

    # GAE over the written-back batch vs over its sparse twin (R on each done step, 0 elsewhere)
    value = TensorDictModule(torch.nn.Linear(1, 1), in_keys=["prompt_len"], out_keys=["state_value"])
    for td in (last, last["next"]):  # a real, input-dependent critic: the attention mask's length
        td["prompt_len"] = td["attention_mask"].sum(-1, keepdim=True).float()
    gae = GAE(gamma=1.0, lmbda=1.0, value_network=value)
    sparse = last.clone()
    sparse["next", "reward"] = (nxt["score"] * done).unsqueeze(-1).to(reward.dtype)
    with torch.no_grad():
        dense_adv, sparse_adv = gae(last.clone())["advantage"], gae(sparse)["advantage"]
    assert (dense_adv - sparse_adv).abs().max() > 1e-3, "GAE saw the sparse reward"
    # value target = reward to go within the episode (terminal steps do not bootstrap)
    dense = gae(last.clone())
    flat_done, flat_reward = done.reshape(-1, done.shape[-1]), reward.reshape(-1, done.shape[-1]).double()
    target = dense["value_target"].reshape(flat_done.shape).double()
    for env_row in range(flat_done.shape[0]):
        ends = flat_done[env_row].nonzero().squeeze(-1).tolist()
        for begin, end in zip([-1, *ends], ends):
            to_go = flat_reward[env_row, begin + 1 : end + 1].flip(0).cumsum(0).flip(0)
            torch.testing.assert_close(target[env_row, begin + 1 : end + 1], to_go, atol=1e-4, rtol=1e-4)


def test_gymenv_num_envs_runs_under_pytest_and_writes_back():
    """GymEnv(id, num_envs=2): spawned AsyncVectorEnv workers (TorchRL sets the spawn start method) import abc_gym
    through gymnasium's 'module:id' form; NEXT_STEP reset steps get no credit; close() returns."""
    from torchrl.envs import GymEnv

    env = GymEnv("abc_gym:" + ENV, num_envs=2, **SHORT)
    assert env.unwrapped.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    batches, writeback = _collect(env, batches=2, frames=24)
    env.close()
    whole, _ = _check_episodes(batches)
    generated = torch.cat([b["next", "generated"] for b in batches], dim=-1)
    done = torch.cat([b["next", "done"].squeeze(-1) for b in batches], dim=-1)
    assert ((generated == 0) & ~done).any(), "no NEXT_STEP reset step seen"
    assert whole >= 3 and writeback.stats["episodes"] >= whole


def test_writeback_names_the_reader_and_the_batch_shape():
    from tensordict import TensorDict

    from abc_gym.torchrl_info import TensorDictCreditWriteback

    td = TensorDict({"next": {"done": torch.zeros(4, 1, dtype=torch.bool), "reward": torch.zeros(4, 1)}}, [4])
    with pytest.raises(KeyError, match="set_info_dict_reader"):
        TensorDictCreditWriteback(())(td)
    td["next", "token_rewards"], td["next", "num_tokens"], td["next", "generated"] = torch.zeros(4, 7), torch.zeros(4), torch.zeros(4)
    with pytest.raises(ValueError, match=r"TensorDictCreditWriteback\(env.batch_size\)"):
        TensorDictCreditWriteback((2,))(td)
    assert np.array_equal(TensorDictCreditWriteback(())(td)["next", "reward"], torch.zeros(4, 1))
