"""torch's private helpers used by the agents, in one place (checked on torch 2.3 - 2.13).

- ``torch._dynamo.mark_static_address``: a buffer written in place at a fixed address, so a
  CUDA-graph replay reads it where it is instead of copying it in (:func:`mark_static_address`).
- ``torch._assert_async``: a device-side assert, no host sync (:func:`assert_async`).
- ``torch.autograd.Variable._execution_engine.queue_callback``: run a function once the
  current backward pass has finished (:func:`queue_after_backward`), used to all-reduce the
  gradients of a whole backward at once under torchrun.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def mark_static_address(tensor: torch.Tensor) -> None:
    """Tell torch.compile (CUDA graphs) that ``tensor`` keeps its address across calls."""
    torch._dynamo.mark_static_address(tensor)


def assert_async(condition: torch.Tensor, message: str) -> None:
    """Fail on the device when the bool scalar ``condition`` is False, without a host sync."""
    torch._assert_async(condition, message)


def queue_after_backward(callback: Callable[[], None]) -> None:
    """Run ``callback`` after the backward pass in progress has finished (call from a grad hook)."""
    torch.autograd.Variable._execution_engine.queue_callback(callback)
