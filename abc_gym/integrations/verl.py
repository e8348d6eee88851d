"""verl reward manager that gives PPO the env's dense credit: :class:`ABCRewardManager`.

verl's reward managers turn a rollout batch (a ``DataProto``) into ``token_level_scores``,
a ``(B, response_length)`` float tensor aligned to ``batch["responses"]``; verl's stock
managers put one score on each response's last token. This one scores the batch with an
abc_gym :class:`~abc_gym.reward_model.RewardModel` and spreads each R over the response
tokens with any registered credit scheme (``reward_mode="abc"``, ``"red"``, ``"uniform"``,
``"sparse"``, ...), through :func:`abc_gym.batch_credit.token_level_rewards`: for the same
prompt and response ids, the numbers are the env's ``info["token_rewards"]``.

Interface: verl's ``AbstractRewardManager`` (``verl.workers.reward_manager``), registered
there under the name ``"abc_gym"`` when this module is imported:
``manager(data, return_dict=True)`` returns ``{"reward_tensor": (B, response_length)
float32, "reward_extra_info": {"score": [R, ...]}}``; ``manager(data)`` the tensor alone.
It reads ``data.batch["prompts"]`` ``(B, P)`` (left-padded), ``["responses"]`` ``(B, R)``
(right-padded), ``["input_ids"]`` ``(B, P + R)``, ``["attention_mask"]`` ``(B, P + R)``
and ``["response_mask"]`` ``(B, R)`` (``attention_mask[:, P:]`` when absent, as verl's
``compute_response_mask``).

Tested with verl 0.9.1 (tests/test_verl.py). In verl 0.9's own PPO trainer the rewards come
from the newer reward loop (``verl.experimental.reward_loop``), whose per-sample
``run_single`` returns one scalar that the agent loop puts on the last token: that route
cannot carry dense credit, so use this manager where a reward manager's
``reward_tensor`` becomes ``token_level_scores`` (verl's ``AbstractRewardManager`` API, a
custom trainer loop) - docs/clients.md.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch

try:
    from verl import DataProto
    from verl.workers.reward_manager import register
    from verl.workers.reward_manager.abstract import AbstractRewardManager
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        f"abc_gym.integrations.verl needs verl ({err}): pip install 'abc_gym[verl]' (verl 0.9; on a CPU machine "
        "install it in its own venv, see docs/clients.md)"
    ) from err

from abc_gym.batch_credit import token_level_rewards
from abc_gym.core import GoldCredit
from abc_gym.credit import check_beta, credit_scheme
from abc_gym.device import Device
from abc_gym.reward_model import RewardModel

__all__ = ["ABCRewardManager", "response_token_rewards"]


def response_token_rewards(
    reward_model: RewardModel,
    data: DataProto,
    *,
    reward_mode: str = "abc",
    beta: float = 0.8,
    gold_credit: GoldCredit | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards of a verl batch, aligned to its responses.

    Args:
        reward_model: the abc_gym reward model (its ``policy_tokenizer`` is the actor's).
        data: a ``DataProto`` with ``prompts`` ``(B, P)``, ``responses`` ``(B, R)``,
            ``input_ids`` and ``attention_mask`` ``(B, P + R)``, optionally ``response_mask`` ``(B, R)``.
        reward_mode, beta, gold_credit: see :func:`abc_gym.batch_credit.token_level_rewards`.
    Returns:
        ``(token_rewards (B, R) float32, score (B,) float32)`` on the batch's device; each row of
        ``token_rewards`` sums to its score, zero past the response's last token.
    """
    batch = data.batch
    missing = [k for k in ("prompts", "responses", "input_ids", "attention_mask") if k not in batch.keys()]
    if missing:
        raise KeyError(
            f"the verl batch lacks {missing}: ABCRewardManager needs the rollout's prompts, responses, input_ids and "
            "attention_mask (what verl's rollout puts in the batch)"
        )
    prompt_length = batch["prompts"].shape[-1]
    attention_mask = batch["attention_mask"]
    response_mask = batch["response_mask"] if "response_mask" in batch.keys() else attention_mask[:, prompt_length:]
    if response_mask.shape != batch["responses"].shape:
        raise ValueError(
            f"response_mask has shape {tuple(response_mask.shape)}, responses {tuple(batch['responses'].shape)}: "
            "they must match"
        )
    # The batch function takes masks over the whole sequence: no response on the prompt's columns.
    full_mask = torch.cat([torch.zeros_like(batch["prompts"], dtype=torch.bool), response_mask.bool()], dim=-1)
    rewards, score = token_level_rewards(
        reward_model, batch["input_ids"], attention_mask, full_mask,
        reward_mode=reward_mode, beta=beta, gold_credit=gold_credit,
    )
    return rewards[:, prompt_length:].float(), score


