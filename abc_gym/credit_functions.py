"""The credit schemes' formulas: pure tensor functions, no model, no environment, no registry.

Every function works on a batch
of ``B`` sequences laid out on ``L`` positions (prompt, completion and padding mixed);
``completion_mask`` (``(B, L)`` bool) says which positions are completion tokens. The
last ``True`` position of a row is the completion's last token ``T``.

Modes (Chan et al., "Dense Reward for Free in RLHF", ICML 2024):

- ``sparse``:  r_t = R * [t == T]                        (plain RLHF)
- ``uniform``: r_t = R / T_len
- ``abc``:     r_t = beta * a_t * R + (1 - beta) * R * [t == T]
  with a_t the reward model's last-layer attention (head-averaged, from the row the
  score is read at) over completion tokens, renormalised to sum 1.
- ``oracle``:  r_t = w_t * R, w_t the task's gold per-token credit, renormalised.
- ``red``:     r_t = beta * d_t + (1 - beta) * R * [t == T], the reward model's own
  prefix-score differences (RED, Li et al. 2024, arXiv 2411.08302):
  d_t = R(x, y<=t) - R(x, y<=t-1) for t >= 2 and d_1 = R(x, y_1).

  Where the prompt-only score R(x) goes: the differences telescope to
  R(x, y) - R(x), so the prompt's own score has to be placed somewhere for the
  contract (sum = R). It goes onto the FIRST completion token: d_1 = R(x, y_1) =
  R(x) + (R(x, y_1) - R(x)), i.e. the score of the empty sequence is taken as 0 (a
  potential Phi(prompt) = 0). R(x) depends only on the prompt, never on an action,
  so placing it on the first step shifts the return of every step of the episode
  (steps >= 2 see R - R(x, y<=t-1), "what is still to gain") by nothing that the
  policy can change; putting it on the last token instead would make every step's
  return carry the prompt score. Unlike the other modes, RED credit is signed: a
  token that lowers the running score gets negative credit.

In every mode and for every beta the completion's credit sums to R, and positions
outside the completion (prompt, padding) get exactly 0. To keep the sum exact in
floating point the last token takes ``R - sum(others)``, which is algebraically the
formula above.


The registry of schemes, their needs and the conservation check are :mod:`abc_gym.credit`,
which re-exports every function here.
"""

from __future__ import annotations

import torch

from abc_gym.validation import check_real


def check_beta(beta: float) -> float:
    """``beta`` as a float in [0, 1] (the paper's mixing weight).

    Raises:
        TypeError: not a number (``"0.8"``, ``True``).
        ValueError: outside [0, 1] or NaN.
    """
    return check_real("beta", beta, low=0.0, high=1.0, hint=" (0 = sparse, 1 = pure attention credit)")


def last_token_index(completion_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last completion token.

    Args:
        completion_mask: ``(B, L)`` bool.
    Returns:
        ``(B,)`` long.
    Raises:
        ValueError: a row has no completion token (there is nothing to credit).
    """
    mask = completion_mask.bool()
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every sequence needs at least one completion token to receive credit")
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask, positions, -1).max(dim=-1).values


def normalise_weights(weights: torch.Tensor, completion_mask: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """Restrict non-negative weights to the completion and renormalise each row to sum 1.

    Args:
        weights: ``(B, L)`` float, >= 0 (e.g. an attention row).
        completion_mask: ``(B, L)`` bool.
    Returns:
        ``(B, L)`` float64, zero outside the completion, each row summing to 1.
    Raises:
        ValueError: NaN / negative weights, or a row whose completion weights are all
            zero (renormalising it would silently invent a distribution).
    """
    w = weights.to(torch.float64)
    if torch.isnan(w).any():
        raise ValueError(f"{name} contain NaN")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative")
    w = torch.where(completion_mask.bool(), w, torch.zeros_like(w))
    total = w.sum(dim=-1, keepdim=True)
    if bool((total <= 0).any()):
        bad = torch.nonzero(total.squeeze(-1) <= 0).flatten().tolist()
        raise ValueError(f"{name} put zero mass on the completion of sequence(s) {bad}: cannot spread credit")
    return w / total


def redistribute(score: torch.Tensor, weights: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Spread ``score`` over each completion in proportion to ``weights``, summing exactly to it.

    Args:
        score: ``(B,)`` the scalar reward R per sequence.
        weights: ``(B, L)`` non-negative weights (renormalised here over the completion).
        completion_mask: ``(B, L)`` bool.
    Returns:
        ``(B, L)`` float64 token rewards; the last completion token absorbs the
        floating-point remainder so that ``rewards.sum(-1) == score``.
    """
    mask = completion_mask.bool()
    w = normalise_weights(weights, mask)
    r = score.to(torch.float64).unsqueeze(-1)
    rewards = w * r
    last = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] = 0.0
    rewards[rows, last] = r.squeeze(-1) - rewards.sum(dim=-1)
    return rewards


