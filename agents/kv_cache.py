"""``RowKVCache``: the per-env KV cache that makes a rollout step one token per row.

Each env row keeps the keys/values of its prefix in fixed-shape buffers; a step whose prefix
extends the cached one by one token feeds only that token. Anything else (episode start,
another batch) re-prefills the row. The cache is keyed on the token prefix itself, so it can
never be stale for a different episode; the policy drops it whenever the weights may change.
With ``compile_step=True`` the fixed-shape single-token step runs through ``torch.compile``
(one graph; on CUDA with ``mode="reduce-overhead"``, i.e. CUDA graphs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agents.compat.torch import mark_static_address
from agents.compat.transformers import RowWriteCache, cache_from_layers, cache_keyword, cache_layers, forward_with_cache

_COMPILED_STEPS: dict[str, Any] = {}  # torch.compile mode -> the compiled decode step (compiled once per process)


class RowKVCache:
    """Fixed-shape per-row KV cache of a decoder trunk, written in place, for stepping N envs.

    One preallocated ``(N, H, L, D)`` key and value buffer per layer, laid out exactly like
    the observation (right padded: slot ``p`` of a row holds the token at position ``p``).
    A step whose prefix extends a row's cached one by one token writes only that token's
    keys/values, in place, at the row's own position (:class:`~agents.compat.RowWriteCache`);
    the attention reads the whole buffer under the observation's own ``attention_mask``, so
    the shapes never change from step to step (no concatenation, no re-merging; the fixed
    shape is what a compiled or CUDA-graph decode step needs). A row whose prefix does not
    extend its cached one (an episode start, another batch) is re-prefilled with one plain
    forward over its real tokens, whose keys/values are copied into its slots. The result
    equals the right-padded full forward (tested).

    :param trunk: a decoder trunk returning ``last_hidden_state`` (e.g. ``GPT2LMHeadModel.transformer``).
    :param max_len: ``L``, the observation length (no row is ever longer).
    :param compile_step: run the single-token step through ``torch.compile`` (:func:`compiled_decode_step`;
        prefills stay eager: their widths vary). Equal to the eager step within float rounding (tested).
    """

    def __init__(self, trunk: nn.Module, max_len: int, compile_step: bool = False) -> None:
        self.trunk = trunk
        self.max_len = max_len
        self.compile_step = bool(compile_step)
        self.clear()

    def clear(self) -> None:
        """Forget every row's prefix (each row re-prefills on its next call). A compiled step keeps
        the buffers allocated (their fixed addresses keep its graph valid across rollouts); an eager
        one frees them (no cache memory held during the update)."""
        self.ids: torch.Tensor | None = None  # (N, L) token prefix of each row
        self.length: torch.Tensor | None = None  # (N,) cached prefix length (0: nothing cached)
        if not (self.compile_step and getattr(self, "cache", None) is not None):
            self.cache: RowWriteCache | None = None  # per layer (N, H, L, D) keys / values

    @property
    def keys(self) -> list[torch.Tensor]:
        """Per-layer ``(N, H, L, D)`` key buffers (empty before the first call)."""
        return [] if self.cache is None else [layer.keys for layer in self.cache.layers]

    @property
    def values(self) -> list[torch.Tensor]:
        """Per-layer ``(N, H, L, D)`` value buffers (empty before the first call)."""
        return [] if self.cache is None else [layer.values for layer in self.cache.layers]

    @torch.no_grad()
    def last_hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden state ``(N, D)`` at each row's last real token, reusing the cache.

        Rows whose prefix extends the cached one by exactly one token are stepped (one batched
        single-token forward over every row, written in place); every other row is re-prefilled
        and its slots overwritten (including whatever the step wrote there).

        Args:
            ids: ``(N, L)`` long, mask: ``(N, L)`` long (right padded).
        """
        n_real = mask.long().sum(-1)  # (N,)
        extends = self._rows_extending_cache(ids, n_real)
        flags = torch.stack([extends.all(), extends.any()]).tolist()  # the one host sync of a step
        if flags[0]:
            hidden = self._step(ids, mask, n_real)
        else:
            hidden = self._step(ids, mask, n_real) if flags[1] else None
            rows = torch.nonzero(~extends).flatten()
            hidden = self._prefill_rows(rows, ids, mask, n_real, hidden)
        self.ids.copy_(ids)
        self.length.copy_(n_real)
        return hidden

    def _rows_extending_cache(self, ids: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: the row's cached prefix is its current prefix minus the last token."""
        if self.ids is None or self.ids.shape != ids.shape or self.ids.device != ids.device:
            self.clear()
            if self.cache is not None:  # buffers of another batch, device or dtype: allocate anew at the prefill
                k = self.cache.layers[0].keys
                if k.shape[0] != len(ids) or k.device != ids.device or k.dtype != next(self.trunk.parameters()).dtype:
                    self.cache = None
            self.ids = torch.zeros_like(ids)
            self.length = torch.zeros(len(ids), dtype=torch.long, device=ids.device)
            return torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        pos = torch.arange(ids.shape[1], device=ids.device)
        same_prefix = ((self.ids == ids) | (pos.unsqueeze(0) >= self.length.unsqueeze(1))).all(-1)
        return same_prefix & (self.length == n_real - 1) & (self.length > 0)

    def _step(self, ids: torch.Tensor, mask: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
        """Feed every row its last real token at its own position; keys/values written in place."""
        last = (n_real - 1).unsqueeze(1)  # (N, 1)
        self.cache.set_write_positions(last.squeeze(1))
        if self.compile_step:
            step = compiled_decode_step(ids.device)
            if ids.device.type == "cuda":  # CUDA graphs: each call is a new iteration (outputs are reused)
                torch.compiler.cudagraph_mark_step_begin()
            # clone: a CUDA-graph output is overwritten by the next replay, and the prefill writes into it
            try:
                return step(self.trunk, self.cache, ids.gather(1, last), mask, last, cache_keyword(self.trunk)).clone()
            except Exception as err:  # compile errors are long; say which switch avoids them
                raise RuntimeError(
                    f"compile_decode=True: the compiled decode step failed on {ids.device} ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}). Set compile_decode=False (python -m agents: "
                    "--no-compile-decode) to decode eagerly; on a CPU torch.compile needs a C++ compiler"
                ) from err
        return _decode_step(self.trunk, self.cache, ids.gather(1, last), mask, last, cache_keyword(self.trunk))

    def _prefill_rows(
        self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, n_real: torch.Tensor, hidden: torch.Tensor | None
    ) -> torch.Tensor:
        """Run ``rows``' prefixes (right padded, as the full forward) and copy their keys/values into their slots."""
        nr = n_real[rows]
        width = int(nr.max())
        out, cache = forward_with_cache(
            self.trunk, cache_from_layers([]), input_ids=ids[rows, :width], attention_mask=mask[rows, :width]
        )
        keys, values = cache_layers(cache)
        if self.cache is None:
            self.cache = RowWriteCache.allocate(keys, values, len(ids), self.max_len)
            if self.compile_step and ids.device.type == "cuda":
                # written in place at fixed addresses: CUDA graphs read them where they are instead of
                # copying them in each replay. Dynamo guards on these buffers, so new buffers (another
                # cache) compile once more; a rollout's cache keeps its buffers (see clear)
                for buf in self.keys + self.values:
                    mark_static_address(buf)
        self.cache.write_rows(rows, keys, values)
        h_rows = out.last_hidden_state[torch.arange(len(rows), device=ids.device), nr - 1]
        if hidden is None:
            hidden = h_rows.new_empty(len(ids), h_rows.shape[-1])
        hidden[rows] = h_rows
        return hidden


def _decode_step(
    trunk: nn.Module, cache: RowWriteCache, last_ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, cache_kw: str
) -> torch.Tensor:
    """One token per row at slot ``last``: ``last_ids`` ``(N, 1)``, ``mask`` ``(N, L)``, ``last`` ``(N, 1)``;
    returns the ``(N, D)`` hidden states. The cache's keys/values are written in place. ``cache_kw``:
    :func:`~agents.compat.cache_keyword` of ``trunk``, looked up outside (a compiled graph
    should not trace a cached signature lookup)."""
    out = trunk(input_ids=last_ids, attention_mask=mask, position_ids=last, use_cache=True, **{cache_kw: cache})
    return out.last_hidden_state[:, -1]


def compiled_decode_step(device: torch.device) -> Any:
    """:func:`_decode_step` compiled for ``device``'s kind, once per process: one graph
    (``fullgraph``), static shapes (a new ``N`` or ``L`` compiles once more), CUDA graphs on CUDA
    (``mode="reduce-overhead"``: the decode of a small model is bound by kernel launches)."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(_decode_step, fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED_STEPS[mode]
