"""Prompt lists: given inline, or read from a ``.json`` / ``.txt`` file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

_FORMS = 'a list of strings, a .json file (a list, or an object with a "prompts" list) or a .txt file (one per line)'


def _read_file(path: Path) -> object:
    if path.is_dir():
        raise ValueError(f"prompts={str(path)!r} is a directory: pass a file, {_FORMS}")
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist: pass {_FORMS}")
    if path.suffix != ".json":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompts file {str(path)!r} is not valid JSON ({err}): pass {_FORMS}") from err
    if isinstance(loaded, dict):  # {"prompts": [...]} with metadata beside it
        if "prompts" not in loaded:
            raise ValueError(
                f"prompts file {str(path)!r} is a JSON object without a \"prompts\" key (keys: {sorted(loaded)[:10]}): "
                f"pass {_FORMS}"
            )
        loaded = loaded["prompts"]
    return loaded


def load_prompt_list(prompts: Sequence[str] | str | os.PathLike) -> list[str]:
    """Prompts as a non-empty list of strings, from a list or a ``.json`` / ``.txt`` file path.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a directory, a JSON object without ``"prompts"``, an empty list or a
            non-string entry (named by its index).
        TypeError: neither a path nor a sequence of strings.
    """
    source = prompts
    if isinstance(prompts, (str, os.PathLike)):
        source = _read_file(Path(prompts))
    if not isinstance(source, Sequence) or isinstance(source, (str, bytes)):
        raise TypeError(f"prompts must be {_FORMS}, got {type(source).__name__}")
    items = list(source)
    if not items:
        raise ValueError(f"prompts is empty: pass {_FORMS} with at least one prompt")
    bad = next((i for i, p in enumerate(items) if not isinstance(p, str)), None)
    if bad is not None:
        raise ValueError(f"prompts[{bad}] is {items[bad]!r} ({type(items[bad]).__name__}): every prompt must be a string")
    return items
