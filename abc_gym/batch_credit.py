"""Token-level rewards for a padded batch of finished sequences: the env's credit without the env.

RLHF engines (verl, TRL, OpenRLHF, ...) generate a batch of responses themselves and only need
the credit: one reward per response token, summing to the reward model's score R. This module
gives it from the same pieces the env uses (:class:`~abc_gym.reward_model.RewardModel.score`,
its attention capture, the registered :func:`~abc_gym.credit.credit_scheme` and the
conservation check of :meth:`~abc_gym.credit.CreditScheme.credit`), so that for the same
prompt and completion ids the numbers are the env's ``info["token_rewards"]``.

Layout. Any padding, per row: the real tokens (``attention_mask == 1``) read left to right are
the prompt, then the response (``response_mask``). Left-padded prompts followed by
right-padded responses (verl's and TRL's layout), right-padded whole sequences (the env's
layout) and mixed lengths in one batch all work. Before scoring, each row is packed as the
env lays it out (``[prompt | response | padding]``, real tokens first), because the reward
model's position ids and its last-token pooling depend on it; the credit is then put back
at the caller's positions.

Shapes. :func:`token_level_rewards` returns ``(B, L)``, aligned to ``input_ids``: zero on prompt
and padding positions. An engine that keeps rewards aligned to the response only (verl's
``token_level_scores`` is ``(B, response_length)``) slices the last ``response_length``
columns: see :mod:`abc_gym.integrations.verl`.

Example::

    from abc_gym.batch_credit import token_level_rewards
    rewards, score = token_level_rewards(rm, input_ids, attention_mask, response_mask, reward_mode="abc")
    assert torch.allclose(rewards.sum(-1), score.double())
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from abc_gym.alignment import batch_token_char_spans
from abc_gym.core import GoldCredit, gold_token_weights, readable_attention
from abc_gym.credit import CreditScheme, check_beta, credit_registry, credit_scheme
from abc_gym.reward_model import RewardModel
from abc_gym.validation import check_callable

__all__ = ["BatchCredit", "pack_rows", "token_level_rewards"]


class BatchCredit(NamedTuple):
    """What :func:`token_level_rewards` returns (unpacks as ``token_rewards, score``).

    token_rewards: ``(B, L)`` float64 on ``input_ids``' device, aligned to ``input_ids``; zero
        outside the response; each row sums to ``score`` (the conservation contract).
    score: ``(B,)`` float32 on ``input_ids``' device, the reward model's R per row.
    """

    token_rewards: torch.Tensor
    score: torch.Tensor


class _Packed(NamedTuple):
    """Rows packed as the env lays them out; see :func:`pack_rows`."""

    ids: torch.Tensor  # (B, W) long, real tokens first
    mask: torch.Tensor  # (B, W) long
    completion_mask: torch.Tensor  # (B, W) bool
    order: torch.Tensor  # (B, L) long: packed column j of row b came from column order[b, j]
    length: torch.Tensor  # (B,) long, real tokens per row


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> None:
    """Shapes, dtypes and mask consistency, with errors that name the fix."""
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask), ("response_mask", response_mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, L), got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (B, L), got {tuple(t.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    shape = tuple(input_ids.shape)
    for name, t in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if tuple(t.shape) != shape:
            hint = (
                " (a mask over the response only, as verl's response_mask: prepend zeros for the prompt columns, "
                "or use abc_gym.integrations.verl)"
                if name == "response_mask" and t.shape[0] == shape[0] and t.shape[1] < shape[1]
                else ""
            )
            raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids {shape}: they must match{hint}")
    if shape[0] == 0:
        raise ValueError("empty batch: input_ids has no rows")
    for name, t in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1 (or False / True)")


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> _Packed:
    """Move each row's real tokens to the front, in order: the env's ``[prompt | response | padding]`` layout.

    Args:
        input_ids: ``(B, L)`` integer token ids.
        attention_mask: ``(B, L)`` 1 / True for real tokens.
        response_mask: ``(B, L)`` 1 / True for response tokens (a subset of the real tokens).
    Returns:
        the packed rows, cut to the longest real row ``W``, and the permutation to put values back.
    Raises:
        ValueError: a response token outside the attention mask, a row without response tokens,
            or a row whose response tokens are not the last real tokens (prompt, then response).
    """
    _check_inputs(input_ids, attention_mask, response_mask)
    # Masks follow the ids' device (a caller may keep them elsewhere).
    real = attention_mask.to(input_ids.device).bool()
    response = response_mask.to(input_ids.device).bool()
    bad = response & ~real
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(-1)).flatten().tolist()
        raise ValueError(
            f"response_mask marks padding (attention_mask 0) as response in row(s) {rows}: response tokens must be "
            "real tokens; pass response_mask = attention_mask on the response columns"
        )
    empty = ~response.any(-1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(
            f"row(s) {rows} have an empty response (no response_mask token): there is no token to give R to; "
            "drop those rows, or let them keep at least their EOS token"
        )
    # A stable sort of "is padding" puts the real tokens first, in their order.
    order = torch.sort((~real).to(torch.int8), dim=-1, stable=True).indices
    length = real.sum(-1)
    width = int(length.max())
    ids = input_ids.gather(1, order)[:, :width]
    mask = real.gather(1, order)[:, :width].long()
    completion = response.gather(1, order)[:, :width]
    # The response must be the tail of the real tokens: prompt first, then response, no gap.
    n_response = completion.sum(-1)
    positions = torch.arange(width, device=real.device).unsqueeze(0)
    expected = (positions >= (length - n_response).unsqueeze(1)) & (positions < length.unsqueeze(1))
    wrong = (completion != expected).any(-1)
    if bool(wrong.any()):
        rows = torch.nonzero(wrong).flatten().tolist()
        raise ValueError(
            f"row(s) {rows}: the response tokens are not the last real tokens of the row. Each row must read "
            "[prompt | response] once padding is removed (left-padded prompt + right-padded response, or "
            "right-padded prompt + response); multi-turn rows with masked tool tokens are not supported"
        )
    return _Packed(ids, mask, completion, order, length)


def _gold_weights(
    reward_model: RewardModel, packed: _Packed, gold_credit: GoldCredit, device: torch.device
) -> torch.Tensor:
    """``(B, W)`` float64 gold weights of the packed rows, by the env's rule (:func:`abc_gym.core.gold_token_weights`)."""
    ids = packed.ids.cpu()
    rows = [ids[b, : int(packed.length[b])].tolist() for b in range(ids.shape[0])]
    texts, spans = batch_token_char_spans(reward_model.policy_tokenizer, rows)
    return gold_token_weights(gold_credit, texts, spans, packed.completion_mask.to(device))[0]


