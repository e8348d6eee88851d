"""stable-baselines3 / sb3-contrib internals used by agents, in one place.

Checked against stable-baselines3 and sb3-contrib 2.6.0 (the declared floor) and 2.9.2.

- ``MaskableCategorical.apply_masking`` re-runs ``Categorical.__init__`` while the probs
  of the unmasked logits are still cached. sb3-contrib before 2.8 leaves them there, and
  torch's argument validation then rejects them when float32 rounding puts their sum more
  than 1e-6 from 1 (many categories, torch >= 2.9): every token-level MaskablePPO step
  fails. sb3-contrib 2.8 drops the cache first; :func:`apply_action_masks` does the same
  on every version.
"""

from __future__ import annotations

from typing import Any


def apply_action_masks(dist: Any, masks: Any) -> None:
    """``dist.apply_masking(masks)`` for a ``MaskableCategoricalDistribution`` without stale cached probs."""
    inner = getattr(dist, "distribution", None)
    if inner is not None:
        inner.__dict__.pop("probs", None)  # lazy_property cache; recomputed from the masked logits
    dist.apply_masking(masks)
