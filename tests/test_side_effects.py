"""No side effects the caller did not ask for (issue 17 item 5).

- Importing abc_gym (env modules included) registers no fork hook and leaves torch's threads alone;
  only an env built in a process forked after its parent built one runs torch on one thread
  (gymnasium's AsyncVectorEnv, which would otherwise deadlock: compat/torch.py).
- Every registered id's spec is JSON-serialisable (``gym.spec(id).to_json()``), and a spec read
  back from JSON builds the same env: functions are ``"module:attr"`` strings resolved at build.

The process-level checks run in a fresh interpreter, so nothing imported by other tests hides them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.envs.registration import EnvSpec, registry

import abc_gym
from abc_gym.config import EnvConfig
from abc_gym.registration import REFERENCE_FIELDS, is_reference, load_reference, resolve_references
from abc_gym.tasks.sentiment.gold import gold_char_credit, gold_score

REPO = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}


def run_python(script: str, timeout: float = 120) -> str:
    """Run ``script`` in a fresh interpreter at the repo root; return its stdout (fails the test on error)."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script hung for {timeout} s (a fork after a torch op?)")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# ------------------------------------------------------------------ fork hooks and threads
def test_import_registers_no_fork_hook_and_keeps_threads():
    out = run_python(
        """
        import os
        import torch  # torch's own fork handlers are not ours: import it before watching

        hooks = []
        real = os.register_at_fork
        def watch(**kw):
            hooks.append(kw)
            return real(**kw)
        os.register_at_fork = watch

        torch.set_num_threads(3)
        import abc_gym, abc_gym.core, abc_gym.config, abc_gym.env, abc_gym.vector_env, abc_gym.credit  # noqa
        ours = [kw for kw in hooks if any(getattr(f, "__module__", "").startswith("abc_gym") for f in kw.values())]
        assert not ours, ours

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child only reads the count: no parallel op, so no pool to deadlock on
            os.write(w, str(torch.get_num_threads()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", torch.get_num_threads(), "child", os.read(r, 16).decode())
        """
    )
    assert out.split() == ["parent", "3", "child", "3"], out


def test_only_an_env_built_in_a_forked_child_gets_one_thread():
    """Parent builds an env and forks: a child that builds none keeps the threads; one that does gets 1."""
    out = run_python(
        """
        import os
        import torch
        import gymnasium as gym
        import abc_gym
        from abc_gym.compat.torch import one_thread_in_forked_env_worker

        torch.set_num_threads(2)
        env = gym.make("abc_gym/Sentiment-v0", device="cpu")  # builds, so loads and runs torch here
        assert torch.get_num_threads() == 2, "building an env in the main process changes nothing"

        def child(build):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                if build:
                    one_thread_in_forked_env_worker()  # what every env build calls before loading a model
                os.write(w, str(torch.get_num_threads()).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            return os.read(r, 16).decode()

        print(child(False), child(True), torch.get_num_threads())
        """
    )
    assert out.split() == ["2", "1", "2"], out


def test_async_vector_env_with_a_user_scheme_runs_in_forked_workers():
    """gymnasium's AsyncVectorEnv (fork): no deadlock, and the workers see the scheme registered before the fork."""
    out = run_python(
        """
        import gymnasium as gym
        import numpy as np
        import torch
        import abc_gym
        from abc_gym.credit import redistribute

        def last_only(score, completion_mask):
            mask = completion_mask.bool()
            last = mask.long().cumsum(-1) == mask.long().sum(-1, keepdim=True)
            return redistribute(score, (last & mask).double(), mask)

        abc_gym.register_credit("last-only", last_only)
        venv = gym.make_vec("abc_gym/Sentiment-v0", num_envs=2, vectorization_mode="async", reward_mode="last-only",
                            min_new_tokens=3, max_new_tokens=3, eos_ends_episode=False, device="cpu")
        venv.reset(seed=0)
        for _ in range(3):
            _, rewards, terminated, _, info = venv.step(np.array([5, 6]))
        assert terminated.all() and list(info["reward_mode"]) == ["last-only"] * 2, info.get("reward_mode")
        for row in range(2):
            credit = np.asarray(info["token_rewards"][row])[: int(info.get("num_tokens", [3, 3])[row])]
            assert credit[:-1].tolist() == [0.0, 0.0] and np.isclose(credit[-1], info["score"][row])
        venv.close()
        print("OK")
        """,
        timeout=180,
    )
    assert "OK" in out


# ------------------------------------------------------------------ JSON-serialisable specs
def abc_gym_ids() -> list[str]:
    abc_gym.register_envs()
    return sorted(i for i in registry if i.startswith("abc_gym/"))


@pytest.mark.parametrize("env_id", abc_gym_ids())
def test_every_registered_spec_serialises_and_its_references_resolve(env_id):
    spec = gym.spec(env_id)
    text = spec.to_json()  # raised TypeError while kwargs held function objects
    back = EnvSpec.from_json(text)
    assert back.kwargs == spec.kwargs and json.loads(text)["kwargs"] == spec.kwargs
    for name, value in spec.kwargs.items():
        assert isinstance(value, (str, int, float, bool, type(None))), (name, value)
        if name in REFERENCE_FIELDS and is_reference(value) and not Path(value).exists():
            assert callable(load_reference(name, value)), (name, value)


def test_the_shipped_task_names_its_gold_functions_and_resolves_them():
    kwargs = gym.spec("abc_gym/Sentiment-v0").kwargs
    assert kwargs["gold_scorer"] == "abc_gym.tasks.sentiment.gold:gold_score"
    assert kwargs["gold_credit"] == "abc_gym.tasks.sentiment.gold:gold_char_credit"
    # a spec read back from JSON builds the env with the same functions
    back = EnvSpec.from_json(gym.spec("abc_gym/Sentiment-v0").to_json())
    env = gym.make(back, device="cpu")
    assert env.unwrapped.episodes.gold_scorer is gold_score and env.unwrapped.episodes.gold_credit is gold_char_credit
    assert gym.spec("abc_gym/Sentiment-MiniLM-v0").kwargs["reward_model"] == "abc_gym.registration:minilm_reward_model"
    assert gym.spec("abc_gym/IMDb-GPT2-v0").kwargs["prompts"] == "abc_gym.tasks.imdb:imdb_prompts"


def test_references_resolve_only_where_meant(tmp_path):
    path = tmp_path / "a:b"  # a real path that looks like "module:attr" stays a path
    path.write_text("[]")
    cfg = EnvConfig.__new__(EnvConfig)
    cfg.gold_scorer, cfg.gold_credit, cfg.reward_model = "abc_gym.tasks.sentiment.gold:gold_score", None, "gpt2"
    cfg.prompts = str(path)
    resolve_references(cfg)
    assert cfg.gold_scorer is gold_score and cfg.reward_model == "gpt2" and cfg.prompts == str(path)
    with pytest.raises(ValueError, match=r"gold_credit='abc_gym.tasks.sentiment.gold:no_such' is a 'module:attr' "
                                         r"reference that does not resolve.*pass the object itself"):
        gym.make("abc_gym/Sentiment-v0", gold_credit="abc_gym.tasks.sentiment.gold:no_such", device="cpu")
    with pytest.raises(TypeError, match="gold_scorer must be None or a function"):  # not a reference: as before
        gym.make("abc_gym/Sentiment-v0", gold_scorer="vader", device="cpu")
