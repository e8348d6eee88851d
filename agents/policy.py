"""``TransformerActorCriticPolicy``: a Hugging Face causal LM as an SB3 actor-critic policy.

Observation: ``{"input_ids": (B, L), "attention_mask": (B, L)}`` laid out
``[prompt | generated | pad]`` (right padding, as the abc_gym token envs give it).
The state is the real-token prefix; the action distribution is a Categorical over the
LM's logits at the last real token; the value is a linear head on the hidden state
of that same token (shared trunk by default, or a separate value model).

Two forward paths, both equal within float tolerance (tested):

- full forward (no cache): used for training (``evaluate_actions``) and whenever
  gradients are on;
- per-env KV cache (:class:`agents.kv_cache.RowKVCache`): used during rollouts (no grad). Each env row keeps
  the keys/values of its prefix; a step whose prefix extends the cached one by one
  token feeds only that token. Anything else (episode start, other batch) re-prefills
  the row. The cache is keyed on the token prefix itself, so it can never be stale
  for a different episode; it is dropped whenever the weights may change
  (``set_training_mode(True)``, ``load_state_dict``). With ``compile_decode=True`` its
  fixed-shape single-token step runs through ``torch.compile`` (one graph; on CUDA with
  ``mode="reduce-overhead"``, i.e. CUDA graphs, the launch-bound decode's fix).

``evaluate_episodes`` is the teacher-forced path of :class:`agents.token_ppo.TokenPPO`:
one forward per whole episode gives every step's log-prob, value and entropy.

Deferred values: with a separate value trunk the rollout need not decode it step by step
(a second KV-cached decode per token). A value depends only on the observation (the prefix),
so one causal forward of the value trunk over a finished episode's final sequence gives
every step's value (:meth:`episode_values`); the rollout calls ``forward(obs, with_values=False)``
and fills the values in when each episode ends (:mod:`agents.credit_mixin`).
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

from agents.buffers import EOS_ALLOWED_KEY
from agents.compat import apply_action_masks
from agents.compat.torch import assert_async
from agents.config import SAMPLERS
from agents.kv_cache import _COMPILED_STEPS, RowKVCache, compiled_decode_step  # noqa: F401  (re-exported)
from agents.sampling import inverse_cdf_sample
from agents.token_obs import FLOAT_EXACT_IDS, as_token_ids, base_of, check_token_spaces, last_index  # noqa: F401

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
        fused_activation: bool | None = None,
    ) -> dict[str, Any]:
        check_token_spaces(observation_space, action_space)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: use one of {SAMPLERS} (python -m agents: --sampler)")
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
        self.fused_activation = None if fused_activation is None else bool(fused_activation)
        self.fused_activations = 0  # how many activations _build put on the fused kernel
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
        if self.fused_activation is not False:
            self._fuse_activations()
        self.value_head = nn.Linear(hidden_v, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / np.sqrt(hidden_v + 1))  # as trl's ValueHead scale
        nn.init.zeros_(self.value_head.bias)
        self._caches: dict[str, RowKVCache] = {}
        self.last_rollout_entropy: torch.Tensor | None = None
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _fuse_activations(self) -> None:
        """The actor's and value trunk's Python tanh-GELUs on torch's fused kernel
        (:func:`~agents.compat.use_fused_gelu`; the KL reference, a copy of the actor, inherits them).
        ``fused_activation=None`` (the default) fuses whatever the models have and leaves other models as
        they are; ``True`` asks for it, so a model with none to replace is an error, not a flag that
        silently does nothing."""
        from agents.compat.transformers import use_fused_gelu

        swapped = use_fused_gelu(self.lm) + (0 if self.value_model is None else use_fused_gelu(self.value_model))
        self.fused_activations = swapped
        if swapped == 0 and self.fused_activation:
            raise ValueError(
                f"fused_activation=True, but {self.model_name_or_path!r} has no transformers Python tanh-GELU "
                "(activation gelu_new or gelu_fast) to put on a fused kernel; its activations are left as they are. "
                "Drop fused_activation (python -m agents: leave out --fused-activation; the default fuses where it can)"
            )

    # ------------------------------------------------------------------ helpers
    def reset_cache(self) -> None:
        """Drop every row's KV cache (done whenever the weights may change)."""
        for cache in getattr(self, "_caches", {}).values():
            cache.clear()

    def set_compile_decode(self, flag: bool) -> None:
        """Switch the compiled decode step on or off, for the policy and the caches it already holds."""
        self.compile_decode = bool(flag)
        for cache in getattr(self, "_caches", {}).values():
            cache.compile_step = self.compile_decode

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
    def forward(
        self, obs: dict[str, torch.Tensor], deterministic: bool = False, action_masks: Any = None, with_values: bool = True
    ):
        """Returns actions ``(B,)``, values ``(B, 1)`` and log-probs ``(B,)``.

        ``with_values=False`` (the rollout with deferred values, :meth:`episode_values`): the value
        trunk is not run and the values are NaN placeholders, to be overwritten once the episode ends.
        """
        logits, values = self._heads(obs, need_vf=with_values)
        if values is None:
            values = torch.full((logits.shape[0], 1), float("nan"), device=logits.device)
        if action_masks is None and not deterministic and self.sampler == "inverse_cdf":
            # the rollout's hot path: one log_softmax instead of a Categorical per step (log_prob_and_entropy)
            log_p = torch.log_softmax(logits, dim=-1)  # (B, V)
            probs = log_p.exp()
            actions = inverse_cdf_sample(probs)
            log_prob = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            entropy = categorical_entropy(log_p, probs)
        else:
            dist = self._distribution(logits, action_masks)
            actions = self._sample(dist, deterministic)
            log_prob, entropy = dist.log_prob(actions), dist.entropy()
        if not torch.is_grad_enabled():
            self.last_rollout_entropy = entropy.detach()
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def _sample(self, dist: Any, deterministic: bool) -> torch.Tensor:
        """``(B,)`` actions: the mode, or a draw with the policy's ``sampler``."""
        if deterministic or self.sampler == "multinomial":
            return dist.get_actions(deterministic=deterministic)
        return inverse_cdf_sample(dist.distribution.probs)

    def evaluate_actions(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, action_masks: Any = None):
        """Per-transition path: values ``(B, 1)``, log-probs ``(B,)``, entropy ``(B,)``."""
        logits, values = self._heads(obs)
        if action_masks is None:
            log_prob, entropy = log_prob_and_entropy(logits, actions.long().flatten())
            assert_async(torch.isfinite(log_prob).all(), "evaluate_actions: a non-finite log-prob (NaN or inf logits)")
            return values, log_prob, entropy
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
        entropy_grad: bool = True,
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
            entropy_grad: False returns the entropy detached (no autograd graph through the
                ``(E * Tmax, V)`` softmax it needs): for a loss whose entropy weight is 0, where its
                gradient would be zeros anyway.
        Returns:
            values, log_prob, entropy, each ``(E, Tmax)``, and ``valid`` ``(E, Tmax)`` bool; step t of
            episode e reads the logits at position ``prompt_len[e] + t - 1`` (state = prefix before a_t).
        """
        ids = as_token_ids(input_ids)
        mask = as_token_ids(attention_mask)
        t_max = int(gen_len.max())
        width, pos = _step_positions(mask, prompt_len, t_max)
        steps = torch.arange(t_max, device=ids.device)
        valid = steps.unsqueeze(0) < gen_len.unsqueeze(1)
        actions = ids.gather(1, (pos + 1).clamp(max=ids.shape[1] - 1))
        h = base_of(self.lm)(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
        h_pi = _at_steps(h, pos)  # (E, Tmax, D)
        logits = self.lm.get_output_embeddings()(h_pi).float()
        if self.value_model is None:
            values = self._value_of(h_pi)
        else:
            values = self._value_trunk_steps(ids, mask, width, pos)
        if eos_allowed is None and self.eos_token_id is not None and self.eos_min_new_tokens is not None:
            allowed = (steps + 1 >= self.eos_min_new_tokens).unsqueeze(0).expand(len(ids), -1)
        else:
            allowed = None if eos_allowed is None else eos_allowed[:, :t_max]
        flat_logits = self.mask_eos(logits.reshape(-1, logits.shape[-1]), allowed)
        if action_masks is not None:  # MaskablePPO: sb3-contrib's masked Categorical
            dist = self._distribution(flat_logits, action_masks.reshape(-1, action_masks.shape[-1]))
            log_prob = dist.log_prob(actions.reshape(-1)).reshape(actions.shape)
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                entropy = dist.entropy().reshape(actions.shape)
            return values, log_prob, entropy, valid
        log_prob, entropy = log_prob_and_entropy(flat_logits, actions.reshape(-1), entropy_grad)
        log_prob = log_prob.reshape(actions.shape)
        # Categorical's NaN check, on the (E, Tmax) result instead of every logit: a NaN or +inf logit
        # (or a taken action of probability 0) must not reach the optimiser as a NaN loss
        assert_async((torch.isfinite(log_prob) | ~valid).all(),
                     "evaluate_episodes: a non-finite log-prob (NaN or inf logits from the policy)")
        return values, log_prob, entropy.reshape(actions.shape), valid

    def episode_values(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor, gen_len: torch.Tensor
    ) -> torch.Tensor:
        """``(E, Tmax)`` value of every step of each finished episode from ONE causal forward of the
        value trunk over its final sequence (no KV-cached decode): step t's state is the prefix of
        ``prompt_len + t`` tokens, whose last hidden state the causal mask makes independent of what
        follows. Equal to the rollout's per-step values within float rounding (tests/test_deferred_values.py).
        No gradient (rollout data).

        Args:
            input_ids, attention_mask: ``(E, L)`` final sequences, right padded.
            prompt_len, gen_len: ``(E,)``; entries past ``gen_len[e]`` are padding (read, not meaningful).
        """
        if self.value_model is None:
            raise ValueError(
                "episode_values needs a separate value trunk (separate_value_model=True): with a shared trunk the "
                "rollout's values come with its actions, nothing is deferred"
            )
        ids = as_token_ids(input_ids)
        mask = as_token_ids(attention_mask)
        width, pos = _step_positions(mask, prompt_len, int(gen_len.max()))
        with torch.no_grad():  # rollout data (the old values): never differentiated
            return self._value_trunk_steps(ids, mask, width, pos)

    def _value_trunk_steps(self, ids: torch.Tensor, mask: torch.Tensor, width: int, pos: torch.Tensor) -> torch.Tensor:
        """``(E, Tmax)`` values at positions ``pos`` ``(E, Tmax)`` from one forward of the separate value trunk."""
        assert self.value_model is not None
        hv = base_of(self.value_model)(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
        return self._value_of(_at_steps(hv, pos))

    def _value_of(self, h: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` hidden states -> ``(...)`` float32 values (a bf16 trunk, a float32 head)."""
        return self.value_head(h.to(self.value_head.weight.dtype)).float().squeeze(-1)

    # ------------------------------------------------------------------ persistence
    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(
            model_name_or_path=self.model_name_or_path,
            value_model_name_or_path=self.value_model_name_or_path,
            separate_value_model=self.separate_value_model,
            use_cache=self.use_cache,
            compile_decode=self.compile_decode,
            fused_activation=self.fused_activation,
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


def log_prob_and_entropy(
    logits: torch.Tensor, actions: torch.Tensor, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``actions`` ``(N,)`` and entropies, each ``(N,)``, of the softmax of ``logits`` ``(N, V)``.

    What ``torch.distributions.Categorical(logits=...)`` gives (within float rounding), from one
    ``log_softmax``: one fused kernel and its one-kernel backward, where Categorical normalises
    with ``logsumexp`` and a subtraction (five passes over the ``(N, V)`` logits, each kept for
    autograd) and re-checks every logit for NaN (a row with NaN logits gives a NaN log-prob here:
    :meth:`evaluate_episodes` checks those). ``entropy_grad=False``: the entropy without autograd.
    """
    log_p = torch.log_softmax(logits, dim=-1)  # (N, V)
    log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = categorical_entropy(log_p)
    return log_prob, entropy


def categorical_entropy(log_p: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` entropies from normalised log-probs ``log_p`` ``(N, V)`` (and their ``exp``, if at hand).
    The clamp: a -inf log-prob has p = 0 and contributes 0, not 0 * -inf (as Categorical.entropy)."""
    probs = log_p.exp() if probs is None else probs
    return -(probs * log_p.clamp(min=torch.finfo(log_p.dtype).min)).sum(-1)


def _step_positions(mask: torch.Tensor, prompt_len: torch.Tensor, t_max: int) -> tuple[int, torch.Tensor]:
    """``(width, pos)``: the longest real length of the ``(E, L)`` right-padded ``mask`` and the ``(E, Tmax)``
    position whose hidden state is step t's state (``prompt_len + t - 1``, the last token of its prefix)."""
    width = int(mask.sum(-1).max())
    steps = torch.arange(t_max, device=mask.device)
    return width, (prompt_len.unsqueeze(1) + steps.unsqueeze(0) - 1).clamp(max=width - 1)


def _at_steps(h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``(E, Tmax, D)``: the ``(E, W, D)`` hidden states ``h`` at positions ``pos`` ``(E, Tmax)``."""
    return h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))


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
    :param sampler: how actions are drawn: ``"inverse_cdf"`` (the default, :func:`~agents.sampling.inverse_cdf_sample`:
        the distribution of ``torch.multinomial``, one uniform per row instead of one exponential per
        vocabulary entry, much cheaper on a CPU) or ``"multinomial"`` (``torch.multinomial``, as SB3's
        Categorical and HF ``generate``; the default before 2026-11-29: another random stream, so seeded
        runs differ between the two).
    :param model_kwargs: forwarded to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...).
    :param fused_activation: whether the actor's and value trunk's tanh GELU (transformers' ``gelu_new`` /
        ``gelu_fast``, Python tensor expressions: GPT-2's) runs on torch's fused kernel (``gelu_pytorch_tanh``,
        :func:`~agents.compat.use_fused_gelu`): the same function within float rounding, 2-5x faster per
        activation on a CPU. ``None`` (the default since 2026-11-30): wherever the models have such a GELU,
        other models as they are. ``True``: an error for a model without one. ``False``: transformers'
        Python formula (the default before 2026-11-30; seeded runs differ between the two).
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
        sampler: str = "inverse_cdf",
        model_kwargs: dict[str, Any] | None = None,
        fused_activation: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._init_transformer(
            observation_space, action_space, model_name_or_path, value_model_name_or_path,
            separate_value_model, use_cache, compile_decode, sampler, model_kwargs, kwargs, fused_activation,
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
        sampler: str = "inverse_cdf",
        model_kwargs: dict[str, Any] | None = None,
        fused_activation: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._init_transformer(
            observation_space, action_space, model_name_or_path, value_model_name_or_path,
            separate_value_model, use_cache, compile_decode, sampler, model_kwargs, kwargs, fused_activation,
        )
        kwargs.pop("use_sde", None)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
