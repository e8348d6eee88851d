"""Adapter for any Hugging Face ``AutoModelForSequenceClassification`` used as a reward model.

It returns, for a batch of policy sequences, the scalar score R and the attention ABC
needs, already aligned to the policy's token positions.

Score rule:
    1 output  -> R = that logit;
    2 outputs -> R = logit[positive] - logit[negative] (``positive_label`` picks which).

Attention rule (last layer, averaged over heads, from the row the score is read at):
    ``pooling="last"`` (decoders, GPT-2 style): the row of the token the classification
        head reads, i.e. the last token that is not the model's pad id (transformers' rule);
    ``pooling="cls"`` (BERT-style [CLS] pooling): the [CLS] row;
    ``pooling="mean"`` (mean-pooling heads): the mean of the non-pad rows.
    ``pooling="auto"`` picks ``last`` for decoders and ``cls`` for encoders (decoder:
        ``config.is_decoder``, or a model type transformers knows only as a causal LM).

Tokenizers: if the reward model shares the policy's vocabulary it reads the policy's ids
directly; otherwise it reads the decoded text and its attention is carried back to
policy tokens by character offsets (:mod:`abc_gym.alignment`).

Prefix scores (``reward_mode="red"``): a decoder classifier (``pooling="last"``) applies its
score head at every position before pooling, and causal attention makes the hidden state
at position p depend on tokens <= p only, so the head's output at p is the score the model
would give the sequence cut after p. ``score(..., with_prefix_scores=True)`` reads them off
the SAME forward (a hook on the head, :func:`~abc_gym.compat.transformers.capture_output`),
following transformers' pooling rule per prefix (the last token that is not the pad id).
Encoders ([CLS] / mean pooling: every position sees the whole text) and reward models with
another tokenizer (a prefix of policy tokens is not a prefix of reward-model tokens) have no
such scores: :meth:`RewardModel.check_prefix_scores` raises, naming ``reward_mode='abc'``.

Attention source: ``"row"`` (default) keeps SDPA in every layer and computes only the
needed row of the last layer (:mod:`abc_gym.attention`); ``"eager"`` loads eager attention
and reads ``output_attentions``. Either way a model whose attention cannot be read is an
error, never a silent fallback to sparse credit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from abc_gym.alignment import map_to_policy_tokens
from abc_gym.attention import ROW_ATTENTION, RowRequest, capture_rows
from abc_gym.compat.transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    capture_output,
    missing_keys,
    quiet_loading,
    sequence_score_head,
    supports_attention_backend,
)
from abc_gym.device import Device, resolve_device
from abc_gym.hub import load_pretrained

Pooling = Literal["auto", "last", "cls", "mean"]
AttentionSource = Literal["row", "eager"]


@dataclass
class RewardOutput:
    """Scores and aligned attention for a batch.

    score: ``(B,)`` float32, R per sequence.
    attention: ``(B, L)`` float32 on the policy's positions (prompt and padding included;
        the credit functions drop them), or None when ``with_attention=False``.
    prefix_scores: ``(B, L)`` float32, at each position p the score of the sequence cut after
        p (RED), or None when ``with_prefix_scores=False``. At each row's last real position
        it equals ``score``.
    """

    score: torch.Tensor
    attention: torch.Tensor | None
    prefix_scores: torch.Tensor | None = None


class RewardModel:
    """A sequence-classification reward model with readable last-layer attention.

    Args:
        model: a loaded ``*ForSequenceClassification`` model.
        tokenizer: its tokenizer.
        policy_tokenizer: the policy's tokenizer (to decide same vs cross tokenizer).
        positive_label: index or label name of the positive class (2-output models);
            default: the label whose name starts with "pos", else index 1.
        pooling: which row(s) the score is read at, see module doc.
        attention_source: ``"row"`` or ``"eager"``, see module doc.
        device: where the model runs: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"``, ... (:func:`~abc_gym.device.resolve_device`). The model is moved there.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        policy_tokenizer: PreTrainedTokenizerBase,
        *,
        positive_label: int | str | None = None,
        pooling: Pooling = "auto",
        attention_source: AttentionSource = "row",
        device: Device = "auto",
    ) -> None:
        if pooling not in ("auto", "last", "cls", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}: use 'auto', 'last', 'cls' or 'mean'")
        if attention_source not in ("row", "eager"):
            raise ValueError(f"unknown attention_source {attention_source!r}: use 'row' or 'eager'")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer
        self.is_decoder = _is_decoder(model, tokenizer)
        if self.is_decoder and pooling in ("cls", "mean"):
            # ABC reads the attention of the row the score comes from; a decoder head scores the last token.
            raise ValueError(
                f"pooling={pooling!r} on {type(model).__name__}, a decoder whose classification head reads the score "
                "at the last non-pad token, so no other row's attention explains it: use pooling='last' (or 'auto')"
            )
        self.pooling = ("last" if self.is_decoder else "cls") if pooling == "auto" else pooling
        self.attention_source = attention_source
        self.pos_index, self.neg_index = _label_indices(model, positive_label)
        self.same_tokenizer = _same_vocab(tokenizer, policy_tokenizer)
        if self.model.config.pad_token_id is None:
            # transformers' decoder heads need a pad id to find the last token of a batch.
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            self.model.config.pad_token_id = pad
        self.pad_id = int(self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0)
        self.max_positions = _max_positions(model)
        self._last_attention: torch.nn.Module | None = None
        self._set_attention_source()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        policy_tokenizer: PreTrainedTokenizerBase,
        *,
        device: Device = "auto",
        positive_label: int | str | None = None,
        pooling: Pooling = "auto",
        attention_source: AttentionSource = "row",
        **load_kwargs,
    ) -> RewardModel:
        """Load by local path or hub id.

        Raises:
            OSError: offline with a hub id that is not cached (naming the fix).
            ValueError: the checkpoint lacks weights of the sequence-classification model,
                e.g. a causal-LM or base-model checkpoint without a trained score head, which
                transformers would silently initialise at random.
        """
        resolve_device(device)  # a bad device fails before the load
        attn = "eager" if attention_source == "eager" else "sdpa"
        with quiet_loading():
            model, info = load_pretrained(
                AutoModelForSequenceClassification, name_or_path, attn_implementation=attn, output_loading_info=True, **load_kwargs
            )
        missing = missing_keys(info)
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ValueError(
                f"reward model {os.fspath(name_or_path)!r} has no trained sequence-classification head: the checkpoint "
                f"lacks {shown}, which transformers would initialise at random (is it a causal-LM or base-model "
                "checkpoint?). Pass a checkpoint that contains a trained sequence-classification head "
                "(saved from *ForSequenceClassification after training), or pass a loaded "
                "RewardModel(model, tokenizer, policy_tokenizer) as reward_model="
            )
        tokenizer = load_pretrained(AutoTokenizer, name_or_path)
        return cls(
            model,
            tokenizer,
            policy_tokenizer,
            positive_label=positive_label,
            pooling=pooling,
            attention_source=attention_source,
            device=device,
        )

    def _set_attention_source(self) -> None:
        if self.attention_source == "eager":
            self.model.set_attn_implementation("eager")
            return
        if not supports_attention_backend(self.model):
            raise ValueError(
                f"{type(self.model).__name__} does not use transformers' AttentionInterface, so its attention row "
                "cannot be read alongside SDPA; pass attention_source='eager'"
            )
        self.model.set_attn_implementation(ROW_ATTENTION)
        # One probe forward finds the last attention module actually called.
        ids = torch.tensor([[self._probe_token()] * 2], device=self.device)
        req = RowRequest(query_index=torch.zeros(1, dtype=torch.long))
        with torch.no_grad(), capture_rows(req):
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        if not req.seen:
            raise ValueError(
                f"{type(self.model).__name__} never called the attention interface, so its attention cannot be read; "
                "pass attention_source='eager'"
            )
        self._last_attention = req.seen[-1]

    def prefix_scores_problem(self) -> str | None:
        """Why this reward model cannot give per-prefix scores from one forward (RED), or None if it can."""
        if not self.same_tokenizer:
            return (
                "its tokenizer differs from the policy's, so a prefix of policy tokens is not a prefix of "
                "reward-model tokens"
            )
        if self.pooling != "last":
            return (
                f"it pools {self.pooling!r} (an encoder-style head: every position sees the whole text), so no "
                "position holds the score of a prefix"
            )
        if sequence_score_head(self.model) is None:
            return f"{type(self.model).__name__} has no per-position 'score' head to read prefix scores from"
        return None

    def check_prefix_scores(self) -> None:
        """Raise a ``ValueError`` naming ``reward_mode='abc'`` unless prefix scores can be read (module doc)."""
        problem = self.prefix_scores_problem()
        if problem is not None:
            raise ValueError(
                f"reward_mode='red' needs the reward model's score of every completion prefix from one forward, "
                f"and this reward model cannot give it: {problem}. Use reward_mode='abc' (attention credit works "
                "with encoders and other tokenizers), or a decoder reward model that shares the policy's tokenizer"
            )

    def _probe_token(self) -> int:
        for t in (self.tokenizer.unk_token_id, self.tokenizer.eos_token_id, self.tokenizer.cls_token_id):
            if t is not None and t != self.pad_id:
                return int(t)
        return 1 if self.pad_id != 1 else 2

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        with_attention: bool = True,
        with_prefix_scores: bool = False,
    ) -> RewardOutput:
        """Score a batch of policy sequences.

        Args:
            input_ids: ``(B, L)`` policy token ids, real tokens first, then padding (any id).
            attention_mask: ``(B, L)`` 1 for real tokens (prompt + completion), 0 for padding.
            with_attention: also return the aligned attention (ABC); False skips the row.
            with_prefix_scores: also return every prefix's score (RED), from the same forward.
        Returns:
            :class:`RewardOutput`.
        Raises:
            ValueError: ``with_prefix_scores`` on a reward model that cannot give them
                (:meth:`check_prefix_scores`).
        """
        if with_prefix_scores:
            self.check_prefix_scores()
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device).long()
        if self.same_tokenizer:
            rm_ids = torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, self.pad_id))
            rm_mask, offsets = attention_mask, None
        else:
            rm_ids, rm_mask, offsets = self._retokenize(input_ids, attention_mask)
        if self.max_positions is not None and rm_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"sequence of {rm_ids.shape[1]} reward-model tokens exceeds the reward model's "
                f"{self.max_positions} positions: lower max_new_tokens or the prompt length"
            )
        head_out: list[torch.Tensor] = []
        if with_prefix_scores:
            with capture_output(sequence_score_head(self.model), head_out):
                logits, attn = self._forward(rm_ids, rm_mask, with_attention)
        else:
            logits, attn = self._forward(rm_ids, rm_mask, with_attention)
        score = self._score_from_logits(logits)
        prefix = self._prefix_scores(head_out[-1], rm_ids) if with_prefix_scores else None
        if attn is None:
            return RewardOutput(score=score, attention=None, prefix_scores=prefix)
        if self.same_tokenizer:
            return RewardOutput(score=score, attention=attn * attention_mask, prefix_scores=prefix)
        return RewardOutput(
            score=score, attention=self._map_back(attn, input_ids, attention_mask, offsets), prefix_scores=prefix
        )

    def _prefix_scores(self, head_logits: torch.Tensor, rm_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` score of each prefix: the head's output at the prefix's last non-pad token.

        transformers' rule per prefix ending at p: the last position <= p whose id is not the pad
        id (position 0 if there is none), so trailing pad-id tokens keep the score before them,
        and the last real position gives exactly the pooled score.
        """
        if head_logits.dim() != 3 or head_logits.shape[:2] != rm_ids.shape:
            raise ValueError(
                f"{type(self.model).__name__}'s score head returned shape {tuple(head_logits.shape)}, not one score per "
                f"position {tuple(rm_ids.shape)}: prefix scores (reward_mode='red') cannot be read; use reward_mode='abc'"
            )
        positions = torch.arange(rm_ids.shape[1], device=rm_ids.device).expand_as(rm_ids)
        read = torch.where(rm_ids != self.pad_id, positions, torch.zeros_like(positions)).cummax(dim=-1).values
        per_prefix = head_logits.gather(1, read.unsqueeze(-1).expand(-1, -1, head_logits.shape[-1]))
        b, length, c = per_prefix.shape
        return self._score_from_logits(per_prefix.reshape(b * length, c)).reshape(b, length)

    def _query_rows(self, rm_ids: torch.Tensor, rm_mask: torch.Tensor) -> RowRequest:
        b, length = rm_ids.shape
        if self.pooling == "mean":
            return RowRequest(query_weights=rm_mask.float())
        if self.pooling == "cls":
            return RowRequest(query_index=torch.zeros(b, dtype=torch.long, device=rm_ids.device))
        # transformers' sequence-classification rule: the last token that is not the pad id.
        positions = torch.arange(length, device=rm_ids.device)
        return RowRequest(query_index=(positions * (rm_ids != self.pad_id)).argmax(-1))

    def _forward(
        self, rm_ids: torch.Tensor, rm_mask: torch.Tensor, with_attention: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns logits ``(B, C)`` and head-averaged attention ``(B, L_rm)`` (or None)."""
        req = self._query_rows(rm_ids, rm_mask)
        if not with_attention:
            return self.model(input_ids=rm_ids, attention_mask=rm_mask).logits, None
        if self.attention_source == "eager":
            out = self.model(input_ids=rm_ids, attention_mask=rm_mask, output_attentions=True)
            if not out.attentions or out.attentions[-1] is None:
                raise ValueError(
                    f"{type(self.model).__name__} returned no attention weights even with eager attention; "
                    "this reward model cannot give ABC credit (use reward_mode='sparse' or another model)"
                )
            full = out.attentions[-1].float().mean(dim=1)  # (B, Tq, Tk)
            if req.query_index is not None:
                attn = full[torch.arange(full.shape[0], device=full.device), req.query_index]
            else:
                w = req.query_weights / req.query_weights.sum(-1, keepdim=True)
                attn = torch.einsum("bq,bqk->bk", w, full)
            return out.logits, attn
        req.module = self._last_attention
        with capture_rows(req):
            logits = self.model(input_ids=rm_ids, attention_mask=rm_mask).logits
        if req.result is None:
            raise ValueError(
                f"the last attention layer of {type(self.model).__name__} was not reached during scoring, so no "
                "attention could be read; pass attention_source='eager'"
            )
        return logits, req.result

    def _score_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-1] == 1:
            return logits[:, 0]
        return logits[:, self.pos_index] - logits[:, self.neg_index]

    # ------------------------------------------------------- cross-tokenizer path
    def _retokenize(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
        texts = [
            self.policy_tokenizer.decode(
                ids[mask.bool()].tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            for ids, mask in zip(input_ids.cpu(), attention_mask.cpu())
        ]
        # right padding: [CLS] stays at row 0 and the last-token rule reads the last real token
        enc = self.tokenizer(
            texts, return_offsets_mapping=True, padding=True, padding_side="right", return_tensors="pt"
        )
        offsets = [[tuple(o) for o in row] for row in enc["offset_mapping"].tolist()]
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device), offsets

    def _map_back(
        self,
        attn: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        offsets: list[list[tuple[int, int]]],
    ) -> torch.Tensor:
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=attn.device)
        for b in range(input_ids.shape[0]):
            n = int(attention_mask[b].sum())
            ids = input_ids[b, :n].tolist()
            out[b, :n] = map_to_policy_tokens(attn[b], self.policy_tokenizer, ids, offsets[b])
        return out


def _is_decoder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Decoder-style classifiers (GPT-2, Llama, ...) read the last token; encoders read [CLS].

    Rule: ``config.is_decoder``, or a model type transformers knows only as a causal LM
    (not also as a masked LM, like BERT); for unknown types, a tokenizer without [CLS].
    """
    if getattr(model.config, "is_decoder", False):
        return True
    model_type = getattr(model.config, "model_type", None)
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return tokenizer.cls_token_id is None


def _label_indices(model: PreTrainedModel, positive_label: int | str | None) -> tuple[int, int]:
    n = int(model.config.num_labels)
    if n == 1:
        return 0, 0
    if n != 2:
        raise ValueError(f"reward model has {n} outputs: ABC needs 1 (a score) or 2 (negative/positive logits)")
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    if positive_label is None:
        pos = next((i for i, name in id2label.items() if name.lower().startswith("pos")), 1)
    elif isinstance(positive_label, str):
        matches = [i for i, name in id2label.items() if name == positive_label]
        if not matches:
            raise ValueError(f"positive_label {positive_label!r} is not one of the model's labels {id2label}")
        pos = matches[0]
    else:
        pos = int(positive_label)
        if pos not in (0, 1):
            raise ValueError(f"positive_label index must be 0 or 1 for a 2-output model, got {pos}")
    return pos, 1 - pos


def _same_vocab(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def _max_positions(model: PreTrainedModel) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(model.config, key, None)
        if isinstance(value, int):
            return value
    return None
