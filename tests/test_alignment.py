"""Cross-tokenizer mapping by character offsets, on two different real tokenizers."""

from __future__ import annotations

import torch

from abc_gym.alignment import (
    char_weights_to_tokens,
    map_to_policy_tokens,
    overlap_matrix,
    token_char_spans,
    trailing_eos_index,
)


def test_spans_tile_the_decoded_text(policy_tokenizer):
    ids = policy_tokenizer("the soundtrack was unbelievably dull, but warm.", add_special_tokens=False)["input_ids"]
    text, spans = token_char_spans(policy_tokenizer, ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "spans are contiguous"
    assert "".join(text[s:e] for s, e in spans) == text


def test_bpe_policy_to_wordpiece_reward_model(policy_tokenizer, minilm_tokenizer):
    """Byte-level BPE (policy) vs WordPiece (MiniLM): every RM text token lands on the policy
    tokens sharing its characters, specials go nowhere except trailing [SEP] -> trailing EOS."""
    text_in = "the cinematography was unbelievably gorgeous"
    ids = policy_tokenizer(text_in, add_special_tokens=False)["input_ids"] + [policy_tokenizer.eos_token_id]
    text, spans = token_char_spans(policy_tokenizer, ids)
    assert spans[-1][0] == spans[-1][1] == len(text), "EOS decodes to no characters"
    enc = minilm_tokenizer(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    m = overlap_matrix(spans, offsets, len(text), end_token=len(ids) - 1)
    rm_tokens = minilm_tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert rm_tokens[0] == "[CLS]" and rm_tokens[-1] == "[SEP]"
    assert m[:, 0].sum() == 0, "[CLS] overlaps no policy token"
    assert m[-1, -1] == 1 and m[-1, :-1].sum() == 0, "trailing [SEP] goes to the policy EOS only"
    for j, (s, e) in enumerate(offsets[1:-1], start=1):
        covering = [p for p, (ps, pe) in enumerate(spans) if ps < e and s < pe]
        assert covering and m[covering, j].eq(1).all() and m[:, j].sum() == len(covering)
    # a value on one RM word piece reaches exactly the policy tokens covering that piece
    values = torch.zeros(len(offsets))
    target = next(j for j, t in enumerate(rm_tokens) if t.startswith("gorgeous") or t == "gorgeous")
    values[target] = 1.0
    mapped = map_to_policy_tokens(values, policy_tokenizer, ids, offsets)
    hit = [p for p, v in enumerate(mapped.tolist()) if v > 0]
    assert "gorgeous" in "".join(text[spans[p][0] : spans[p][1]] for p in hit)


def test_char_weights_keep_the_word_total():
    spans = [(0, 3), (3, 6), (6, 10)]
    w = char_weights_to_tokens([(2, 5, 1.0), (7, 9, 0.5)], spans)
    assert torch.allclose(w, torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    assert w.sum() == 1.5


def test_invisible_tokens_get_nothing_but_the_first_trailing_eos(policy_tokenizer, minilm_tokenizer):
    """F7: "ar" + EOS + EOS + PAD: only the first trailing EOS takes the [SEP] value; before, each
    zero-width token after the text got a full copy of it."""
    eos, pad = policy_tokenizer.eos_token_id, policy_tokenizer.pad_token_id
    ids = policy_tokenizer("ar", add_special_tokens=False)["input_ids"] + [eos, eos, pad]
    text, spans = token_char_spans(policy_tokenizer, ids)
    assert trailing_eos_index(ids, spans, len(text), eos) == len(ids) - 3
    enc = minilm_tokenizer(text, return_offsets_mapping=True)
    values = torch.ones(len(enc["input_ids"]))  # every RM token, [CLS] and [SEP] included, carries 1
    mapped = map_to_policy_tokens(values, policy_tokenizer, ids, [tuple(o) for o in enc["offset_mapping"]])
    assert mapped[-3] == 1.0 and mapped[-2:].sum() == 0.0
    pads = policy_tokenizer("ar", add_special_tokens=False)["input_ids"] + [pad] * 7
    mapped = map_to_policy_tokens(values, policy_tokenizer, pads, [tuple(o) for o in enc["offset_mapping"]])
    assert mapped[1:].sum() == 0.0, "no EOS: the [SEP] value goes nowhere"
