"""Data-parallel training (agents.distributed): a 2-rank gloo run equals one process on the same episodes.

Run at once: one plain process (4 env rows) and ``torchrun --nproc-per-node 2`` (gloo,
rendezvous on 127.0.0.1; 2 rows per rank, seeded as rows 0-1 and 2-3 of the plain env). Actions are
greedy, so the two ranks' episodes together are exactly the plain process's episodes; one
epoch, one minibatch = the whole batch, so the update's math is the same. Also: --reward-device.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.config import TrainConfig
from agents.distributed import LOCAL, check_data_parallel, rank_device

ALGOS = ("token_ppo", "ppo")

# Runs train() once per algorithm; keeps each trained model's weights and returned metrics in OUT.
WORKER = r"""
import json, os, sys
import torch
import agents.credit_mixin as cm
import agents.policy as pol
import agents.registry as reg
import agents.training as tr
from agents.training import TrainConfig, train

out, tag = sys.argv[1], sys.argv[2]
forward = pol.TransformerActorCriticPolicy.forward
def greedy(self, obs, *args, **kwargs):  # same actions whatever the batch's other rows
    kwargs["deterministic"] = True
    return forward(self, obs, *args, **kwargs)
pol.TransformerActorCriticPolicy.forward = greedy
reg._batch_size = lambda cfg, env: 10**6  # SB3 PPO: one minibatch = the whole batch
build = tr.build_model
def build_with_sgd(*args, **kwargs):  # Adam's first step is ~lr*sign(grad), blind to the gradient's scale
    model = build(*args, **kwargs)
    model.policy.optimizer = torch.optim.SGD(model.policy.parameters(), lr=0.05)
    return model
tr.build_model = build_with_sgd
kept = []
update = cm.CreditAssignmentMixin.train
def train_and_keep(self):
    before = {k: v.clone() for k, v in self.policy.state_dict().items()}
    update(self)
    self.moved = max((v - before[k]).abs().max().item() for k, v in self.policy.state_dict().items())
    kept.append(self)
