"""Token observations as the agents read them: the space check, exact ids, last real token, the trunk.

Observation: ``{"input_ids": (B, L), "attention_mask": (B, L)}`` laid out ``[prompt | generated | pad]``
(right padding, as the abc_gym token envs give it).
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import nn
from transformers import PreTrainedModel

FLOAT_EXACT_IDS = 2**24  # float32 represents every integer below this exactly


def check_token_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise a clear ``ValueError`` unless the spaces are those of an abc_gym token env."""
    ok = (
        isinstance(observation_space, spaces.Dict)
        and {"input_ids", "attention_mask"} <= set(observation_space.spaces)
        and isinstance(action_space, spaces.Discrete)
    )
    if not ok:
        raise ValueError(
            "agents need a token env: observation Dict with 'input_ids' and 'attention_mask' and a Discrete "
            f"action space of token ids (e.g. gym.make('abc_gym/Sentiment-v0')); got observation {observation_space} "
            f"and action {action_space}"
        )


def as_token_ids(x: torch.Tensor) -> torch.Tensor:
    """Token ids as ``long``; float inputs (SB3 buffers may store obs as float32) are checked exact.

    Args:
        x: ``(B, L)`` ids, integer or float.
    """
    if not x.is_floating_point():
        return x.long()
    if x.numel() and float(x.max()) >= FLOAT_EXACT_IDS:
        raise ValueError(
            f"token id {int(x.max())} >= 2**24 stored as float32 is not exact: keep observations as int64 "
            "(use a DictRolloutBuffer with the env's int64 observation space)"
        )
    ids = x.round().long()
    if not torch.equal(ids.to(x.dtype), x):
        raise ValueError("observation token ids are not integers: the observation is not a token-id observation")
    return ids


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index of each row's last real token (right padding). ``mask``: ``(B, L)``."""
    n = mask.long().sum(-1)
    if bool((n == 0).any()):
        raise ValueError("an observation has no real token (all-zero attention_mask)")
    return n - 1


def base_of(model: PreTrainedModel) -> nn.Module:
    """The trunk that returns ``last_hidden_state`` (e.g. ``GPT2LMHeadModel.transformer``)."""
    return model.base_model if model.base_model is not model else model
