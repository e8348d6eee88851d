"""The layout of an episode's final-step ``info`` (the reward contract's data), and its readers.

Every front end (``gym.make``, ``gym.make_vec`` in each vectorization mode, the SB3
``VecEnv``) gives a finished episode's per-token arrays one fixed shape,
``(max_new_tokens,)``, so that gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` (which
stack each info key into one ``(num_envs, ...)`` array), TorchRL's info readers and
``np.stack`` can batch episodes of different lengths:

- ``info["num_tokens"]``: ``np.int64`` T, the completion's length;
- ``info[k][:T]`` for each ``k`` in :data:`PER_TOKEN_KEYS` present, the values; past T,
  padding: ``0.0`` for the float arrays (so ``token_rewards.sum()`` is still R) and
  :data:`ID_PAD` (``-1``, never a token id) for ``completion_ids``.

Read the unpadded arrays with :func:`episode_token_rewards` or :func:`unpad_episode`
instead of ``len(info["token_rewards"])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ID_PAD", "PER_TOKEN_KEYS", "episode_token_rewards", "pad_episode_info", "unpad_episode"]

# Per-token arrays of a final info: one value per generated token, padded to max_new_tokens.
PER_TOKEN_KEYS: tuple[str, ...] = ("token_rewards", "completion_ids", "attention", "gold_credit", "prefix_scores")
ID_PAD = -1  # padding of completion_ids: not a token id, so a padded id cannot be decoded by mistake


def pad_episode_info(info: dict[str, Any], width: int) -> dict[str, Any]:
    """``info`` with each per-token array padded to ``(width,)`` and ``num_tokens`` set (in place; returned).

    Args:
        info: one episode's final info, per-token arrays of shape ``(T,)``, ``T <= width``.
        width: ``max_new_tokens`` of the env.
    """
    num_tokens = len(info["token_rewards"])
    if num_tokens > width:
        raise ValueError(f"an episode of {num_tokens} tokens cannot be padded to max_new_tokens={width}")
    for key in PER_TOKEN_KEYS:
        if key in info and info[key] is not None:
            values = np.asarray(info[key])
            fill = ID_PAD if key == "completion_ids" else 0
            padded = np.full(width, fill, dtype=values.dtype)
            padded[:num_tokens] = values
            info[key] = padded
    info["num_tokens"] = np.int64(num_tokens)
    return info


def episode_token_rewards(info: Mapping[str, Any]) -> np.ndarray:
    """``(T,)`` float64: the finished episode's credit per generated token, padding cut off.

    Args:
        info: one env's final-step info (``gym.make``'s ``info``, one row of a vector env's
            ``final_info``, or an SB3 ``infos[i]``).
    """
    if "token_rewards" not in info:
        raise KeyError(
            "this info has no 'token_rewards': pass the final step's info of a finished abc_gym episode "
            "(a vector env puts it in info['final_info'] under SAME_STEP autoreset)"
        )
    values = np.asarray(info["token_rewards"], dtype=np.float64)
    return values[: int(info["num_tokens"])] if "num_tokens" in info else values


def unpad_episode(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of one finished episode's info with every per-token array cut to its ``(T,)`` values."""
    out = dict(info)
    if "num_tokens" not in info:
        return out
    num_tokens = int(info["num_tokens"])
    for key in PER_TOKEN_KEYS:
        if key in out and out[key] is not None:
            out[key] = np.asarray(out[key])[:num_tokens]
    return out