cm.CreditAssignmentMixin.train = train_and_keep
for algo in sys.argv[3:]:  # two train() calls: two process groups in the same ranks
    cfg = TrainConfig(algo=algo, seed=2, lr=0.05, n_updates=1, episodes_per_update=4, minibatch_episodes=4, n_epochs=1,
                      device="cpu", log_dir=os.path.join(out, tag, algo), run_name="run", progress=False, quiet=True)
    metrics = train(cfg)
    rank = os.environ.get("RANK", "single")
    torch.save(kept[-1].policy.state_dict(), os.path.join(out, f"{algo}_{rank}.pt"))
    with open(os.path.join(out, f"{algo}_{rank}.json"), "w") as f:
        json.dump({"metrics": metrics, "moved": kept[-1].moved}, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain process and ``torchrun --nproc-per-node 2`` (gloo, rendezvous on 127.0.0.1), run at once
    (killed after 150 s); returns their output folder."""
    out = tmp_path_factory.mktemp("dist")
    cwd = out / "cwd"
    cwd.mkdir()
    worker = out / "worker.py"
    worker.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", ABC_DIST_TIMEOUT_S="120")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
    procs = []
    for launcher, tag in (([sys.executable], "single"), (torchrun, "group")):
        cmd = [*launcher, str(worker), str(out), tag, *ALGOS]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))  # own process group: a kill reaches torchrun's ranks
    logs = []
    deadline = time.monotonic() + 150
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return out


@pytest.mark.parametrize("algo", ALGOS)
def test_two_ranks_update_equals_one_process(runs: Path, algo: str) -> None:
    single = torch.load(runs / f"{algo}_single.pt")
    ranks = [torch.load(runs / f"{algo}_{r}.pt") for r in (0, 1)]
    diff = max((ranks[0][k].float() - single[k].float()).abs().max().item() for k in single)
    sync = max((ranks[0][k] - ranks[1][k]).abs().max().item() for k in single)
    assert sync == 0.0  # the ranks hold the same weights
    assert diff < 1e-5, f"max abs parameter difference {diff:.3g}"
    out = {r: json.loads((runs / f"{algo}_{r}.json").read_text()) for r in ("single", 0, 1)}
    assert out["single"]["moved"] > 1e-5  # the update moved the weights: the comparison is not vacuous
    print(f"{algo}: max abs param diff {diff:.3g} (update moved weights by up to {out['single']['moved']:.3g})")
    # metrics are global: every rank returns the group's means over its 4 episodes, the plain process's
    m_single, m_ranks = out["single"]["metrics"][0], [out[r]["metrics"][0] for r in (0, 1)]
    timing = ("wall_time", "update_time")
    assert {k: v for k, v in m_ranks[0].items() if k not in timing} == {k: v for k, v in m_ranks[1].items() if k not in timing}
    for key in ("episodes", "transitions"):  # (timesteps differ: a rank stops at ITS longest episode)
        assert m_ranks[0][key] == m_single[key], key
    for key in ("rm_score", "kl", "kl_coef", "mean_len", "entropy", "policy_loss", "value_loss"):
        assert m_ranks[0][key] == pytest.approx(m_single[key], rel=1e-4, abs=1e-5), key


def test_only_rank_zero_writes(runs: Path) -> None:
    for algo in ALGOS:
        group, single = runs / "group" / algo, runs / "single" / algo
        assert sorted(p.name for p in group.iterdir()) == ["run"]  # rank 1 made no run directory of its own
        written = sorted(p.name for p in (group / "run").iterdir() if not p.name.startswith("events"))
        assert written == sorted(p.name for p in (single / "run").iterdir() if not p.name.startswith("events"))
        assert any(p.name.startswith("events") for p in (group / "run").iterdir())
        assert len((group / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert list((runs / "cwd").iterdir()) == []  # nothing written anywhere else (no default runs/)


def test_config_must_split_over_ranks() -> None:
    check_data_parallel(TrainConfig(episodes_per_update=3), 1)  # one process: anything goes
    with pytest.raises(ValueError, match="--episodes-per-update 6 is not divisible by the world size 4"):
        check_data_parallel(TrainConfig(episodes_per_update=6, minibatch_episodes=2), 4)
    with pytest.raises(ValueError, match="--minibatch-episodes 3 is not divisible"):
        check_data_parallel(TrainConfig(episodes_per_update=16, minibatch_episodes=3), 2)
    with pytest.raises(ValueError, match="--algo trpo: not supported with torchrun"):
        check_data_parallel(TrainConfig(algo="trpo"), 2)
    assert rank_device("cpu", 1) == ("cpu", "gloo")
    if not torch.cuda.is_available():
        assert rank_device("auto", 0) == ("cpu", "gloo")
    assert not LOCAL.active and LOCAL.sum([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_reward_device_explicit_cpu_and_bad_string() -> None:
    from abc_gym.config import EnvConfig
    from agents.env_util import make_token_vec_env

    env = make_token_vec_env("abc_gym/Sentiment-v0", num_envs=2, device="cpu", seed=0, reward_device="cpu")
    assert env.episodes.reward_model.device == torch.device("cpu")
    env.reset()
    done = [False, False]
    while not all(done):
        _, rewards, dones, infos = env.step([5, 5])
        done = [a or b for a, b in zip(done, dones)]
    assert all("token_rewards" in infos[i] for i in range(2) if dones[i])
    with pytest.raises(ValueError, match="reward_device: device='gpu0' is not a device"):
        EnvConfig(policy="p", reward_model="r", prompts=["a"], reward_device="gpu0")
    with pytest.raises(ValueError, match="--reward-device gpu0: not a torch device"):
        TrainConfig(reward_device="gpu0").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--reward-device cuda:1: CUDA is not available.*--reward-device cpu"):
            TrainConfig(reward_device="cuda:1").validate()


def test_world_size_one_same_path_and_clean_exit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """torchrun with one process: the group path runs, and the group is gone after success and after an error."""
    import torch.distributed as dist

    from agents.training import train

    for key, value in dict(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    cfg = TrainConfig(n_updates=1, episodes_per_update=2, minibatch_episodes=2, n_epochs=1, device="cpu", log_dir=None,
                      progress=False, quiet=True)
    metrics = train(cfg)
    assert len(metrics) == 1 and metrics[0]["episodes"] == 2 and not dist.is_initialized()
    with pytest.raises(ValueError, match="no model.zip there"):
        train(cfg, resume=tmp_path)  # fails inside the group
    assert not dist.is_initialized()
