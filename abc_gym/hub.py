"""Loading Hugging Face models by local path or hub id, with errors that say what to do offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or Path(name).exists()


def load_pretrained(loader: Any, name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name_or_path, **kwargs)`` with clear errors.

    Args:
        loader: a transformers Auto class (``AutoTokenizer``, ``AutoModelForCausalLM``, ...).
        name_or_path: a local folder or a hub id such as ``"lvwerra/gpt2-imdb"``.
    Raises:
        FileNotFoundError: a local path that does not exist.
        OSError: a hub id that is neither cached nor reachable (e.g. offline), naming the fix.
    """
    name = os.fspath(name_or_path)
    if _looks_local(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model path {name!r} does not exist: pass an existing folder or a hub id")
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as err:
        if Path(name).expanduser().exists():
            raise OSError(f"could not load {loader.__name__} from local folder {name!r}: {err}") from err
        raise OSError(
            f"could not load {name!r} from the Hugging Face hub (offline, or the id is wrong). On a machine with "
            f"network run `hf download {name} --local-dir <folder>` and pass that folder instead of the hub id; "
            f"original error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
