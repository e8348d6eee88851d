"""KL penalty to the frozen reference policy (as trl 0.7.4, the paper's code base).

Per token: ``r_t -= kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``, with ``log pi``
the behaviour log-prob stored at rollout time. The coefficient is fixed or adaptive
(Ziegler et al. 2019; trl's ``AdaptiveKLController``): after each rollout,
``kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_completions / horizon``,
with KL the mean over completions of the summed per-token KL.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel

from agents.token_obs import base_of


class FixedKLController:
    """Constant coefficient.

    :param kl_coef: the coefficient, >= 0.
    """

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController(FixedKLController):
    """trl's adaptive controller (paper defaults: init 0.2, target 6, horizon 10000).

    :param init_kl_coef: the initial coefficient, >= 0.
    :param target: target KL (mean over completions of the summed per-token KL), > 0.
    :param horizon: completions over which a full proportional correction is applied, > 0.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        super().__init__(init_kl_coef)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got target={target}, horizon={horizon}")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + proportional_error * n_steps / self.horizon


def make_kl_controller(kl_coef: float, adaptive: bool, target: float, horizon: float) -> FixedKLController:
    """The adaptive controller, or a fixed one when ``adaptive`` is false (``target`` and ``horizon`` unused)."""
    return AdaptiveKLController(kl_coef, target, horizon) if adaptive else FixedKLController(kl_coef)


@torch.no_grad()
def sequence_log_probs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: torch.Tensor,
    gen_len: torch.Tensor,
    eos_token_id: int | None = None,
    eos_allowed: torch.Tensor | None = None,
    action_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs of each generated token under ``model``, one teacher-forced forward.

    The reference is constrained exactly as the policy was when it sampled, so the KL
    measures how far the learner moved, not the task's constraint: EOS gets probability 0
    at the steps where ``eos_allowed`` is False (the fixed-length rule of
    ``TransformerActorCriticPolicy.mask_eos``), and tokens outside ``action_masks`` get
    probability 0 (MaskablePPO's NLPO masks, as sb3-contrib's ``MaskableCategorical``
    masks them); the rest renormalise. With policy == reference the per-token KL is then 0.

    Args:
        input_ids, attention_mask: ``(E, L)`` long, right padded ``[prompt | completion | pad]``.
        prompt_len, gen_len: ``(E,)`` long.
        eos_token_id: the EOS id that ``eos_allowed`` refers to (None: no EOS rule).
        eos_allowed: optional ``(E, Tmax')`` bool, Tmax' >= ``gen_len.max()``: whether EOS could be
            sampled at step t (entries past an episode's end are ignored).
        action_masks: optional ``(E, Tmax', V)`` bool: the tokens that could be sampled at step t.
    Returns:
        ``(E, Tmax)`` float32; entries past ``gen_len`` are 0.
    """
    width = int(attention_mask.sum(-1).max())
    t_max = int(gen_len.max())
    steps = torch.arange(t_max, device=input_ids.device)
    pos = (prompt_len.unsqueeze(1) + steps.unsqueeze(0) - 1).clamp(max=width - 2)
    actions = input_ids.gather(1, pos + 1)
    # The LM head only where an action is predicted (as the policy's evaluate_episodes): the prompt's
    # positions would cost a (V, D) product each for nothing.
    hidden = base_of(model)(input_ids=input_ids[:, :width], attention_mask=attention_mask[:, :width]).last_hidden_state
    hidden = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (E, Tmax, D)
    step_logits = model.get_output_embeddings()(hidden).float()  # (E, Tmax, V)
    if eos_token_id is not None and eos_allowed is not None:
        blocked = ~eos_allowed[:, :t_max].to(step_logits.device).bool()
        lowest = torch.finfo(step_logits.dtype).min  # the policy's own masking value (mask_eos)
        step_logits[..., int(eos_token_id)] = step_logits[..., int(eos_token_id)].masked_fill(blocked, lowest)
    if action_masks is not None:
        allowed = action_masks[:, :t_max].to(step_logits.device).bool()
        step_logits = torch.where(allowed, step_logits, torch.tensor(-1e8, dtype=step_logits.dtype, device=step_logits.device))
    logp = torch.log_softmax(step_logits, -1)
    out = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return out * (steps.unsqueeze(0) < gen_len.unsqueeze(1))
