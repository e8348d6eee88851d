"""Sampling a token per row: the inverse-CDF sampler (``sampler="inverse_cdf"``)."""

from __future__ import annotations

import torch

from agents.compat.torch import assert_async


def inverse_cdf_sample(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` ``(B, V)`` by inverse-CDF sampling; returns ``(B,)`` long.

    The same distribution as ``torch.multinomial(probs, 1)`` with one uniform draw per row
    instead of one exponential draw per vocabulary entry (what ``multinomial`` costs on a CPU:
    ~15 ns per entry). The CDF is summed in float64, so every token's share of [0, 1) is its
    probability to ~1e-16, and a token of probability 0 (a masked one) is never drawn. Rows
    with a NaN, an infinity or no positive mass raise, as ``torch.multinomial`` does (checked
    on the device, without a host sync).
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    total = cdf[:, -1]
    assert_async(
        (torch.isfinite(total) & (total > 0) & (probs >= 0).all(-1)).all(),
        "inverse_cdf_sample: a probability row has NaN, inf, a negative entry or no positive mass",
    )
    u = torch.rand(len(probs), 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(1)  # first slot whose CDF exceeds u
    # u rounded up to the total (probability ~1e-16): the last token of positive probability
    last_positive = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1)
    return torch.where(idx < probs.shape[-1], idx, last_positive)
