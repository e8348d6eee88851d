"""``TransformerActorCriticPolicy``: a Hugging Face causal LM as an SB3 actor-critic policy.

Observation: ``{"input_ids": (B, L), "attention_mask": (B, L)}`` laid out
``[prompt | generated | pad]`` (right padding, as the abc_gym token envs give it).
The state is the real-token prefix; the action distribution is a Categorical over the
LM's logits at the last real token; the value is a linear head on the hidden state
of that same token (shared trunk by default, or a separate value model).

Two forward paths, both equal within float tolerance (tested):

- full forward (no cache): used for training (``evaluate_actions``) and whenever
  gradients are on;
- per-env KV cache (``RowKVCache``): used during rollouts (no grad). Each env row keeps
  the keys/values of its prefix; a step whose prefix extends the cached one by one
  token feeds only that token. Anything else (episode start, other batch) re-prefills
  the row. The cache is keyed on the token prefix itself, so it can never be stale
  for a different episode; it is dropped whenever the weights may change
  (``set_training_mode(True)``, ``load_state_dict``). With ``compile_decode=True`` its
  fixed-shape single-token step runs through ``torch.compile`` (one graph; on CUDA with
  ``mode="reduce-overhead"``, i.e. CUDA graphs, the launch-bound decode's fix).

``evaluate_episodes`` is the teacher-forced path of :class:`agents.token_ppo.TokenPPO`:
one forward per whole episode gives every step's log-prob, value and entropy.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

from abc_gym.compat.transformers import (
    RowWriteCache,
    cache_from_layers,
    cache_keyword,
    cache_layers,
    forward_with_cache,
)
from agents.buffers import EOS_ALLOWED_KEY
from agents.compat import apply_action_masks
from agents.config import SAMPLERS

FLOAT_EXACT_IDS = 2**24  # float32 represents every integer below this exactly

_COMPILED_STEPS: dict[str, Any] = {}  # torch.compile mode -> the compiled decode step (compiled once per process)


# ----------------------------------------------------------------------------- checks


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


# ----------------------------------------------------------------------------- KV cache


class RowKVCache:
    """Fixed-shape per-row KV cache of a decoder trunk, written in place, for stepping N envs.

    One preallocated ``(N, H, L, D)`` key and value buffer per layer, laid out exactly like
    the observation (right padded: slot ``p`` of a row holds the token at position ``p``).
    A step whose prefix extends a row's cached one by one token writes only that token's
    keys/values, in place, at the row's own position (:class:`~abc_gym.compat.transformers.RowWriteCache`);
    the attention reads the whole buffer under the observation's own ``attention_mask``, so
    the shapes never change from step to step (no concatenation, no re-merging; the fixed
    shape is what a compiled or CUDA-graph decode step needs). A row whose prefix does not
    extend its cached one (an episode start, another batch) is re-prefilled with one plain
    forward over its real tokens, whose keys/values are copied into its slots. The result
    equals the right-padded full forward (tested).

    :param trunk: a decoder trunk returning ``last_hidden_state`` (e.g. ``GPT2LMHeadModel.transformer``).
    :param max_len: ``L``, the observation length (no row is ever longer).
    :param compile_step: run the single-token step through ``torch.compile`` (:func:`compiled_decode_step`;
        prefills stay eager: their widths vary). Equal to the eager step within float rounding (tested).
    """

    def __init__(self, trunk: nn.Module, max_len: int, compile_step: bool = False) -> None:
        self.trunk = trunk
        self.max_len = max_len
        self.compile_step = bool(compile_step)
        self.clear()

    def clear(self) -> None:
        """Forget every row's prefix (each row re-prefills on its next call). A compiled step keeps
        the buffers allocated (their fixed addresses keep its graph valid across rollouts); an eager
        one frees them (no cache memory held during the update)."""
        self.ids: torch.Tensor | None = None  # (N, L) token prefix of each row
        self.length: torch.Tensor | None = None  # (N,) cached prefix length (0: nothing cached)
        if not (self.compile_step and getattr(self, "cache", None) is not None):
            self.cache: RowWriteCache | None = None  # per layer (N, H, L, D) keys / values

    @property
    def keys(self) -> list[torch.Tensor]:
        """Per-layer ``(N, H, L, D)`` key buffers (empty before the first call)."""
        return [] if self.cache is None else [layer.keys for layer in self.cache.layers]

    @property
    def values(self) -> list[torch.Tensor]:
        """Per-layer ``(N, H, L, D)`` value buffers (empty before the first call)."""
        return [] if self.cache is None else [layer.values for layer in self.cache.layers]

    @torch.no_grad()
    def last_hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden state ``(N, D)`` at each row's last real token, reusing the cache.

        Rows whose prefix extends the cached one by exactly one token are stepped (one batched
        single-token forward over every row, written in place); every other row is re-prefilled
        and its slots overwritten (including whatever the step wrote there).

        Args:
            ids: ``(N, L)`` long, mask: ``(N, L)`` long (right padded).
        """
        n_real = mask.long().sum(-1)  # (N,)
        extends = self._rows_extending_cache(ids, n_real)
        flags = torch.stack([extends.all(), extends.any()]).tolist()  # the one host sync of a step
        if flags[0]:
            hidden = self._step(ids, mask, n_real)
        else:
            hidden = self._step(ids, mask, n_real) if flags[1] else None
            rows = torch.nonzero(~extends).flatten()
            hidden = self._prefill_rows(rows, ids, mask, n_real, hidden)
        self.ids.copy_(ids)
        self.length.copy_(n_real)
        return hidden

    def _rows_extending_cache(self, ids: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: the row's cached prefix is its current prefix minus the last token."""
        if self.ids is None or self.ids.shape != ids.shape or self.ids.device != ids.device:
            self.clear()
            if self.cache is not None:  # buffers of another batch, device or dtype: allocate anew at the prefill
                k = self.cache.layers[0].keys
                if k.shape[0] != len(ids) or k.device != ids.device or k.dtype != next(self.trunk.parameters()).dtype:
                    self.cache = None
            self.ids = torch.zeros_like(ids)
            self.length = torch.zeros(len(ids), dtype=torch.long, device=ids.device)
            return torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        pos = torch.arange(ids.shape[1], device=ids.device)
        same_prefix = ((self.ids == ids) | (pos.unsqueeze(0) >= self.length.unsqueeze(1))).all(-1)
        return same_prefix & (self.length == n_real - 1) & (self.length > 0)

    def _step(self, ids: torch.Tensor, mask: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
        """Feed every row its last real token at its own position; keys/values written in place."""
        last = (n_real - 1).unsqueeze(1)  # (N, 1)
        self.cache.set_write_positions(last.squeeze(1))
        if self.compile_step:
            step = compiled_decode_step(ids.device)
            if ids.device.type == "cuda":  # CUDA graphs: each call is a new iteration (outputs are reused)
                torch.compiler.cudagraph_mark_step_begin()
            # clone: a CUDA-graph output is overwritten by the next replay, and the prefill writes into it
            try:
                return step(self.trunk, self.cache, ids.gather(1, last), mask, last, cache_keyword(self.trunk)).clone()
            except Exception as err:  # compile errors are long; say which switch avoids them
                raise RuntimeError(
                    f"compile_decode=True: the compiled decode step failed on {ids.device} ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}). Set compile_decode=False (agents.train: "
                    "--no-compile-decode) to decode eagerly; on a CPU torch.compile needs a C++ compiler"
                ) from err
        return _decode_step(self.trunk, self.cache, ids.gather(1, last), mask, last, cache_keyword(self.trunk))

    def _prefill_rows(
        self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, n_real: torch.Tensor, hidden: torch.Tensor | None
    ) -> torch.Tensor:
        """Run ``rows``' prefixes (right padded, as the full forward) and copy their keys/values into their slots."""
        nr = n_real[rows]
        width = int(nr.max())
        out, cache = forward_with_cache(
            self.trunk, cache_from_layers([]), input_ids=ids[rows, :width], attention_mask=mask[rows, :width]
        )
        keys, values = cache_layers(cache)
        if self.cache is None:
            self.cache = RowWriteCache.allocate(keys, values, len(ids), self.max_len)
            if self.compile_step and ids.device.type == "cuda":
                # written in place at fixed addresses: CUDA graphs read them where they are instead of
                # copying them in each replay. Dynamo guards on these buffers, so new buffers (another
                # cache) compile once more; a rollout's cache keeps its buffers (see clear)
                for buf in self.keys + self.values:
                    torch._dynamo.mark_static_address(buf)
        self.cache.write_rows(rows, keys, values)
        h_rows = out.last_hidden_state[torch.arange(len(rows), device=ids.device), nr - 1]
        if hidden is None:
            hidden = h_rows.new_empty(len(ids), h_rows.shape[-1])
        hidden[rows] = h_rows
        return hidden


def _decode_step(
    trunk: nn.Module, cache: RowWriteCache, last_ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, cache_kw: str
) -> torch.Tensor:
    """One token per row at slot ``last``: ``last_ids`` ``(N, 1)``, ``mask`` ``(N, L)``, ``last`` ``(N, 1)``;
    returns the ``(N, D)`` hidden states. The cache's keys/values are written in place. ``cache_kw``:
    :func:`~abc_gym.compat.transformers.cache_keyword` of ``trunk``, looked up outside (a compiled graph
    should not trace a cached signature lookup)."""
    out = trunk(input_ids=last_ids, attention_mask=mask, position_ids=last, use_cache=True, **{cache_kw: cache})
    return out.last_hidden_state[:, -1]


def compiled_decode_step(device: torch.device) -> Any:
    """:func:`_decode_step` compiled for ``device``'s kind, once per process: one graph
    (``fullgraph``), static shapes (a new ``N`` or ``L`` compiles once more), CUDA graphs on CUDA
    (``mode="reduce-overhead"``: the decode of a small model is bound by kernel launches)."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(_decode_step, fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED_STEPS[mode]


def inverse_cdf_sample(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` ``(B, V)`` by inverse-CDF sampling; returns ``(B,)`` long.

    The same distribution as ``torch.multinomial(probs, 1)`` with one uniform draw per row
    instead of one exponential draw per vocabulary entry (what ``multinomial`` costs on a CPU:
    ~15 ns per entry). The CDF is summed in float64, so every token's share of [0, 1) is its
    probability to ~1e-16, and a token of probability 0 (a masked one) is never drawn. Rows
    with a NaN, an infinity or no positive mass raise, as ``torch.multinomial`` does (checked
    on the device, without a host sync).
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    total = cdf[:, -1]
    torch._assert_async(
        (torch.isfinite(total) & (total > 0) & (probs >= 0).all(-1)).all(),
        "inverse_cdf_sample: a probability row has NaN, inf, a negative entry or no positive mass",
    )
    u = torch.rand(len(probs), 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(1)  # first slot whose CDF exceeds u
    # u rounded up to the total (probability ~1e-16): the last token of positive probability
    last_positive = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1)
    return torch.where(idx < probs.shape[-1], idx, last_positive)


# ----------------------------------------------------------------------------- policy


class _TransformerPolicyMixin:
    """Everything shared by the plain and the maskable policy (see module doc)."""

    action_space: spaces.Discrete

    def _init_transformer(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        model_name_or_path: str | None,
        value_model_name_or_path: str | None,
        separate_value_model: bool,
        use_cache: bool,
        compile_decode: bool,
        sampler: str,
        model_kwargs: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        check_token_spaces(observation_space, action_space)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: use one of {SAMPLERS} (agents.train: --sampler)")
        if model_name_or_path is None:
            raise ValueError(
                "TransformerActorCriticPolicy needs a causal LM: pass policy_kwargs=dict(model_name_or_path=...) "
                "(the env's own model is env.unwrapped.policy_name_or_path; the agents algorithms fill it in)"
            )
        if not isinstance(model_name_or_path, (str, os.PathLike)):
            raise ValueError(
                f"model_name_or_path must be a path or hub id, got a {type(model_name_or_path).__name__}: "
                "pass policy_kwargs=dict(model_name_or_path=...) with the causal LM's directory or hub id"
            )
        self.model_name_or_path = os.fspath(model_name_or_path)
        self.separate_value_model = bool(separate_value_model or value_model_name_or_path is not None)
        self.value_model_name_or_path = (
            str(value_model_name_or_path) if value_model_name_or_path is not None else None
        )
        self.use_cache = use_cache
        self.compile_decode = bool(compile_decode)
        self.sampler = sampler
        # EOS token the env refuses before min_new_tokens (set by the agents' rollout from the env's
        # rule); steps whose observation carries eos_allowed=False get it masked (see mask_eos).
        self.eos_token_id: int | None = None
        self.eos_min_new_tokens: int | None = None  # the env's min_new_tokens (evaluate_episodes' default flag)
        self.model_kwargs = dict(model_kwargs or {})
        self.seq_len = int(observation_space["input_ids"].shape[-1])
        kwargs.pop("net_arch", None)  # the LM is the network
        kwargs.setdefault("ortho_init", False)  # never re-initialise pretrained weights
        return kwargs

    # SB3 calls _build at the end of __init__; it builds the networks and the optimizer.
    def _build(self, lr_schedule: Schedule) -> None:
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_name_or_path, **self.model_kwargs)
        vocab = self.lm.get_output_embeddings().weight.shape[0]
        if vocab != self.action_space.n:
            raise ValueError(
                f"policy model {self.model_name_or_path!r} has {vocab} output logits but the env's action space "
                f"has {self.action_space.n} token ids: use the env's own model (env.unwrapped.policy_name_or_path) "
                "or one with the env's tokenizer"
            )
        hidden = int(getattr(self.lm.config, "hidden_size", None) or self.lm.config.n_embd)
        if self.separate_value_model:
            path = self.value_model_name_or_path or self.model_name_or_path
            self.value_model = AutoModel.from_pretrained(path, **self.model_kwargs)
            hidden_v = int(getattr(self.value_model.config, "hidden_size", None) or self.value_model.config.n_embd)
        else:
            self.value_model = None
            hidden_v = hidden
        self.value_head = nn.Linear(hidden_v, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / np.sqrt(hidden_v + 1))  # as trl's ValueHead scale
        nn.init.zeros_(self.value_head.bias)
        self._caches: dict[str, RowKVCache] = {}
        self.last_rollout_entropy: torch.Tensor | None = None
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    # ------------------------------------------------------------------ helpers
    def reset_cache(self) -> None:
        """Drop every row's KV cache (done whenever the weights may change)."""
        for cache in getattr(self, "_caches", {}).values():
            cache.clear()

    def set_training_mode(self, mode: bool) -> None:
        if mode:
            self.reset_cache()
        super().set_training_mode(mode)  # type: ignore[misc]

    def load_state_dict(self, *args: Any, **kwargs: Any):
        self.reset_cache()
        return super().load_state_dict(*args, **kwargs)  # type: ignore[misc]

    def _trunk_hidden(self, which: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` hidden state at the last real token of the actor (``"pi"``) or value model (``"vf"``)."""
        model = self.lm if which == "pi" else self.value_model
        trunk = base_of(model)
        if self.use_cache and not torch.is_grad_enabled() and not self.training:
            if which not in self._caches:
                self._caches[which] = RowKVCache(trunk, self.seq_len, compile_step=self.compile_decode)
            return self._caches[which].last_hidden(ids, mask)
        width = int(mask.sum(-1).max())  # right padding: nothing real beyond the longest row
        out = trunk(input_ids=ids[:, :width], attention_mask=mask[:, :width])
        idx = last_index(mask)
        return out.last_hidden_state[torch.arange(len(ids), device=ids.device), idx]

    def _unpack(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = as_token_ids(obs["input_ids"])
        mask = as_token_ids(obs["attention_mask"])
        return ids, mask

    def _heads(self, obs: dict[str, torch.Tensor], need_pi: bool = True, need_vf: bool = True):
        ids, mask = self._unpack(obs)
        logits = values = None
        h_pi = self._trunk_hidden("pi", ids, mask) if (need_pi or (need_vf and self.value_model is None)) else None
        if need_pi:
            logits = self.mask_eos(self.lm.get_output_embeddings()(h_pi).float(), obs.get(EOS_ALLOWED_KEY))
        if need_vf:
            h_vf = h_pi if self.value_model is None else self._trunk_hidden("vf", ids, mask)
            values = self.value_head(h_vf.to(self.value_head.weight.dtype)).float()  # a bf16 trunk, a float32 head
        return logits, values

    def mask_eos(self, logits: torch.Tensor, eos_allowed: torch.Tensor | None) -> torch.Tensor:
        """``logits`` ``(B, V)`` with EOS at the lowest float where ``eos_allowed`` ``(B,)`` (any shape
        with B elements) is False: its probability is exactly 0, the others renormalise. No-op when
        ``eos_allowed`` is None or no EOS token is set. Out of place (safe under autograd)."""
        eos = getattr(self, "eos_token_id", None)
        if eos_allowed is None or eos is None:
            return logits
        blocked = torch.nonzero(~eos_allowed.reshape(-1).bool().to(logits.device)).flatten()
        if len(blocked) == 0:
            return logits
        column = torch.full_like(blocked, int(eos))
        lowest = torch.tensor(torch.finfo(logits.dtype).min, dtype=logits.dtype, device=logits.device)
        return logits.index_put((blocked, column), lowest)

    def _distribution(self, logits: torch.Tensor, action_masks: Any = None):
        dist = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            apply_action_masks(dist, action_masks)
        return dist

    # ------------------------------------------------------------------ SB3 API
    def forward(self, obs: dict[str, torch.Tensor], deterministic: bool = False, action_masks: Any = None):
        """Returns actions ``(B,)``, values ``(B, 1)`` and log-probs ``(B,)``."""
        logits, values = self._heads(obs)
        dist = self._distribution(logits, action_masks)
        actions = self._sample(dist, deterministic)
        if not torch.is_grad_enabled():
            self.last_rollout_entropy = dist.entropy().detach()
        return actions.reshape((-1, *self.action_space.shape)), values, dist.log_prob(actions)

    def _sample(self, dist: Any, deterministic: bool) -> torch.Tensor:
        """``(B,)`` actions: the mode, or a draw with the policy's ``sampler``."""
        if deterministic or self.sampler == "multinomial":
            return dist.get_actions(deterministic=deterministic)
        return inverse_cdf_sample(dist.distribution.probs)

    def evaluate_actions(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, action_masks: Any = None):
        """Per-transition path: values ``(B, 1)``, log-probs ``(B,)``, entropy ``(B,)``."""
        logits, values = self._heads(obs)
        dist = self._distribution(logits, action_masks)
        return values, dist.log_prob(actions.long().flatten()), dist.entropy()

    def get_distribution(self, obs: dict[str, torch.Tensor], action_masks: Any = None):
        logits, _ = self._heads(obs, need_vf=False)
        return self._distribution(logits, action_masks)

    def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        _, values = self._heads(obs, need_pi=False)
        return values

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False, action_masks: Any = None):
        return self._sample(self.get_distribution(observation, action_masks), deterministic)

    def extract_features(self, obs: Any, *args: Any, **kwargs: Any):  # pragma: no cover - not used
        raise NotImplementedError("TransformerActorCriticPolicy reads token ids directly; use forward()")

    # ------------------------------------------------------------------ sequence-level path
    def evaluate_episodes(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_len: torch.Tensor,
        gen_len: torch.Tensor,
        action_masks: torch.Tensor | None = None,
        eos_allowed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced evaluation: one forward per whole episode.

        Args:
            input_ids, attention_mask: ``(E, L)`` final sequences (prompt + all T actions).
            prompt_len, gen_len: ``(E,)``.
            action_masks: optional ``(E, Tmax, V)`` bool masks per step.
            eos_allowed: optional ``(E, Tmax)`` bool, whether EOS could be sampled at each step
                (the rollout's rule, :meth:`mask_eos`). None: derived from the step index and
                :attr:`eos_min_new_tokens` (step t, 0-based, allows EOS iff t + 1 >= it) when the
                rollout set the rule, so the default path matches the rollout too.
        Returns:
            values, log_prob, entropy, each ``(E, Tmax)``, and ``valid`` ``(E, Tmax)`` bool; step t of
            episode e reads the logits at position ``prompt_len[e] + t - 1`` (state = prefix before a_t).
        """
        ids = as_token_ids(input_ids)
        mask = as_token_ids(attention_mask)
        t_max = int(gen_len.max())
        width = int(mask.sum(-1).max())
        steps = torch.arange(t_max, device=ids.device)
        valid = steps.unsqueeze(0) < gen_len.unsqueeze(1)
        pos = (prompt_len.unsqueeze(1) + steps.unsqueeze(0) - 1).clamp(max=width - 1)  # (E, Tmax)
        actions = ids.gather(1, (pos + 1).clamp(max=ids.shape[1] - 1))
        h = base_of(self.lm)(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
        h_pi = h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (E, Tmax, D)
        logits = self.lm.get_output_embeddings()(h_pi).float()
        if self.value_model is None:
            h_vf = h_pi
        else:
            hv = base_of(self.value_model)(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
            h_vf = hv.gather(1, pos.unsqueeze(-1).expand(-1, -1, hv.shape[-1]))
        values = self.value_head(h_vf.to(self.value_head.weight.dtype)).float().squeeze(-1)
        if eos_allowed is None and self.eos_token_id is not None and self.eos_min_new_tokens is not None:
            allowed = (steps + 1 >= self.eos_min_new_tokens).unsqueeze(0).expand(len(ids), -1)
        else:
            allowed = None if eos_allowed is None else eos_allowed[:, :t_max]
        flat_logits = self.mask_eos(logits.reshape(-1, logits.shape[-1]), allowed)
        flat_masks = None if action_masks is None else action_masks.reshape(-1, action_masks.shape[-1])
        dist = self._distribution(flat_logits, flat_masks)
        log_prob = dist.log_prob(actions.reshape(-1)).reshape(actions.shape)
        entropy = dist.entropy().reshape(actions.shape)
        return values, log_prob, entropy, valid

    # ------------------------------------------------------------------ persistence
    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(
            model_name_or_path=self.model_name_or_path,
            value_model_name_or_path=self.value_model_name_or_path,
            separate_value_model=self.separate_value_model,
            use_cache=self.use_cache,
            compile_decode=self.compile_decode,
            sampler=self.sampler,
            model_kwargs=self.model_kwargs,
        )
        for key in ("net_arch", "activation_fn", "ortho_init", "features_extractor_class", "features_extractor_kwargs"):
            data.pop(key, None)
        return data

    def actor_parameters(self) -> list[nn.Parameter]:
        """The actor's parameters, chosen by identity: the LM's (a shared trunk included), never the
        value head's or the separate value model's. TRPO's natural-gradient step moves exactly these."""
        return list(self.lm.parameters())

    def save_pretrained(self, directory: str) -> None:
        """Write the actor in Hugging Face format (loadable with ``AutoModelForCausalLM``)."""
        self.lm.save_pretrained(directory)

    def frozen_copy(self) -> PreTrainedModel:
        """A frozen copy of the actor LM (the KL reference)."""
        ref = copy.deepcopy(self.lm).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref


class TransformerActorCriticPolicy(_TransformerPolicyMixin, ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` whose actor is a causal LM (see module doc).

    :param observation_space: the token env's ``Dict`` of ``input_ids`` / ``attention_mask`` ``(L,)``.
    :param action_space: ``Discrete(V)``, V the LM's vocabulary.
    :param lr_schedule: SB3's learning-rate schedule (the optimizer's initial rate is ``lr_schedule(1)``).
    :param model_name_or_path: the actor (path or hub id). The agents algorithms default it to
        the env's ``policy_name_or_path``.
    :param value_model_name_or_path: a separate value trunk (implies ``separate_value_model``).
    :param separate_value_model: value head on a separate copy of the actor's trunk, not shared.
    :param use_cache: per-env KV cache during rollouts.
    :param compile_decode: compile the cache's single-token decode step with ``torch.compile``
        (CUDA graphs on CUDA). The first rollout at each env count pays the compilation (seconds
        to a minute); results equal the eager step's within float rounding, not bit for bit.
    :param sampler: how actions are drawn: ``"multinomial"`` (``torch.multinomial``, as SB3's
        Categorical and HF ``generate``) or ``"inverse_cdf"`` (:func:`inverse_cdf_sample`: the same
        distribution, much cheaper on a CPU, another random stream: seeded runs differ from multinomial's).
    :param model_kwargs: forwarded to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...).
    :param kwargs: further SB3 ``ActorCriticPolicy`` keywords (``optimizer_class``, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model_name_or_path: str | None = None,
        value_model_name_or_path: str | None = None,
        separate_value_model: bool = False,
        use_cache: bool = True,
        compile_decode: bool = False,
        sampler: str = "multinomial",
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._init_transformer(
            observation_space, action_space, model_name_or_path, value_model_name_or_path,
            separate_value_model, use_cache, compile_decode, sampler, model_kwargs, kwargs,
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MaskableTransformerActorCriticPolicy(_TransformerPolicyMixin, MaskableActorCriticPolicy):
    """The same policy for sb3-contrib's ``MaskablePPO`` (masks applied to the LM's Categorical).

    Same parameters as :class:`TransformerActorCriticPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model_name_or_path: str | None = None,
        value_model_name_or_path: str | None = None,
        separate_value_model: bool = False,
        use_cache: bool = True,
        compile_decode: bool = False,
        sampler: str = "multinomial",
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._init_transformer(
            observation_space, action_space, model_name_or_path, value_model_name_or_path,
            separate_value_model, use_cache, compile_decode, sampler, model_kwargs, kwargs,
        )
        kwargs.pop("use_sde", None)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
