"""Dense credit for stable_baselines3's own on-policy algorithms (PPO, A2C, sb3-contrib's too).

Stock SB3 trains on the rewards its VecEnv returns: 0.0 on every token of an abc_gym episode
but the last. :class:`DenseCreditCallback` rewrites the rollout buffer's rewards with each
episode's ``token_rewards`` (via :class:`abc_gym.writeback.CreditWriteback`) and recomputes
returns and advantages, so any ``OnPolicyAlgorithm`` learns from the dense credit::

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from agents.sb3_credit import DenseCreditCallback

    env = make_vec_env("abc_gym/Sentiment-v0", n_envs=4, env_kwargs={"device": "cpu"})
    PPO("MultiInputPolicy", env, n_steps=64).learn(2048, callback=DenseCreditCallback())

Why at ``on_rollout_end``: SB3's ``collect_rollouts`` calls ``compute_returns_and_advantage``
before ``callback.on_rollout_end()``, so the callback writes the rewards and then calls
``compute_returns_and_advantage`` again with the same ``last_values`` / ``dones``.
Episodes still running when a rollout ends get their credit in the rollout that sees them
end; their earlier tokens' credit is folded onto their first step there (``spanning``, see
:mod:`abc_gym.writeback`), counted in the logger under ``credit/``.

Not with ``VecNormalize(norm_reward=True)``: the buffer would hold normalised rewards and
the credit raw ones (refused at the start of training).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from abc_gym.writeback import CreditWriteback

__all__ = ["DenseCreditCallback"]


class DenseCreditCallback(BaseCallback):
    """Write abc_gym's per-token credit into an SB3 on-policy rollout buffer (module doc).

    :param spanning: ``"fold"`` or ``"drop"``: the rule for episodes begun in an earlier rollout.
    :param verbose: SB3's verbosity.

    :attr:`writeback` holds the counts (``writeback.stats``) after training.
    """

    def __init__(self, spanning: str = "fold", verbose: int = 0) -> None:
        super().__init__(verbose)
        self.spanning = spanning
        self.writeback: CreditWriteback | None = None
        self._ends: list[np.ndarray] = []
        self._infos: list[Any] = []

    def _on_training_start(self) -> None:
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise TypeError(
                f"DenseCreditCallback rewrites an on-policy rollout buffer; {type(self.model).__name__} is not an "
                "OnPolicyAlgorithm (PPO, A2C, ...): off-policy learners need the credit written into their replay buffer"
            )
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None and vec_normalize.norm_reward:
            raise ValueError(
                "DenseCreditCallback with VecNormalize(norm_reward=True): the buffer holds normalised rewards and the "
                "credit is raw; use VecNormalize(..., norm_reward=False)"
            )
        if self.writeback is None:  # kept across learn() calls: open episodes continue
            self.writeback = CreditWriteback(self.training_env.num_envs, "SameStep", self.spanning)

    def _on_rollout_start(self) -> None:
        self._ends, self._infos = [], []

    def _on_step(self) -> bool:
        # Called before the step is added to the buffer: step k of the rollout is buffer row k.
        self._ends.append(np.asarray(self.locals["dones"], dtype=bool).copy())
        self._infos.append(self.locals["infos"])
        return True

    def _on_rollout_end(self) -> None:
        assert self.writeback is not None
        buffer = self.model.rollout_buffer
        steps = len(self._ends)
        if steps == 0:
            return
        rewards = self.writeback(buffer.rewards[:steps], np.stack(self._ends), self._infos)
        buffer.rewards[:steps] = rewards
        # SB3 computed returns from the sparse rewards just before this hook: recompute them.
        buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        for key, value in self.writeback.last_stats.items():
            self.logger.record_mean(f"credit/{key}", value)
