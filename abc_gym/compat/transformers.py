"""transformers internals used by abc_gym.

Checked against transformers 5.0.0 (the declared floor), 5.17.0 and 5.24.0.

- The decoder caches the agents' KV cache is built on live in :mod:`agents.compat.transformers`
  (the env never uses a cache).
- The attention plumbing behind :mod:`abc_gym.attention`: ``AttentionInterface``,
  ``integrations.sdpa_attention.{sdpa_attention_forward, repeat_kv}``,
  ``masking_utils.{ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask}`` and the private class flag
  ``PreTrainedModel._supports_attention_backend``.
- The model-type name mappings that tell decoders from encoders.
- Loading: ``from_pretrained(..., output_loading_info=True)`` returns ``(model, info)``
  with ``info["missing_keys"]`` (a list or set of parameter names the checkpoint lacked,
  which transformers initialises randomly); read by :func:`missing_keys`. Every 5.x
  checked reports them in a "LOAD REPORT" logged at warning level and shows a "Loading
  weights" tqdm bar; :func:`quiet_loading` silences both through the public
  ``transformers.utils.logging`` switches and restores them afterwards.
- Per-position scores (RED): decoder ``*ForSequenceClassification`` models (GPT-2, GPT-NeoX,
  Llama and the generic ``GenericForSequenceClassification``) apply their ``score`` linear
  head to the hidden state of EVERY position and only then pool the last non-pad one;
  :func:`sequence_score_head` returns that module and :func:`capture_output` records its
  ``(B, L, C)`` output during the ordinary forward. A model without a ``score`` module, or
  whose head output is not per position, has no per-position scores (``None`` / an error
  raised by the caller).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging

__all__ = [
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionInterface",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "capture_output",
    "missing_keys",
    "quiet_loading",
    "register_attention",
    "repeat_kv",
    "sdpa_attention_forward",
    "sequence_score_head",
    "supports_attention_backend",
]


def supports_attention_backend(model: nn.Module) -> bool:
    """Whether ``model`` routes attention through ``AttentionInterface`` (private class flag)."""
    return bool(getattr(model, "_supports_attention_backend", False))


def register_attention(name: str, fn: Any) -> None:
    """Register an SDPA-compatible attention function (and SDPA's mask builder) under ``name``."""
    AttentionInterface.register(name, fn)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Within the block: no "Loading weights" progress bar and no load report (verbosity error)."""
    bar = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def missing_keys(loading_info: Any) -> list[str]:
    """Sorted parameter names a checkpoint lacked, from ``from_pretrained(..., output_loading_info=True)``'s info."""
    keys = loading_info.get("missing_keys") if isinstance(loading_info, dict) else getattr(loading_info, "missing_keys", None)
    return sorted(str(k) for k in (keys or ()))


def sequence_score_head(model: nn.Module) -> nn.Module | None:
    """The linear head a decoder sequence classifier applies at every position (``model.score``), or None."""
    head = getattr(model, "score", None)
    return head if isinstance(head, nn.Module) else None


@contextlib.contextmanager
def capture_output(module: nn.Module, store: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Within the block every output of ``module`` is appended to ``store`` (a forward hook)."""
    handle = module.register_forward_hook(lambda _m, _inp, out: store.append(out))
    try:
        yield store
    finally:
        handle.remove()
