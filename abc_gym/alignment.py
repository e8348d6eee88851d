"""Map a reward model's per-token values back onto the policy's tokens by character offsets.

When the reward model (RM) has its own tokenizer, it reads the decoded text of
prompt + completion. A policy token receives the value of every RM token whose
character span overlaps its own. Zero-width tokens (specials such as EOS or PAD, which
decode to no text) overlap nothing and receive nothing, with one exception: the first
EOS after the end of the text receives the RM's trailing specials (e.g. BERT's
``[SEP]``), since both mark the end of the text. Exactly one policy token can receive
them, so a run of invisible tokens (``"ar"`` + 7 PADs, EOS + PADs) never gets a copy
of the ``[SEP]`` value per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def token_char_spans(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``ids`` and give each token its ``[start, end)`` span in the decoded text.

    Spans come from decoding growing prefixes, which is exact for any tokenizer whose
    decode is prefix-stable (byte-level BPE, WordPiece, SentencePiece); a prefix that
    ends inside a multi-byte character is clamped so spans never go backwards.

    Returns:
        ``(text, spans)`` with ``len(spans) == len(ids)``.
    """
    ids = [int(i) for i in ids]
    # one batched (Rust) call for all prefixes; the last prefix is the whole text
    prefixes = tokenizer.batch_decode(
        [ids[:k] for k in range(1, len(ids) + 1)], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    spans: list[tuple[int, int]] = []
    prev = 0
    for prefix in prefixes:
        end = max(prev, len(prefix))
        spans.append((prev, end))
        prev = end
    text = prefixes[-1] if prefixes else ""
    return text, spans


def decode_texts(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Sequence[int]]) -> list[str]:
    """Each row's decoded text, in one batched (Rust) call; the same text :func:`token_char_spans` gives."""
    return tokenizer.batch_decode(
        [[int(i) for i in ids] for ids in rows], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def batch_token_char_spans(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[Sequence[int]]
) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """:func:`token_char_spans` of every row, in O(tokens) decoding instead of O(tokens^2).

    Two batched decodes: every row's text, and every token on its own. Where a row's
    single-token pieces concatenate to its text (byte-level BPE without a character split
    across tokens: the common case), every prefix decodes to the concatenation of its
    pieces, so the spans are the pieces' cumulative lengths. Any other row (a multi-byte
    character split across tokens, WordPiece or SentencePiece spacing) falls back to
    :func:`token_char_spans`. Either way the result equals :func:`token_char_spans` (tested).

    Returns:
        ``(texts, spans)``, one entry per row.
    """
    rows = [[int(i) for i in ids] for ids in rows]
    texts = decode_texts(tokenizer, rows)
    pieces = tokenizer.batch_decode(
        [[i] for ids in rows for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    spans: list[list[tuple[int, int]]] = []
    start = 0
    for b, ids in enumerate(rows):
        row_pieces = pieces[start : start + len(ids)]
        start += len(ids)
        if "".join(row_pieces) != texts[b]:
            texts[b], row_spans = token_char_spans(tokenizer, ids)
            spans.append(row_spans)
            continue
        row_spans = []
        prev = 0
        for piece in row_pieces:
            row_spans.append((prev, prev + len(piece)))
            prev += len(piece)
        spans.append(row_spans)
    return texts, spans


def overlap_matrix(
    policy_spans: Sequence[tuple[int, int]],
    rm_offsets: Sequence[tuple[int, int]],
    text_length: int,
    end_token: int | None = None,
) -> torch.Tensor:
    """``(P, R)`` 0/1 matrix: policy token ``p`` overlaps RM token ``r`` in characters.

    RM specials have ``(0, 0)`` offsets and overlap nothing. Those after the last text
    token (trailing, e.g. ``[SEP]``) go to the one policy token ``end_token`` (the trailing
    EOS, see :func:`trailing_eos_index`), provided it is zero-width at the end of the text;
    with ``end_token=None`` they go nowhere.
    """
    p_spans = torch.tensor(policy_spans, dtype=torch.long).view(-1, 2)
    r_spans = torch.tensor(rm_offsets, dtype=torch.long).view(-1, 2)
    ps, pe = p_spans[:, :1], p_spans[:, 1:]
    rs, re = r_spans[:, 0].unsqueeze(0), r_spans[:, 1].unsqueeze(0)
    m = ((ps < re) & (rs < pe)).to(torch.float32)
    if end_token is None:
        return m
    start, end = (int(x) for x in p_spans[end_token])
    if not (start == end >= text_length):
        raise ValueError(f"end_token {end_token} spans characters {start}-{end}: only a zero-width token after the text can take the RM's trailing specials")
    r_zero = (r_spans[:, 0] == r_spans[:, 1]).tolist()
    r_text = [i for i, z in enumerate(r_zero) if not z]
    last_text = r_text[-1] if r_text else -1
    trailing_rm = [i for i, z in enumerate(r_zero) if z and i > last_text]
    if trailing_rm:
        m[end_token, trailing_rm] = 1.0
    return m


def trailing_eos_index(
    policy_ids: Sequence[int], spans: Sequence[tuple[int, int]], text_length: int, eos_id: int | None
) -> int | None:
    """Index of the first EOS among the zero-width tokens after the text, or ``None``.

    This is the one policy token that takes the RM's trailing specials (module doc).
    """
    if eos_id is None:
        return None
    for i, (token, (start, end)) in enumerate(zip(policy_ids, spans)):
        if int(token) == eos_id and start == end >= text_length:
            return i
    return None


def map_to_policy_tokens(
    values: torch.Tensor,
    policy_tokenizer: PreTrainedTokenizerBase,
    policy_ids: Sequence[int],
    rm_offsets: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """Carry per-RM-token ``values`` ``(R,)`` onto policy tokens: ``(P,)`` with ``P = len(policy_ids)``.

    Zero-width policy tokens get 0, except the trailing EOS, which gets the RM's trailing specials.
    """
    text, spans = token_char_spans(policy_tokenizer, policy_ids)
    end_token = trailing_eos_index(policy_ids, spans, len(text), policy_tokenizer.eos_token_id)
    m = overlap_matrix(spans, rm_offsets, len(text), end_token).to(values.device)
    return m @ values.to(torch.float32)


def char_weights_to_tokens(
    char_weights: Sequence[tuple[int, int, float]], spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Share each ``(start, end, weight)`` character span's weight equally among the tokens it overlaps.

    Used for gold credit defined on words of the text: a word split into two tokens
    gives each half, so the total weight is kept. Returns ``(len(spans),)`` float64.
    """
    char_weights = list(char_weights)
    if not char_weights or not len(spans):
        return torch.zeros(len(spans), dtype=torch.float64)
    tok = torch.tensor(spans, dtype=torch.long).view(-1, 2)  # (P, 2)
    chars = torch.tensor([(int(s), int(e)) for s, e, _ in char_weights], dtype=torch.long).view(-1, 2)  # (C, 2)
    weight = torch.tensor([float(w) for _, _, w in char_weights], dtype=torch.float64)
    hit = (tok[:, 0].unsqueeze(0) < chars[:, 1:]) & (chars[:, :1] < tok[:, 1].unsqueeze(0))  # (C, P)
    n_hit = hit.sum(1)
    share = torch.where(n_hit > 0, weight / n_hit.clamp(min=1), torch.zeros_like(weight))
    return (hit.double() * share.unsqueeze(1)).sum(0)
