"""Every private name of an upstream library that the agents use, one module per library.

- :mod:`agents.compat.sb3`: stable-baselines3 / sb3-contrib internals (re-exported here, so
  ``from agents import compat; compat.progress_remaining(model)`` reads as before);
- :mod:`agents.compat.transformers`: the fixed-shape per-row decoder cache (``RowWriteCache``)
  built on transformers' cache classes;
- :mod:`agents.compat.torch`: torch's private helpers (static addresses for CUDA graphs, the
  device-side assert, the autograd engine's end-of-backward callback).

Each module names the versions its items were checked against. Code outside ``compat`` uses
public names only.
"""

from agents.compat.sb3 import (
    append_csv_format,
    apply_action_masks,
    buffer_samples,
    count_gradient_epoch,
    deferred_dump,
    progress_remaining,
    set_progress_remaining,
    trpo_actor_gradients,
)
from agents.compat.torch import queue_after_backward

__all__ = [
    "append_csv_format",
    "apply_action_masks",
    "buffer_samples",
    "count_gradient_epoch",
    "deferred_dump",
    "progress_remaining",
    "queue_after_backward",
    "set_progress_remaining",
    "trpo_actor_gradients",
]
