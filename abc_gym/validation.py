"""Argument checks shared by every env front end: each error names the argument, the value and the allowed range."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` (Python or numpy integer, not bool) in ``[low, high]``.

    Raises:
        TypeError: not an integer (floats such as ``1.5`` or ``2.0``, strings, bools).
        ValueError: outside ``[low, high]``.
    """
    bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in {bounds}, got {_shown(value)}{hint}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int in {bounds}, got {value}{hint}")
    return value


def check_real(name: str, value: Any, *, low: float, high: float, hint: str = "") -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (ints and numpy floats accepted, bools and strings not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {_shown(value)}{hint}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}{hint}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` (Python or numpy bool only: ``0`` / ``"yes"`` are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


def check_callable(name: str, value: Any, what: str) -> Any:
    """``None`` or a callable ``what`` (e.g. ``"text -> float"``)."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be None or a function {what}, got {_shown(value)}")
    return value


def check_actions(actions: Any, num_rows: int, vocab_size: int, *, scalar_ok: bool = False) -> torch.Tensor:
    """Token-id actions as a ``(num_rows,)`` int64 tensor (on the input's device for tensors).

    Valid: integer dtypes (Python ints, numpy signed/unsigned, torch integer tensors; not bool)
    with every value in ``[0, vocab_size)`` and shape ``(num_rows,)`` (``scalar_ok``: also a
    scalar, for the single env).

    Raises:
        TypeError: ``None``, strings, bools, floats, complex or object values, naming the dtype.
        ValueError: a wrong shape (``[[1], [2], [3]]`` for 3 envs) or ids outside ``[0, vocab_size)``.
    """
    allowed = f"token ids: integers in [0, {vocab_size})"
    if actions is None or isinstance(actions, (str, bytes)):
        raise TypeError(f"actions must be {allowed}, got {_shown(actions)}")
    if isinstance(actions, torch.Tensor):
        if actions.dtype == torch.bool or actions.is_floating_point() or actions.is_complex():
            raise TypeError(f"actions must be {allowed} with an integer dtype, got a tensor of dtype {actions.dtype}")
        values = actions.long()  # before comparing: torch casts 1907 to uint8 in `uint8_tensor >= 1907`
    else:
        try:
            arr = np.asarray(actions)
        except (ValueError, OverflowError) as err:  # ragged nesting, ints beyond 64 bits
            raise ValueError(f"actions must be {allowed}, got {actions!r}: {err}") from err
        if arr.dtype.kind not in "iu":
            raise TypeError(f"actions must be {allowed} with an integer dtype, got {actions!r} of dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):  # checked before any int64 cast wraps
            bad = arr[(arr < 0) | (arr >= vocab_size)].tolist()
            raise ValueError(
                f"action(s) {bad} outside the action space [0, {vocab_size}): actions are token ids of the policy's tokenizer"
            )
        values = torch.from_numpy(arr.astype(np.int64))
    if scalar_ok and values.ndim == 0:
        values = values.reshape(1)
    if tuple(values.shape) != (num_rows,):
        raise ValueError(
            f"expected {num_rows} action(s), one token id per env (shape ({num_rows},)), got shape {tuple(values.shape)}"
        )
    if values.numel() and bool(((values < 0) | (values >= vocab_size)).any()):
        bad = values[(values < 0) | (values >= vocab_size)].tolist()
        raise ValueError(
            f"action(s) {bad} outside the action space [0, {vocab_size}): actions are token ids of the policy's tokenizer"
        )
    return values
