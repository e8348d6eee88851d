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
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor, gen_len: torch.Tensor
) -> torch.Tensor:
    """Log-probs of each generated token under ``model``, one teacher-forced forward.

    Args:
        input_ids, attention_mask: ``(E, L)`` long, right padded ``[prompt | completion | pad]``.
        prompt_len, gen_len: ``(E,)`` long.
    Returns:
        ``(E, Tmax)`` float32; entries past ``gen_len`` are 0.
    """
    width = int(attention_mask.sum(-1).max())
    logits = model(input_ids=input_ids[:, :width], attention_mask=attention_mask[:, :width]).logits.float()
    t_max = int(gen_len.max())
    steps = torch.arange(t_max, device=input_ids.device)
    pos = (prompt_len.unsqueeze(1) + steps.unsqueeze(0) - 1).clamp(max=width - 2)
    actions = input_ids.gather(1, pos + 1)
    logp = torch.log_softmax(logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])), -1)
    out = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return out * (steps.unsqueeze(0) < gen_len.unsqueeze(1))
