"""TorchRL: each finished episode's ``score``, ``num_tokens`` and ``token_rewards`` in the tensordict.

Needs ``torchrl`` (imported here, never by ``import abc_gym``). TorchRL's
``default_info_dict_reader`` must infer a spec from the first step, where the final-step
keys are absent; :class:`CreditInfoReader` declares them instead, with zeros on steps where
no episode ends::

    from torchrl.envs import GymEnv
    from abc_gym.torchrl_info import CreditInfoReader

    env = GymEnv("abc_gym/Sentiment-v0")
    env.set_info_dict_reader(CreditInfoReader.for_env(env))
    td = env.rollout(64, break_when_any_done=False)
    td["next", "token_rewards"]   # (64, max_new_tokens) float64, the credit on each done step

It reads a single env's info, a NEXT_STEP vector env's info (``_key`` masks) and the batched
env's SAME_STEP ``info["final_info"]`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

try:
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.gym_like import BaseInfoDictReader
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("abc_gym.torchrl_info needs torchrl: pip install torchrl") from err

__all__ = ["CreditInfoReader"]


class CreditInfoReader(BaseInfoDictReader):
    """Writes ``score`` (float64), ``num_tokens`` (int64) and ``token_rewards`` ((max_new_tokens,) float64).

    Args:
        max_new_tokens: the env's ``max_new_tokens`` (the padded length of ``token_rewards``).
        batch_size: the TorchRL env's ``batch_size``: ``()`` for one env, ``(N,)`` for a vector env.
    """

    def __init__(self, max_new_tokens: int, batch_size: Sequence[int] = ()) -> None:
        shape = torch.Size(batch_size)
        self._info_spec = Composite(
            {
                "score": Unbounded(shape, dtype=torch.float64),
                "num_tokens": Unbounded(shape, dtype=torch.int64),
                "token_rewards": Unbounded((*shape, max_new_tokens), dtype=torch.float64),
            },
            shape=shape,
        )

    @classmethod
    def for_env(cls, env: Any) -> CreditInfoReader:
        """The reader for a TorchRL ``GymEnv`` / ``GymWrapper`` over an abc_gym env."""
        inner = env._env.unwrapped  # TorchRL's wrapped gymnasium env
        return cls(int(inner.max_new_tokens if hasattr(inner, "max_new_tokens") else inner.get_attr("max_new_tokens")[0]), env.batch_size)

    def __call__(self, info_dict: Mapping[str, Any], tensordict: Any) -> Any:
        source = info_dict.get("final_info", info_dict)  # SAME_STEP: the batched env's finished rows
        for key, spec in self._info_spec.items():
            value = spec.zero()
            if key in source:
                got = torch.as_tensor(np.asarray(source[key]), dtype=spec.dtype).reshape(spec.shape)
                mask = source.get(f"_{key}")
                if mask is not None:  # vector envs: rows without a finished episode stay 0
                    keep = torch.as_tensor(np.asarray(mask, dtype=bool)).reshape(*mask.shape, *[1] * (got.dim() - 1))
                    got = torch.where(keep, got, torch.zeros_like(got))
                value = got
            tensordict.set(key, value)
        return tensordict

    @property
    def info_spec(self) -> Composite:
        return self._info_spec
