"""CPU tests of the fast paths (issue 11): batched decoding for scoring, the fixed-shape KV cache,
bf16 log-probs, and the device-resident rollout (same episodes and rewards as the numpy path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abc_gym.alignment import batch_token_char_spans, char_weights_to_tokens, decode_texts, token_char_spans


def _reference_char_weights(char_weights, spans) -> torch.Tensor:
    out = torch.zeros(len(spans), dtype=torch.float64)
    for s, e, w in char_weights:
        hit = [i for i, (ts, te) in enumerate(spans) if ts < e and s < te]
        for i in hit:
            out[i] += w / len(hit)
    return out


def _random_rows(tokenizer, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    specials = [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    rows = []
    for _ in range(n):
        ids = rng.integers(0, len(tokenizer), size=int(rng.integers(1, 30))).tolist()
        if specials and rng.random() < 0.5:
            ids[int(rng.integers(len(ids)))] = specials[0]
        rows.append(ids)
    rows.append(tokenizer("café naïve — 日本語 ok", add_special_tokens=False)["input_ids"])  # multi-byte characters
    return rows


@pytest.mark.parametrize("which", ["policy", "minilm"])
def test_batch_spans_equal_per_row_spans(which, request) -> None:
    tokenizer = request.getfixturevalue(f"{which}_tokenizer")
    rows = _random_rows(tokenizer, 40, seed=1)
    texts, spans = batch_token_char_spans(tokenizer, rows)
    for ids, text, row_spans in zip(rows, texts, spans):
        assert (text, row_spans) == token_char_spans(tokenizer, ids)
    assert decode_texts(tokenizer, rows) == texts


def test_char_weights_vectorised_equals_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        ends = np.cumsum(rng.integers(0, 4, size=int(rng.integers(0, 12))))
        spans = list(zip([0, *ends[:-1].tolist()], ends.tolist()))
        cw = [(int(s), int(s + rng.integers(0, 6)), float(rng.random())) for s in rng.integers(0, 30, size=int(rng.integers(0, 5)))]
        assert torch.allclose(char_weights_to_tokens(cw, spans), _reference_char_weights(cw, spans), atol=1e-12)
