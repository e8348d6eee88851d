"""transformers' decoder-cache internals used by the agents' KV cache, in one place.

Checked against transformers 5.0.0 (the declared floor), 5.17.0 and 5.24.0.

- Cache keyword and output field: transformers 5.0-5.17 call the decoder cache
  ``past_key_values`` (forward keyword and ``BaseModelOutputWithPast`` field); later 5.x
  releases renamed both to ``cache``. :func:`forward_with_cache` picks the name the
  model's own ``forward`` declares, so one call works on every 5.x.
- ``DynamicCache(ddp_cache_data=...)`` and ``cache.layers[i].keys / .values``: the same
  in every 5.x checked.
- :class:`RowWriteCache` (the policy's fixed-shape per-row KV cache): a ``DynamicCache``
  whose ``layers`` are ``DynamicLayer`` subclasses overriding ``update``, ``get_seq_length``
  and ``get_mask_sizes``. The last changed its argument (``cache_position`` in 5.0-5.17,
  ``query_length`` later); the override takes either. ``StaticCache`` does not fit: it
  writes every row at one shared ``cache_position``, and token-env rows sit at their own
  positions. Equal to the full forward within 1e-15 (float64) on 5.0.0 and 5.24.0.
- :func:`use_fused_gelu` (the policy's ``fused_activation``, on by default): ``ACT2CLS`` and the classes
  ``NewGELUActivation`` / ``FastGELUActivation`` (the tanh GELU as Python tensor expressions) and
  ``ACT2CLS["gelu_pytorch_tanh"]`` (the same function on torch's fused kernel), the same in 5.0-5.24.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["RowWriteCache", "cache_from_layers", "cache_keyword", "cache_layers", "forward_with_cache", "use_fused_gelu"]


@cache
def _cache_keyword(forward_owner: type) -> str:
    """``"cache"`` (newer 5.x) or ``"past_key_values"`` (5.0-5.17), read off ``forward``'s signature."""
    params = inspect.signature(forward_owner.forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(
        f"{forward_owner.__name__}.forward takes neither 'cache' nor 'past_key_values': it cannot be stepped "
        "with a KV cache (pass use_cache=False to the policy)"
    )


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model.forward`` takes its cache by (see ``_cache_keyword``); read once per class,
    so a compiled caller can pass it as a constant."""
    return _cache_keyword(type(model))


def forward_with_cache(model: nn.Module, cache: DynamicCache, **kwargs: Any) -> tuple[Any, DynamicCache]:
    """Run ``model(**kwargs, use_cache=True)`` with ``cache``; returns ``(output, updated cache)``."""
    out = model(**kwargs, **{cache_keyword(model): cache}, use_cache=True)
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = out.past_key_values
    return out, new_cache


def cache_from_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A ``DynamicCache`` holding per-layer ``(keys, values)``, each ``(B, H, S, D)`` (empty: a new cache)."""
    return DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()


def cache_layers(cache: DynamicCache) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer keys and values of ``cache``, each ``(B, H, S, D)``."""
    return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]


class _RowWriteLayer(DynamicLayer):
    """A fixed-shape cache layer: ``(N, H, C, D)`` buffers; ``update`` writes the one new token of
    every row at that row's own slot, in place, and returns the whole buffers."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.device, self.dtype = keys.device, keys.dtype
        self.is_initialized = True
        self.write_index: torch.Tensor | None = None  # (N * H,) rows of the (N * H * C, D) view written next

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        # one index_copy_ per buffer on its flat (N * H * C, D) view: the same copy as
        # keys[rows, :, write_pos] = ..., without advanced indexing's index_put per call
        n, h, c, d = self.keys.shape
        self.keys.view(n * h * c, d).index_copy_(0, self.write_index, key_states[:, :, -1].reshape(n * h, d).to(self.dtype))
        self.values.view(n * h * c, d).index_copy_(
            0, self.write_index, value_states[:, :, -1].reshape(n * h, d).to(self.dtype)
        )
        return self.keys, self.values

    def get_seq_length(self, *args: Any, **kwargs: Any) -> int:
        # The model places its one new query after C - 1 "past" slots, so its causal mask spans all
        # C slots and the observation's padding mask alone decides what each row sees.
        return self.keys.shape[-2] - 1

    def get_mask_sizes(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        # 5.0-5.17: get_mask_sizes(cache_position); later 5.x: get_mask_sizes(query_length). Both: (C, 0).
        return self.keys.shape[-2], 0


class RowWriteCache(DynamicCache):
    """A ``DynamicCache`` whose layers are fixed ``(N, H, C, D)`` buffers written in place at per-row slots.

    transformers' ``StaticCache`` writes every row at one shared ``cache_position``; rows of
    token envs sit at different positions (prompts of different lengths, right padding), so
    this cache keeps each row in the observation's own layout instead. A forward with it takes
    one new token per row, ``position_ids`` ``(N, 1)`` (set by :meth:`set_write_positions`
    too) and the ``(N, C)`` padding mask of the whole buffer. Relies on: ``DynamicLayer``,
    ``Cache.layers`` and the layer methods ``update`` / ``get_seq_length`` / ``get_mask_sizes``
    (whose argument changed from ``cache_position`` to ``query_length`` after 5.17).
    """

    @classmethod
    def allocate(cls, keys: list[torch.Tensor], values: list[torch.Tensor], n_rows: int, capacity: int) -> RowWriteCache:
        """Zeroed buffers shaped like the per-layer ``keys`` / ``values`` ``(R, H, S, D)``, with ``n_rows`` rows and ``capacity`` slots."""
        cache = cls()
        cache.layers = [
            _RowWriteLayer(
                k.new_zeros(n_rows, k.shape[1], capacity, k.shape[3]), v.new_zeros(n_rows, v.shape[1], capacity, v.shape[3])
            )
            for k, v in zip(keys, values)
        ]
        return cache

    def set_write_positions(self, positions: torch.Tensor) -> None:
        """``(N,)`` slot each row's next token is written to."""
        indices: dict[tuple[int, ...], torch.Tensor] = {}  # one per buffer shape (every layer's, in GPT-2)
        for layer in self.layers:
            n, h, c, _ = shape = tuple(layer.keys.shape)
            if shape not in indices:
                rows = torch.arange(n * h, device=layer.keys.device)  # (n, head) pairs, row-major
                indices[shape] = rows * c + positions.to(rows.device).repeat_interleave(h)  # slot (n, head, positions[n])
            layer.write_index = indices[shape]

    def write_rows(self, rows: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Copy per-layer ``(R, H, S, D)`` keys/values into slots ``[0, S)`` of ``rows``."""
        for layer, k, v in zip(self.layers, keys, values):
            s = k.shape[2]
            layer.keys[rows, :, :s] = k.to(layer.dtype)
            layer.values[rows, :, :s] = v.to(layer.dtype)


def use_fused_gelu(model: nn.Module) -> int:
    """Replace, in place, every transformers tanh-GELU written as Python tensor expressions
    (``gelu_new``: ``NewGELUActivation``, GPT-2's; ``gelu_fast``: ``FastGELUActivation``) by transformers'
    own ``gelu_pytorch_tanh`` module, which computes the same function with torch's fused kernel: one
    pass instead of eight (2-5x faster per activation on a CPU, docs/performance.md), equal within float rounding but
    not bit for bit (transformers says so in ``GELUTanh``'s docstring). Returns how many were replaced."""
    from transformers.activations import ACT2CLS, FastGELUActivation, NewGELUActivation

    fused = ACT2CLS["gelu_pytorch_tanh"]
    fused = fused[0] if isinstance(fused, tuple) else fused  # ACT2CLS entries may be (class, kwargs)
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, fused())
                swapped += 1
    return swapped
