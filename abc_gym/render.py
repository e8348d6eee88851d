"""Text rendering of a completion with each token's credit, so a person can see where it went."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

_BLOCKS = " ▏▎▍▌▋▊▉█"


def _bar(value: float, scale: float, width: int = 12) -> str:
    """A bar of ``|value| / scale`` of ``width`` cells, ``+`` side for positive values."""
    if scale <= 0:
        return ""
    cells = abs(value) / scale * width
    full, frac = int(cells), cells - int(cells)
    bar = "█" * full + (_BLOCKS[int(frac * 8)] if full < width and frac > 0 else "")
    return ("+" if value >= 0 else "-") + bar


def render_ansi(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int], completion_ids: Sequence[int], info: dict[str, Any]
) -> str:
    """Prompt, then one line per generated token with its credit and a bar; score last.

    Before the episode ends (no ``token_rewards`` in ``info``) the tokens are shown without credit.
    """
    lines = [f"prompt: {tokenizer.decode(list(prompt_ids))!r}"]
    credit = info.get("token_rewards")
    scale = max((abs(float(c)) for c in credit), default=0.0) if credit is not None else 0.0
    prefix = info.get("prefix_scores")  # RED: the running score R(x, y<=t) beside its difference
    for t, tok in enumerate(completion_ids):
        piece = repr(tokenizer.decode([int(tok)]))
        if credit is None:
            lines.append(f"  {t:3d} {piece:<18}")
        else:
            c = float(credit[t])
            running = "" if prefix is None else f"  R(x,y<={t}) {float(prefix[t]):+8.4f}"
            lines.append(f"  {t:3d} {piece:<18} {c:+9.4f}{running} {_bar(c, scale)}")
    if credit is not None:
        tail = f"R = {info['score']:+.4f}  mode = {info['reward_mode']}"
        if "gold_score" in info:
            tail += f"  gold = {info['gold_score']:+.4f}"
        lines.append(tail)
    return "\n".join(lines)