def token_level_rewards(
    reward_model: RewardModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    reward_mode: str = "abc",
    beta: float = 0.8,
    gold_credit: GoldCredit | None = None,
) -> BatchCredit:
    """Score a padded batch of prompt + response ids and spread each R over its response tokens.

    The same reward-model forward, attention capture, credit scheme and contract check as the
    env's (:meth:`abc_gym.core.TokenEpisodes.score_rows`): for the same prompt and completion ids
    the rewards equal the env's ``info["token_rewards"]`` (to float32 round-off of the batch).

    Args:
        reward_model: a :class:`~abc_gym.reward_model.RewardModel`; ``input_ids`` are in its
            ``policy_tokenizer``'s vocabulary (it re-tokenizes when its own differs).
        input_ids: ``(B, L)`` integer token ids, prompt then response per row, any padding
            (module doc: left-padded prompts and right-padded responses work).
        attention_mask: ``(B, L)`` 1 / True on real tokens (prompt and response), 0 on padding.
        response_mask: ``(B, L)`` 1 / True on response tokens: the last real tokens of each
            row, at least one per row.
        reward_mode: a registered credit scheme (:func:`abc_gym.reward_modes`): ``"abc"``,
            ``"sparse"``, ``"uniform"``, ``"red"`` (a decoder reward model sharing the policy's
            tokenizer), ``"oracle"`` (needs ``gold_credit``) or one added with
            :func:`abc_gym.register_credit`.
        beta: mixing weight in [0, 1] of the schemes that use it (``abc``, ``red``).
        gold_credit: ``text -> [(start_char, end_char, weight)]``, the task's gold credit rule
            over the decoded prompt + response (the env's ``gold_credit=``); only schemes that
            need gold credit (``oracle``) use it.
    Returns:
        :class:`BatchCredit` ``(token_rewards (B, L) float64, score (B,) float32)`` on
        ``input_ids``' device; ``token_rewards`` is zero on prompt and padding positions and
        each row sums to ``score``.
    Raises:
        TypeError / ValueError: malformed tensors or masks (see :func:`pack_rows`), an unknown
            ``reward_mode``, a scheme this reward model cannot serve (``red`` on an encoder),
            ``oracle`` without ``gold_credit``, or a scheme breaking the conservation contract.
    """
    scheme: CreditScheme = credit_scheme(reward_mode)
    # The env refuses these when reward_mode is set; so do we, before any forward.
    scheme.check_reward_model(reward_model)
    gold_credit = check_callable("gold_credit", gold_credit, "text -> [(start, end, weight)]")
    if scheme.needs_gold_credit and gold_credit is None:
        raise ValueError(
            f"reward_mode={scheme.name!r} needs the task's gold per-token credit: pass gold_credit=<text -> "
            "[(start_char, end_char, weight)]> (e.g. abc_gym.tasks.sentiment.gold.gold_char_credit), or use one of "
            f"{', '.join(m for m, s in credit_registry.items() if not s.needs_gold_credit)}"
        )
    beta = check_beta(beta)
    packed = pack_rows(input_ids, attention_mask, response_mask)
    device = input_ids.device
    out = reward_model.score(
        packed.ids,
        packed.mask,
        with_attention=scheme.needs_attention,
        with_prefix_scores=scheme.needs_prefix_scores,
    )
    score = out.score.to(device)
    completion = packed.completion_mask.to(device)
    attention = None if out.attention is None else readable_attention(out.attention, completion)[0]
    prefix = None if out.prefix_scores is None else out.prefix_scores.to(device)
    gold = _gold_weights(reward_model, packed, gold_credit, device) if scheme.needs_gold_credit else None
    credit = scheme.credit(  # checks the conservation contract, for user schemes too
        score, completion, beta=beta, attention=attention, gold_weights=gold, prefix_scores=prefix
    )
    # Back to the caller's columns: packed column j of row b is column order[b, j].
    rewards = torch.zeros(input_ids.shape, dtype=torch.float64, device=device)
    rewards.scatter_(1, packed.order[:, : credit.shape[1]].to(device), credit)
    return BatchCredit(rewards, score)

