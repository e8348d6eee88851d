"""Read one softmax row of a reward model's last attention layer while every layer keeps SDPA.

transformers' SDPA attention returns no weights (``output_attentions=True`` silently
gives ``None``), and eager attention materialises every layer's ``(B, H, T, T)`` map.
ABC needs only the last layer's row(s) at the token where the score is read. We register
an attention function, :data:`ROW_ATTENTION`, in transformers' ``AttentionInterface``:
it runs plain SDPA in every layer and, inside :func:`capture_rows` and only for the last
attention module, also computes ``softmax(q_row K^T * scale + mask)`` for the requested
query row(s), averaged over heads. Cost: one extra ``(B, H, 1, T)`` product per forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

from abc_gym.compat.transformers import register_attention, repeat_kv, sdpa_attention_forward

ROW_ATTENTION = "abc_row_sdpa"


@dataclass
class RowRequest:
    """What to capture during one forward pass.

    Exactly one of ``query_index`` / ``query_weights`` is set:
        query_index: ``(B,)`` long, the row read per sequence (last token, [CLS]).
        query_weights: ``(B, Tq)`` float, a weighted mean of rows (mean pooling).
    ``module`` is the attention module whose rows are read; ``None`` records every
    attention module called, in call order (used once to find the last layer).
    """

    query_index: torch.Tensor | None = None
    query_weights: torch.Tensor | None = None
    module: nn.Module | None = None
    seen: list[nn.Module] = field(default_factory=list)
    result: torch.Tensor | None = None  # (B, Tk) float32, head-averaged


_ACTIVE: ContextVar[RowRequest | None] = ContextVar("abc_gym_row_request", default=None)


def _row_probabilities(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    is_causal: bool | None,
    req: RowRequest,
) -> torch.Tensor:
    """Head-averaged attention probabilities of the requested rows.

    Args:
        query: ``(B, H, Tq, D)``; key: ``(B, Hkv, Tk, D)``;
        attention_mask: ``(B|1, 1|H, Tq, Tk)`` bool (True = attend) or additive float, or None.
    Returns:
        ``(B, Tk)`` float32.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = repeat_kv(key, groups)
    b, _, tq, _ = query.shape
    tk = key.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if req.query_index is not None:
        idx = req.query_index.to(query.device)
        rows = torch.arange(b, device=query.device)
        q = query[rows, :, idx].unsqueeze(2)  # (B, H, 1, D)
        if attention_mask is not None:
            mask = attention_mask.expand(b, -1, tq, tk)[rows, :, idx].unsqueeze(2)
        else:
            mask = None
        q_pos = idx.view(b, 1, 1, 1)
    else:
        q, mask, q_pos = query, attention_mask, torch.arange(tq, device=query.device).view(1, 1, tq, 1)
    scores = torch.matmul(q.float(), key.float().transpose(-1, -2)) * scale  # (B, H, R, Tk)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
        if causal:
            # SDPA got is_causal=True with no mask: query i sees keys j <= i (no cache offset:
            # the reward model always scores the whole sequence in one pass).
            k_pos = torch.arange(tk, device=query.device).view(1, 1, 1, tk)
            scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
    probs = torch.softmax(scores, dim=-1).mean(dim=1)  # (B, R, Tk), averaged over heads
    if req.query_index is not None:
        return probs[:, 0]
    w = req.query_weights.to(probs.device, torch.float32)
    return torch.einsum("bq,bqk->bk", w / w.sum(-1, keepdim=True), probs)


def row_sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """SDPA attention that also records the requested rows of the last layer (see module doc)."""
    req = _ACTIVE.get()
    if req is not None:
        if req.module is None:
            req.seen.append(module)
        elif module is req.module:
            if kwargs.get("position_bias") is not None:
                raise NotImplementedError(
                    "row attention does not support position_bias models; load the reward model with attention_source='eager'"
                )
            req.result = _row_probabilities(module, query, key, attention_mask, scaling, is_causal, req)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


register_attention(ROW_ATTENTION, row_sdpa_attention_forward)


@contextlib.contextmanager
def capture_rows(req: RowRequest) -> Iterator[RowRequest]:
    """Activate ``req`` for the forward passes run inside the ``with`` block."""
    token = _ACTIVE.set(req)
    try:
        yield req
    finally:
        _ACTIVE.reset(token)
