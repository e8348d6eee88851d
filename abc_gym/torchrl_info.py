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

:class:`TensorDictCreditWriteback` writes that credit back over a collected batch's
``("next", "reward")``, a thin tensordict adapter over :class:`abc_gym.CreditWriteback`
(same rule for episodes begun in an earlier batch). Pass it as the collector's ``postproc``::

    from torchrl.collectors import Collector
    from abc_gym.torchrl_info import TensorDictCreditWriteback

    collector = Collector(env, policy, frames_per_batch=256, total_frames=-1,
                          postproc=TensorDictCreditWriteback(env.batch_size))

``GymEnv(id, num_envs=N)``: TorchRL imports set multiprocessing's start method to ``spawn``,
and a spawned worker knows only the gymnasium ids its own imports registered. Name the
module in the id, ``GymEnv("abc_gym:abc_gym/Sentiment-v0", num_envs=N)`` (gymnasium's
``module:id`` form), so each worker imports abc_gym. That env is gymnasium's
``AsyncVectorEnv`` with NEXT_STEP autoreset (TorchRL's ``GymWrapper`` refuses NEXT_STEP,
``GymEnv`` does not check): after each episode's end TorchRL records one extra step whose
action the env ignores (reward 0, ``generated`` 0), which the write-back leaves alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from abc_gym.writeback import CreditWriteback

try:
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.gym_like import BaseInfoDictReader
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("abc_gym.torchrl_info needs torchrl: pip install 'abc_gym[torchrl]'") from err

__all__ = ["CreditInfoReader", "TensorDictCreditWriteback"]

# Read from the step's own info, not final_info: 0 on a NEXT_STEP reset step (no token generated).
STEP_KEYS = ("generated",)


class CreditInfoReader(BaseInfoDictReader):
    """Writes ``score`` (float64), ``num_tokens`` (int64), ``token_rewards`` ((max_new_tokens,) float64) and ``generated`` (int64).

    ``score``, ``num_tokens`` and ``token_rewards`` are set on the step that ends an episode
    (zeros elsewhere); ``generated`` is the step info's count of tokens generated in the
    current episode (0 on a NEXT_STEP vector env's reset step, which generates no token).

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
                "generated": Unbounded(shape, dtype=torch.int64),
            },
            shape=shape,
        )

    @classmethod
    def for_env(cls, env: Any) -> CreditInfoReader:
        """The reader for a TorchRL ``GymEnv`` / ``GymWrapper`` (or a ``TransformedEnv`` over one) of an abc_gym env.

        Reads ``max_new_tokens`` through TorchRL's documented attribute forwarding
        (``env.unwrapped`` is the wrapped gymnasium env's ``unwrapped``), not TorchRL's private ``env._env``.
        """
        inner = env.unwrapped
        if hasattr(inner, "max_new_tokens"):  # gym.make's env, or the batched gym.make_vec env
            return cls(int(inner.max_new_tokens), env.batch_size)
        return cls(int(inner.get_attr("max_new_tokens")[0]), env.batch_size)  # gymnasium Sync/AsyncVectorEnv

    def __call__(self, info_dict: Mapping[str, Any], tensordict: Any) -> Any:
        final = info_dict.get("final_info", info_dict)  # SAME_STEP: the batched env's finished rows
        for key, spec in self._info_spec.items():
            source = info_dict if key in STEP_KEYS else final
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


class TensorDictCreditWriteback:
    """Writes each finished episode's ``token_rewards`` over its steps' ``("next", "reward")`` in a TorchRL batch.

    A thin adapter over :class:`abc_gym.CreditWriteback`: one per env, fed that env's token
    steps (``done`` or ``generated > 0``; a NEXT_STEP reset step is neither and keeps its
    reward). Episodes begun in an earlier batch follow ``spanning`` (``"fold"``: the credit of
    their earlier tokens is added to their first step in this batch, which still sums to R;
    ``"drop"``: it is dropped); episodes still running at the batch's end keep their rewards
    (0.0) until the batch that sees them end. Feed it every batch in order (the collector's
    ``postproc`` does).

    Args:
        batch_size: the env's ``batch_size`` (``()`` for one env, ``(N,)`` for N envs).
        spanning: ``"fold"`` or ``"drop"`` (:class:`abc_gym.CreditWriteback`).
        reward_key: the reward entry to rewrite.

    :attr:`stats`: :class:`abc_gym.CreditWriteback`'s counts summed over the envs.
    """

    def __init__(self, batch_size: Sequence[int] | int = (), spanning: str = "fold", reward_key: Any = ("next", "reward")) -> None:
        shape = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
        self.batch_size = shape
        self.reward_key = reward_key
        self.writebacks = [CreditWriteback(1, "SameStep", spanning) for _ in range(shape.numel())]

    @property
    def stats(self) -> dict[str, int]:
        return {key: sum(w.stats[key] for w in self.writebacks) for key in self.writebacks[0].stats}

    def __call__(self, tensordict: Any) -> Any:
        """Rewrites ``tensordict[reward_key]`` (in place; returned).

        Args:
            tensordict: a collector batch or ``env.rollout()``, shape ``(*batch_size, T)``
                (time last, as TorchRL lays them out), with ``("next", "done")`` and the
                :class:`CreditInfoReader` keys under ``"next"``. Reward ``(*batch_size, T, 1)``.
        """
        nxt = tensordict.get("next")
        missing = [key for key in ("done", "token_rewards", "num_tokens", "generated") if key not in nxt.keys()]
        if missing:
            raise KeyError(
                f"the batch has no ('next', {missing[0]!r}): set the reader on the env first, "
                "env.set_info_dict_reader(CreditInfoReader.for_env(env))"
            )
        if tuple(tensordict.shape[:-1]) != tuple(self.batch_size):
            raise ValueError(
                f"expected a batch of shape (*{tuple(self.batch_size)}, T) (time last), got {tuple(tensordict.shape)}: "
                "create the write-back with the env's batch_size, TensorDictCreditWriteback(env.batch_size)"
            )
        steps = tensordict.shape[-1]
        reward = tensordict.get(self.reward_key)
        flat = reward.reshape(-1, steps)  # (N, T): the reward has one entry per step
        done = nxt.get("done").reshape(-1, steps).cpu()
        token = done | (nxt.get("generated").reshape(-1, steps).cpu() > 0)
        credit = nxt.get("token_rewards").reshape(*done.shape, -1).cpu().numpy()
        num_tokens = nxt.get("num_tokens").reshape(done.shape).cpu().numpy()
        out = flat.detach().clone()
        for env, writeback in enumerate(self.writebacks):
            rows = token[env].nonzero().squeeze(-1)
            infos = [  # CreditWriteback's gymnasium layout for one env; no credit (e.g. a time limit): left as paid
                {"token_rewards": credit[env, t][None], "num_tokens": num_tokens[env, t][None]} if num_tokens[env, t] > 0 else {}
                for t in rows.tolist()
            ]
            out[env, rows] = writeback(flat[env, rows][:, None], done[env, rows][:, None], infos)[:, 0]
        tensordict.set(self.reward_key, out.reshape(reward.shape))
        return tensordict
