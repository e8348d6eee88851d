"""Dense credit for any learner: write each episode's ``token_rewards`` back over its steps.

abc_gym envs pay 0.0 on every step but an episode's last, which pays R; the final step's
``info["token_rewards"][:num_tokens]`` holds the credit of each generated token. A learner
that wants dense rewards replaces, after a rollout, the rewards of an episode's steps with
that credit. :class:`CreditWriteback` does it for rollouts stored CleanRL-style as
``(T, N)`` arrays or tensors (and for SB3's list-of-dicts infos)::

    writeback = CreditWriteback(envs.num_envs, autoreset_mode=envs.autoreset_mode)
    for update in range(num_updates):
        for step in range(T):
            ...
            next_obs, reward, terminations, truncations, infos = envs.step(action)
            rewards[step] = reward
            ends[step] = terminations | truncations   # NOT CleanRL's shifted `dones` buffer
            step_infos.append(infos)
        rewards = writeback(rewards, ends, step_infos)   # before computing returns / GAE

Episodes that span rollouts (begun in an earlier rollout, so the steps of their first tokens
were already trained on): their steps in this rollout get the credit of their own tokens;
the credit of the earlier tokens (the "head") cannot be written where it belongs. Rule,
chosen by ``spanning``:

- ``"fold"`` (default): the head's credit is added to the episode's first step in this
  rollout, so the episode's rewards in this rollout still sum to R (what the env paid);
- ``"drop"``: the head's credit is dropped (this rollout sees R minus the head).

Either way the episodes and head tokens are counted in :attr:`CreditWriteback.stats`. Nothing
is carried silently: the object carries only how many tokens each env's open episode has
generated so far, so the next call knows its head length.

Autoreset: under ``SAME_STEP`` (abc_gym's ``make_vec``, SB3's VecEnvs) every step generates a
token and the final info is in ``info["final_info"]``; under ``NEXT_STEP`` (gymnasium's
``SyncVectorEnv`` / ``AsyncVectorEnv`` default) the step after an episode's end is its reset
step (no token; its reward is left alone) and the final info is the step's own ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from abc_gym.infos import episode_token_rewards

__all__ = ["CreditWriteback", "write_back_credit"]

SPANNING_RULES = ("fold", "drop")


def _mode_name(mode: Any) -> str:
    """``"SameStep"`` or ``"NextStep"`` from a gymnasium ``AutoresetMode``, its value or its name."""
    value = getattr(mode, "value", mode)
    names = {"samestep": "SameStep", "same_step": "SameStep", "nextstep": "NextStep", "next_step": "NextStep"}
    name = names.get(str(value).lower()) if isinstance(value, str) else None
    if name is None:
        raise ValueError(
            f"autoreset_mode={mode!r}: the credit write-back handles gymnasium's SAME_STEP and NEXT_STEP autoreset "
            "(pass envs.autoreset_mode); DISABLED has no autoreset to follow"
        )
    return name


def _final_info(info: Any, env: int) -> Mapping[str, Any] | None:
    """Env ``env``'s final-step info inside one step's ``info`` (gymnasium dict or SB3 list), if it has credit."""
    if isinstance(info, Mapping):
        if "final_info" in info and bool(np.asarray(info.get("_final_info", np.ones(env + 1, bool)))[env]):
            info = info["final_info"]  # SAME_STEP
        mask = info.get("_token_rewards")
        if "token_rewards" not in info or (mask is not None and not bool(mask[env])):
            return None
        return {key: info[key][env] for key in ("token_rewards", "num_tokens") if key in info}
    one = info[env]  # SB3: a list of per-env dicts
    return one if isinstance(one, Mapping) and "token_rewards" in one else None


class CreditWriteback:
    """Rewrites a rollout's rewards with each finished episode's per-token credit (module doc).

    Args:
        num_envs: N, the number of envs stepped together.
        autoreset_mode: the vector env's ``autoreset_mode`` (gymnasium ``AutoresetMode`` or its
            value): ``SAME_STEP`` (abc_gym's ``make_vec``, SB3 VecEnvs) or ``NEXT_STEP``.
        spanning: ``"fold"`` or ``"drop"``, the rule for episodes begun in an earlier rollout.

    Create it right after ``envs.reset()`` and feed it every rollout in order. Until an env's
    first episode ends, that episode may have begun before the first call (its length is then
    read off ``num_tokens``); after that every episode's steps are checked against its
    ``num_tokens`` and a mismatch (a wrong ``autoreset_mode``, a skipped step) is an error.

    :attr:`stats`: cumulative counts ``episodes`` (credit written), ``spanning_episodes``,
    ``head_tokens`` (their tokens in earlier rollouts, folded or dropped), ``no_credit_episodes``
    (ended without ``token_rewards``, e.g. truncated by a ``TimeLimit``: left as paid).
    :attr:`last_stats`: the same for the latest call.
    """

    def __init__(self, num_envs: int, autoreset_mode: Any = "SameStep", spanning: str = "fold") -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if spanning not in SPANNING_RULES:
            raise ValueError(f"spanning={spanning!r}: use 'fold' (keep R in this rollout) or 'drop' (module doc)")
        self.num_envs = int(num_envs)
        self.next_step = _mode_name(autoreset_mode) == "NextStep"
        self.spanning = spanning
        self._carried: list[int | None] = [None] * self.num_envs  # tokens of the open episode in earlier rollouts
        self._reset_next = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: the env's next step is its reset
        self.stats = dict.fromkeys(("episodes", "spanning_episodes", "head_tokens", "no_credit_episodes"), 0)
        self.last_stats = dict(self.stats)

    def __call__(self, rewards: Any, ends: Any, infos: Sequence[Any]) -> Any:
        """The rollout's rewards with the credit written back.

        Args:
            rewards: ``(T, N)`` numpy array or torch tensor, the rewards the env returned.
            ends: ``(T, N)`` bool (array or tensor): whether step t ended env i's episode
                (``terminated | truncated`` as that step returned them).
            infos: the ``T`` infos the steps returned (gymnasium's dict of arrays, or SB3's list
                of N dicts).
        Returns:
            A new ``(T, N)`` array or tensor (same type, dtype and device as ``rewards``).
            Steps of episodes still running at the rollout's end keep their rewards (0.0); their
            credit is written by the call that sees them end (the rule for spanning episodes).
        """
        values = _to_numpy(rewards).astype(np.float64)
        done = _to_numpy(ends).astype(bool)
        steps, n = values.shape if values.ndim == 2 else (None, None)
        if values.ndim != 2 or n != self.num_envs or done.shape != values.shape or len(infos) != steps:
            raise ValueError(
                f"expected rewards and ends of shape (T, {self.num_envs}) and T infos, got rewards {values.shape}, "
                f"ends {done.shape}, {len(infos)} infos"
            )
        out = values.copy()
        counts = dict.fromkeys(self.stats, 0)
        open_steps: list[list[int]] = [[] for _ in range(n)]
        for t in range(steps):
            for i in range(n):
                if self._reset_next[i]:  # NEXT_STEP reset step: no token was generated
                    self._reset_next[i] = False
                    continue
                open_steps[i].append(t)
                if done[t, i]:
                    self._finish(out, i, open_steps[i], _final_info(infos[t], i), t, counts)
                    open_steps[i] = []
                    self._reset_next[i] = self.next_step
        for i in range(n):  # still running: their tokens so far count as the next rollout's head
            carried = self._carried[i]
            if open_steps[i] and carried is not None:  # None: begun before the first call, length unknown
                self._carried[i] = carried + len(open_steps[i])
        for key, value in counts.items():
            self.stats[key] += value
        self.last_stats = counts
        return _like(out, rewards)

    def _finish(
        self, out: np.ndarray, env: int, steps: list[int], info: Mapping[str, Any] | None, t: int, counts: dict[str, int]
    ) -> None:
        carried = self._carried[env]
        self._carried[env] = 0
        if info is None:  # e.g. truncated by a TimeLimit: no credit to write
            counts["no_credit_episodes"] += 1
            return
        credit = episode_token_rewards(info)
        head = len(credit) - len(steps)
        if head < 0 or (carried is not None and head != carried):
            raise ValueError(
                f"env {env}, step {t}: the episode has {len(credit)} tokens but {len(steps)} steps in this rollout"
                + ("" if carried is None else f" + {carried} before it")
                + f": is autoreset_mode right (this writeback assumes {'NEXT_STEP' if self.next_step else 'SAME_STEP'})"
                ", and is every step of the rollout passed, in order?"
            )
        out[steps, env] = credit[head:]
        counts["episodes"] += 1
        if head:
            counts["spanning_episodes"] += 1
            counts["head_tokens"] += head
            if self.spanning == "fold":
                out[steps[0], env] += credit[:head].sum()


def write_back_credit(
    rewards: Any, ends: Any, infos: Sequence[Any], autoreset_mode: Any = "SameStep", spanning: str = "fold"
) -> tuple[Any, dict[str, int]]:
    """One rollout at a time without state: :class:`CreditWriteback` for a single call.

    Returns the rewritten ``(T, N)`` rewards and the counts (:attr:`CreditWriteback.stats`).
    Episodes running at the rollout's end keep their rewards; episodes begun before it are
    spanning episodes (``spanning`` rule).
    """
    writeback = CreditWriteback(_to_numpy(rewards).shape[1], autoreset_mode, spanning)
    out = writeback(rewards, ends, infos)
    return out, writeback.stats


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _like(values: np.ndarray, template: Any) -> Any:
    """``values`` as the type, dtype and device of ``template`` (numpy array or torch tensor)."""
    if hasattr(template, "detach"):
        import torch

        return torch.as_tensor(values, dtype=template.dtype, device=template.device)
    return values.astype(np.asarray(template).dtype, copy=False)