def sparse_credit(score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """R on the last completion token, 0 elsewhere. Shapes as :func:`redistribute`."""
    mask = completion_mask.bool()
    onehot = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    onehot[torch.arange(mask.shape[0], device=mask.device), last_token_index(mask)] = 1.0
    return redistribute(score, onehot, mask)


def uniform_credit(score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """R / T on each of the T completion tokens. Shapes as :func:`redistribute`."""
    mask = completion_mask.bool()
    return redistribute(score, mask.to(torch.float64), mask)


def abc_credit(
    score: torch.Tensor, attention: torch.Tensor, completion_mask: torch.Tensor, beta: float = 0.8
) -> torch.Tensor:
    """Attention Based Credit: ``beta * a_t * R + (1 - beta) * R * [t == T]``.

    Args:
        score: ``(B,)`` R.
        attention: ``(B, L)`` the reward model's head-averaged last-layer attention
            from its scoring row, aligned to the policy's positions (any mass on prompt
            or padding is dropped and the rest renormalised).
        completion_mask: ``(B, L)`` bool.
        beta: mixing weight in [0, 1]; 0 is sparse, 1 pure attention.
    Returns:
        ``(B, L)`` float64 token rewards summing to R.
    """
    beta = check_beta(beta)
    mask = completion_mask.bool()
    a = normalise_weights(attention, mask, name="attention")
    onehot = torch.zeros_like(a)
    onehot[torch.arange(mask.shape[0], device=mask.device), last_token_index(mask)] = 1.0
    # Mixing two distributions gives a distribution, so redistribute keeps the sum exact.
    return redistribute(score, beta * a + (1.0 - beta) * onehot, mask)


def oracle_credit(score: torch.Tensor, gold_weights: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """R spread by the task's gold per-token credit weights. Shapes as :func:`redistribute`."""
    return redistribute(score, normalise_weights(gold_weights, completion_mask, name="gold weights"), completion_mask)


def red_differences(prefix_scores: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """RED's per-token score differences d_t, with the prompt's score on the first token (module doc).

    Args:
        prefix_scores: ``(B, L)`` at each completion position p, the reward model's score of the
            sequence cut after p, R(x, y<=t); other positions are ignored.
        completion_mask: ``(B, L)`` bool, one contiguous run per row.
    Returns:
        ``(B, L)`` float64: d_1 = R(x, y_1), d_t = R(x, y<=t) - R(x, y<=t-1); 0 outside the
        completion. Each row sums to the score of the whole sequence R(x, y<=T).
    Raises:
        ValueError: NaN / infinite prefix scores on the completion, or a row without completion.
    """
    mask = completion_mask.bool()
    last_token_index(mask)  # every row has a completion
    s = torch.where(mask, prefix_scores.to(torch.float64), torch.zeros((), dtype=torch.float64, device=mask.device))
    if not bool(torch.isfinite(s).all()):
        raise ValueError("prefix scores contain NaN or inf on the completion")
    previous = torch.zeros_like(s)
    previous[:, 1:] = s[:, :-1]  # 0 before the first completion token (prompt positions are zeroed)
    return torch.where(mask, s - previous, torch.zeros_like(s))


def red_credit(
    score: torch.Tensor, prefix_scores: torch.Tensor, completion_mask: torch.Tensor, beta: float = 0.8
) -> torch.Tensor:
    """RED credit mixed with sparse: ``beta * d_t + (1 - beta) * R * [t == T]`` (module doc).

    Args:
        score: ``(B,)`` R, the score of the whole sequence.
        prefix_scores: ``(B, L)`` R(x, y<=t) at each completion position (see :func:`red_differences`).
        completion_mask: ``(B, L)`` bool.
        beta: mixing weight in [0, 1]; 0 is sparse, 1 pure RED.
    Returns:
        ``(B, L)`` float64 token rewards; the last token takes ``R - sum(others)``, so each row
        sums to R exactly (algebraically the formula whenever R(x, y<=T) = R).
    """
    beta = check_beta(beta)
    mask = completion_mask.bool()
    d = red_differences(prefix_scores, mask)
    rewards = beta * d
    last = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] = 0.0
    rewards[rows, last] = score.to(torch.float64) - rewards.sum(dim=-1)
    return rewards


# ====================================================================== the registry
#: A credit function: ``fn(score=(B,), completion_mask=(B, L) bool, **declared) -> (B, L)``, where
#: ``declared`` holds exactly the inputs its scheme asks for (``attention``, ``prefix_scores``,
#: ``gold_weights``: ``(B, L)``; ``beta``: float).