@register("abc_gym")
class ABCRewardManager(AbstractRewardManager):
    """verl reward manager: the reward model's score R spread over each response by an abc_gym credit scheme.

    Args:
        tokenizer: the actor's tokenizer (verl passes it).
        num_examine: how many rows of each batch to print (prompt, response, R), as verl's managers do.
        compute_score: verl's rule-based score function; not used (R is the reward model's score).
            Accepted because verl's ``load_reward_manager`` always passes one.
        reward_fn_key: verl's data-source key; only used to label printed rows.
        reward_model: path or hub id of a sequence-classification reward model, or a loaded
            :class:`~abc_gym.reward_model.RewardModel` (whose ``policy_tokenizer`` must be the actor's).
        reward_mode: a registered credit scheme (:func:`abc_gym.reward_modes`), default ``"abc"``.
        beta: mixing weight of ``abc`` / ``red`` (paper default 0.8).
        gold_credit: ``text -> [(start, end, weight)]`` for schemes that need gold credit (``oracle``).
        device: where a reward model loaded from a path runs (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...).
        reward_model_kwargs: keywords for :meth:`RewardModel.from_pretrained` (``positive_label``,
            ``pooling``, ``attention_source``) when ``reward_model`` is a path.
    """

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        *,
        reward_model: str | os.PathLike | RewardModel | None = None,
        reward_mode: str = "abc",
        beta: float = 0.8,
        gold_credit: GoldCredit | None = None,
        device: Device = "auto",
        reward_model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if reward_model is None:
            raise TypeError(
                "ABCRewardManager needs reward_model= (a path or hub id of a sequence-classification reward model, or "
                "an abc_gym.RewardModel); in a verl config pass it in the reward manager's kwargs"
            )
        self.tokenizer = tokenizer
        self.num_examine = int(num_examine)
        self.compute_score = compute_score
        self.reward_fn_key = reward_fn_key
        self.beta = check_beta(beta)
        if isinstance(reward_model, RewardModel):
            if reward_model_kwargs:
                raise ValueError("reward_model_kwargs only apply when reward_model is a path or hub id")
            self.reward_model = reward_model
        else:
            self.reward_model = RewardModel.from_pretrained(
                reward_model, tokenizer, device=device, **(reward_model_kwargs or {})
            )
        scheme = credit_scheme(reward_mode)
        scheme.check_reward_model(self.reward_model)  # refuse now, not at the first batch
        if scheme.needs_gold_credit and gold_credit is None:
            raise ValueError(f"reward_mode={scheme.name!r} needs gold_credit=<text -> [(start, end, weight)]>")
        self.reward_mode = scheme.name
        self.gold_credit = gold_credit

    def __call__(self, data: DataProto, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        """``reward_tensor`` ``(B, response_length)`` float32 (and ``reward_extra_info`` if ``return_dict``)."""
        reward_tensor, score = response_token_rewards(
            self.reward_model, data, reward_mode=self.reward_mode, beta=self.beta, gold_credit=self.gold_credit
        )
        reward_extra_info: dict[str, list[Any]] = defaultdict(list)
        reward_extra_info["score"] = score.tolist()
        self._print_examples(data, score)
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": reward_extra_info}
        return reward_tensor

    def _print_examples(self, data: DataProto, score: torch.Tensor) -> None:
        """Print the first ``num_examine`` rows (prompt, response, R), as verl's managers do."""
        prompt_length = data.batch["prompts"].shape[-1]
        sources = data.non_tensor_batch.get(self.reward_fn_key) if data.non_tensor_batch else None
        for i in range(min(self.num_examine, len(data))):
            mask = data.batch["attention_mask"][i].bool()
            prompt = data.batch["input_ids"][i, :prompt_length][mask[:prompt_length]]
            response = data.batch["input_ids"][i, prompt_length:][mask[prompt_length:]]
            label = f" ({sources[i]})" if sources is not None else ""
            print(f"[prompt{label}]", self.tokenizer.decode(prompt, skip_special_tokens=True))
            print("[response]", self.tokenizer.decode(response, skip_special_tokens=True))
            print(f"[score ({self.reward_mode})]", float(score[i]))
