"""Argument checks shared by every env front end: each error names the argument, the value and the allowed range."""

from __future__ import annotations

import math
import numbers
import os
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


# ---------------------------------------------------------------- env sources (checked before any load)
def check_prompts_source(prompts: Any) -> None:
    """``prompts`` given as a path: not empty, and a file readable as UTF-8 text (others are checked on load)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = os.fspath(prompts)
        if not path.strip():
            raise ValueError(
                f"prompts={prompts!r} is an empty path: pass a list of strings, a .json file or a .txt file (one per line)"
            )
        if os.path.isfile(path):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"prompts={path!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}): "
                    "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from err


def check_model_source(name: str, value: Any, what: str) -> None:
    """A local ``policy`` / ``reward_model`` path is a checkpoint directory with a ``config.json``.

    Hub ids and paths that do not exist are left to the loader (which names ``hf download``).
    """
    if not isinstance(value, (str, os.PathLike)):
        return
    path = os.fspath(value)
    if os.path.isfile(path):
        raise ValueError(
            f"{name}={path!r} is a file; pass the {what} checkpoint's directory (config.json, weights and tokenizer "
            "files, as save_pretrained writes them) or a hub id"
        )
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        present = sorted(os.listdir(path))[:8]
        raise ValueError(
            f"{name}={path!r} has no config.json (it holds {present}): pass a directory written by "
            f"save_pretrained of the {what} (model and tokenizer), or a hub id"
        )


# Keywords RewardModel.from_pretrained reads itself, and the transformers loading options it forwards.
REWARD_MODEL_KWARGS = ("positive_label", "pooling", "attention_source")
REWARD_MODEL_LOAD_KWARGS = ("revision", "dtype", "torch_dtype", "cache_dir", "local_files_only", "token", "subfolder", "trust_remote_code")


def check_reward_model_kwargs(kwargs: dict[str, Any]) -> None:
    """Every key of ``reward_model_kwargs`` is one :meth:`RewardModel.from_pretrained` understands."""
    unknown = [k for k in kwargs if k not in REWARD_MODEL_KWARGS + REWARD_MODEL_LOAD_KWARGS]
    if unknown:
        raise TypeError(
            f"reward_model_kwargs={kwargs!r}: unknown key(s) {unknown}; RewardModel.from_pretrained takes "
            f"{', '.join(REWARD_MODEL_KWARGS)} (and transformers' {', '.join(REWARD_MODEL_LOAD_KWARGS)})"
        )


def check_device_kind(name: str, device: Any) -> None:
    """Refuse device kinds abc_gym cannot run on here: ``meta`` (no data) and ``mps`` where MPS is absent."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0] if isinstance(device, str) else None
    if kind == "meta":
        raise ValueError(
            f"{name}={str(device)!r}: the meta device holds shapes, not values, so no model can score on it; "
            "use device='cpu', 'cuda' or 'auto'"
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(
            f"{name}={str(device)!r} but MPS (Apple-silicon GPU) is not available on this machine: "
            "use device='cpu', or device='auto' (CUDA when available, else CPU)"
        )


# ---------------------------------------------------------------- what user functions return
def check_gold_score(value: Any, text: str) -> float:
    """A ``gold_scorer``'s return value as a finite float (NaN / inf / non-numbers are errors, never stored)."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and (value.size if isinstance(value, np.ndarray) else value.numel()) == 1:
        value = value.item()  # a one-element array or tensor is one number
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"gold_scorer returned {_shown(value)} for the completion {text[:60]!r}: it must return one float "
            "(text -> float)"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"gold_scorer returned {value} for the completion {text[:60]!r}: a gold score must be finite "
            "(return a number, e.g. 0.0, for text it cannot judge)"
        )
    return value


def check_gold_credit(spans: Any, text: str) -> list[tuple[int, int, float]]:
    """A ``gold_credit``'s return value as ``[(start_char, end_char, weight), ...]`` with finite weights >= 0."""
    what = "a list of (start_char, end_char, weight) triples (text -> [(start, end, weight)])"
    if spans is None or isinstance(spans, (str, bytes)) or not hasattr(spans, "__iter__"):
        raise TypeError(f"gold_credit returned {_shown(spans)} for the completion {text[:60]!r}: it must return {what}")
    out = []
    for k, item in enumerate(spans):
        ok = isinstance(item, (tuple, list)) and len(item) == 3
        if ok:
            start, end, weight = item
            ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, end)) and (
                isinstance(weight, numbers.Real) and not isinstance(weight, bool)
            )
        if not ok:
            raise TypeError(
                f"gold_credit returned {_shown(item)} at index {k} for the completion {text[:60]!r}: it must return {what}"
            )
        if not (math.isfinite(float(weight)) and weight >= 0):
            raise ValueError(
                f"gold_credit returned weight {weight} at index {k} for the completion {text[:60]!r}: weights must be "
                "finite and >= 0"
            )
        out.append((int(start), int(end), float(weight)))
    return out
