"""stable-baselines3 / sb3-contrib internals used by agents, in one place (``agents.compat.sb3``).

Each item was checked against stable-baselines3 and sb3-contrib 2.6.0 (the declared floor)
and 2.9.2 (the newest tested). Protected members that SB3 subclasses normally use
(``self._last_obs``, ``_setup_model``, ``_excluded_save_params``, ...) stay in the classes.

- ``MaskableCategorical.apply_masking`` re-runs ``Categorical.__init__`` while the probs
  of the unmasked logits are still cached. sb3-contrib before 2.8 leaves them there, and
  torch's argument validation then rejects them when float32 rounding puts their sum more
  than 1e-6 from 1 (many categories, torch >= 2.9): every token-level MaskablePPO step
  fails. sb3-contrib 2.8 drops the cache first; :func:`apply_action_masks` does the same
  on every version.
- ``BaseAlgorithm._current_progress_remaining`` (1 -> 0 over ``learn``): read by every
  schedule (``lr_schedule``, ``clip_range``); written by ``_update_current_progress_remaining``,
  which ``OnPolicyAlgorithm.learn`` and ``MaskablePPO.learn`` call after each rollout,
  before ``dump_logs`` and ``train`` (2.6.0 - 2.9.2): :func:`progress_remaining`,
  :func:`set_progress_remaining`.
- ``BaseAlgorithm._n_updates``: gradient-step counter logged as ``train/n_updates``
  (PPO counts epochs): :func:`count_gradient_epoch`.
- ``OnPolicyAlgorithm.dump_logs(iteration)`` records ``time/*`` and ``rollout/*`` and then
  calls ``logger.dump``, before ``train``: :func:`deferred_dump` keeps the records and
  skips the dump, so the update's row is written once, after the update.
- ``TRPO._compute_actor_grad(kl_div, policy_objective)`` returns ``(actor_params,
  policy_objective_gradients, grad_kl, grad_shape)``; sb3-contrib picks the actor's
  parameters by name (``"value" not in name``), which drops GPT-NeoX's ``query_key_value``:
  :func:`trpo_actor_gradients` takes the parameters by identity instead.
- ``RolloutBuffer._get_samples(batch_inds)`` (``DictRolloutBuffer`` / ``MaskableDictRolloutBuffer``
  too): the minibatch of flat indices ``batch_inds``, as ``get`` yields it: :func:`buffer_samples`.
- ``stable_baselines3.common.logger.CSVOutputFormat`` (``file``, ``keys``, ``separator``,
  ``quotechar``) always truncates ``progress.csv``: :func:`append_csv_format` continues it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import CSVOutputFormat, Logger


def apply_action_masks(dist: Any, masks: Any) -> None:
    """``dist.apply_masking(masks)`` for a ``MaskableCategoricalDistribution`` without stale cached probs."""
    inner = getattr(dist, "distribution", None)
    if inner is not None:
        inner.__dict__.pop("probs", None)  # lazy_property cache; recomputed from the masked logits
    dist.apply_masking(masks)


def progress_remaining(model: Any) -> float:
    """SB3's training progress, 1 at the start of ``learn`` and 0 at its end (what schedules read)."""
    return float(model._current_progress_remaining)


def set_progress_remaining(model: Any, value: float) -> None:
    """Set the progress every schedule of ``model`` reads (clamped to [0, 1])."""
    model._current_progress_remaining = min(1.0, max(0.0, float(value)))


def count_gradient_epoch(model: Any) -> int:
    """``model._n_updates += 1`` (SB3's counter behind ``train/n_updates``); returns the new count."""
    model._n_updates += 1
    return int(model._n_updates)


@contextlib.contextmanager
def deferred_dump(logger: Logger) -> Iterator[None]:
    """Within the block, ``logger.record`` keeps working and ``logger.dump`` does nothing."""
    logger.dump = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del logger.dump  # back to the class's method


def trpo_actor_gradients(
    kl_div: th.Tensor, policy_objective: th.Tensor, params: Sequence[th.nn.Parameter]
) -> tuple[list[th.nn.Parameter], th.Tensor, th.Tensor, list[th.Size]]:
    """sb3-contrib ``TRPO._compute_actor_grad``'s result for the given actor parameters.

    One autograd call over all ``params`` (sb3-contrib makes one per parameter: ~100
    backward passes through an LM per update; the result is the same). Parameters the KL
    does not depend on are left out, as sb3-contrib does.

    :param kl_div: scalar KL(old || new) of the minibatch, with a graph.
    :param policy_objective: scalar surrogate objective, with a graph.
    :param params: the actor's parameters (chosen by identity, not by name).
    :return: ``actor_params``, ``policy_objective_gradients`` ``(P,)``, ``grad_kl`` ``(P,)``
        (with graph, for the Hessian-vector products) and each parameter's gradient shape.
    """
    params = [p for p in params if p.requires_grad]
    grads_kl = th.autograd.grad(kl_div, params, create_graph=True, retain_graph=True, allow_unused=True)
    used = [(p, g) for p, g in zip(params, grads_kl) if g is not None]
    actor_params = [p for p, _ in used]
    grads_obj = th.autograd.grad(policy_objective, actor_params, retain_graph=True)
    grad_kl = th.cat([g.reshape(-1) for _, g in used])
    policy_objective_gradients = th.cat([g.reshape(-1) for g in grads_obj])
    return actor_params, policy_objective_gradients, grad_kl, [g.shape for _, g in used]


def append_csv_format(filename: str) -> CSVOutputFormat:
    """SB3's CSV writer continuing an existing ``progress.csv`` (header kept) instead of truncating it."""
    if not os.path.exists(filename) or os.path.getsize(filename) == 0:
        return CSVOutputFormat(filename)
    fmt = CSVOutputFormat.__new__(CSVOutputFormat)
    fmt.file = open(filename, "r+")  # noqa: SIM115  (closed by the logger)
    header = fmt.file.readline().rstrip("\n")
    fmt.keys = header.split(",") if header else []
    fmt.separator, fmt.quotechar = ",", '"'
    fmt.file.seek(0, os.SEEK_END)
    return fmt


def buffer_samples(buffer: Any, indices: np.ndarray) -> Any:
    """The buffer's minibatch of flat ``indices`` (after ``prepare_flat``), the named tuple its ``get`` yields."""
    return buffer._get_samples(indices)
