"""TRL's PPO learning from the dense credit: :class:`DenseCreditPPOTrainer` (TRL 1.12.0 only).

Why a subclass with a copied loop. TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer.train()``
builds the per-token rewards inline, in one 346-line method, and puts the reward model's
score on one position::

    rewards = non_score_reward.clone()               # -kl_coef * KL per token
    ...
    rewards[actual_start, actual_end] += scores      # the whole score, one position per row

It offers no hook between that statement and GAE (``scores`` is ``(B,)`` and is also its
metrics' ``objective/scores``). So :class:`DenseCreditPPOTrainer` carries a copy of that
``train()`` in which this one statement is replaced by a call to
:meth:`DenseCreditPPOTrainer.add_token_credit`; nothing else differs
(``tests/test_trl_route.py`` diffs the copy against the installed TRL). The copy cannot go
stale: 1.12.0 is the only 1.12 release, and TRL 1.13 removed PPO. Hence the pin
``trl==1.12.0`` (the ``trl`` extra); importing this module under any other TRL raises.

What the replaced statement does instead. The response the reward model scored
(``queries`` + TRL's post-processed response, up to its ``sequence_lengths``) goes through
:func:`abc_gym.batch_credit.token_level_rewards` with ``credit_model`` (an
:class:`abc_gym.reward_model.RewardModel`, the env's scorer, which can read its attention),
and its ``(B, T)`` credit is added over the response tokens: on top of TRL's own per-token KL
term, so ``rewards = -kl_coef * KL + credit``. Each row's credit sums to R. TRL's
``reward_model`` must be the same scorer (TRL reads one output per sequence: for the shipped
2-class model, ``benchmarks/peer_trl.py``'s ``one_output_reward_model``); its ``scores`` are
checked against the credit model's R row by row, and a mismatch raises.

Differences from stock TRL, by design:

- ``reward_mode="sparse"`` puts R on the last response token (the paper's trl 0.7.4 did the
  same). Stock TRL 1.12 puts it one position past the last token when the response ended
  before ``response_length`` (a padding position its value loss still covers). Compare ABC
  with ``reward_mode="sparse"`` of this class, not with stock ``PPOTrainer``.
- ``missing_eos_penalty`` still applies: TRL subtracts it from ``scores``; here it goes on the
  last response token, beside the credit.
- A row whose response is empty (its first token is the pad id) has no token to spread R
  over; it keeps TRL's placement (position 0).

Cost: one more reward-model forward per rollout (TRL's own for ``scores``, then the credit
model's, with its attention row in ``abc`` mode).

Example (the shipped task; the full settings are in ``tests/test_trl_route.py``)::

    from abc_gym.integrations.trl import DenseCreditPPOTrainer
    from abc_gym.reward_model import RewardModel

    credit_model = RewardModel.from_pretrained(REWARD_MODEL_PATH, tokenizer, device="cpu")
    trainer = DenseCreditPPOTrainer(
        args=PPOConfig(...), processing_class=tokenizer, model=policy, ref_model=ref,
        reward_model=one_output_rm, train_dataset=prompts, value_model=value,
        credit_model=credit_model, reward_mode="abc", beta=0.8,
    )
    trainer.train()
"""

# train() below is copied from TRL 1.12.0, trl/experimental/ppo/ppo_trainer.py (lines 604-949),
# Copyright 2020-2026 The HuggingFace Team, Apache License 2.0
# (http://www.apache.org/licenses/LICENSE-2.0); one statement changed, marked "abc_gym:".

from __future__ import annotations

import gc
import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from abc_gym.batch_credit import token_level_rewards
from abc_gym.core import GoldCredit
from abc_gym.credit import check_beta, credit_scheme
from abc_gym.reward_model import RewardModel

#: The only TRL release this module runs on (module doc).
TRL_VERSION = "1.12.0"
INSTALL = f'pip install torch==<your torch> -e "<abc_gym checkout>[trl]" (trl=={TRL_VERSION}, the last release with PPO; in its own venv)'


def _import_trl() -> str:
    """TRL's version; ImportError naming the install unless it is exactly :data:`TRL_VERSION`."""
    try:
        import trl
    except ImportError:
        raise ImportError(f"abc_gym.integrations.trl needs TRL {TRL_VERSION}: {INSTALL}") from None
    version = getattr(trl, "__version__", "?")
    if version != TRL_VERSION:
        raise ImportError(
            f"abc_gym.integrations.trl runs on TRL {TRL_VERSION} only (it carries a copy of that release's "
            f"PPOTrainer.train(); TRL 1.13 removed PPO), found TRL {version}: {INSTALL}"
        )
    return version


_import_trl()

with warnings.catch_warnings():  # "trl.experimental is unstable": this module pins the release
    warnings.filterwarnings("ignore", message=".*trl.experimental.*")
    from transformers import GenerationConfig
    from trl.experimental.ppo import PPOTrainer
    from trl.experimental.ppo.ppo_trainer import (
        INVALID_LOGPROB,
        batch_generation,
        forward,
        masked_mean,
        masked_whiten,
        truncate_response,
    )
    from trl.experimental.utils import empty_cache, first_true_indices, get_reward
    from trl.models.utils import unwrap_model_for_generation
    from trl.trainer.utils import selective_log_softmax

__all__ = ["INSTALL", "TRL_VERSION", "DenseCreditPPOTrainer"]


class DenseCreditPPOTrainer(PPOTrainer):
    """TRL 1.12.0's ``PPOTrainer`` whose per-token rewards are ``-kl_coef * KL + credit`` (module doc).

    Takes every argument of ``trl.experimental.ppo.PPOTrainer`` (by keyword), plus:

    :param credit_model: the :class:`~abc_gym.reward_model.RewardModel` that scores the
        responses and gives the credit; the same scorer as TRL's ``reward_model`` (checked).
        ``input_ids`` are the policy's tokens, so its ``policy_tokenizer`` is the policy's.
    :param reward_mode: a registered credit scheme (``abc``, ``sparse``, ``uniform``, ``red``,
        ``oracle`` or one added with :func:`abc_gym.register_credit`).
    :param beta: mixing weight in [0, 1] of the schemes that use it (``abc``, ``red``).
    :param gold_credit: the task's gold credit rule (``oracle`` only; see
        :func:`abc_gym.batch_credit.token_level_rewards`).
    :param score_tolerance: largest ``|TRL score - R|`` accepted per row (absolute, and
        relative to ``|R|``): TRL's ``reward_model`` and ``credit_model`` must agree.
    """

    def __init__(
        self,
        *args: Any,
        credit_model: RewardModel,
        reward_mode: str = "abc",
        beta: float = 0.8,
        gold_credit: GoldCredit | None = None,
        score_tolerance: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        if not isinstance(credit_model, RewardModel):
            raise TypeError(
                f"credit_model must be an abc_gym.reward_model.RewardModel, got {type(credit_model).__name__}: load it "
                "with RewardModel.from_pretrained(<TRL's reward model path>, <the policy's tokenizer>)"
            )
        # A bad scheme, beta or reward model fails here, before TRL loads anything onto the device.
        scheme = credit_scheme(reward_mode)
        scheme.check_reward_model(credit_model)
        if scheme.needs_gold_credit and gold_credit is None:
            raise ValueError(f"reward_mode={reward_mode!r} needs gold_credit=<text -> [(start_char, end_char, weight)]>")
        beta = check_beta(beta)
        super().__init__(*args, **kwargs)
        self.credit_model = credit_model
        self.reward_mode = reward_mode
        self.beta = beta
        self.gold_credit = gold_credit
        self.score_tolerance = score_tolerance

    def add_token_credit(
        self,
        rewards: torch.Tensor,
        scores: torch.Tensor,
        queries: torch.Tensor,
        responses: torch.Tensor,
        sequence_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """``rewards`` plus the credit over each response: what ``train()`` runs GAE on.

        Called by ``train()`` in place of TRL's ``rewards[actual_start, actual_end] += scores``.

        Args:
            rewards: ``(B, W)`` float, TRL's per-token KL term ``-kl_coef * KL`` over the response
                positions (``W``: the padded response width).
            scores: ``(B,)`` TRL's reward-model scores, less ``missing_eos_penalty`` where it applied.
            queries: ``(B, P)`` the left-padded prompt ids.
            responses: ``(B, W)`` TRL's post-processed responses (pad id after a stop token).
            sequence_lengths: ``(B,)`` index of each response's last token (``-1``: empty).
        Returns:
            ``(B, W)``: ``rewards`` with the credit added on positions ``0..sequence_lengths``
            (each row's credit sums to R), the penalty on the last token, and, for an empty
            response, TRL's score on position 0 as TRL places it.
        Raises:
            ValueError: TRL's score and the credit model's R differ by more than
                ``score_tolerance`` on some row (two different reward models).
        """
        pad = self.processing_class.pad_token_id
        width = responses.shape[1]
        positions = torch.arange(width, device=responses.device)
        response_mask = positions.unsqueeze(0) <= sequence_lengths.unsqueeze(1)  # (B, R)
        rows = sequence_lengths >= 0  # an empty response has nothing to spread R over
        out = rewards.clone()
        if not bool(rows.all()):
            empty = (~rows).nonzero().squeeze(1)
            out[empty, 0] += scores[empty].to(out.dtype)
        if not bool(rows.any()):
            return out
        ids = torch.cat((queries, responses), 1)[rows]
        attention_mask = torch.cat((queries != pad, response_mask), 1)[rows]
        resp = torch.cat((torch.zeros_like(queries, dtype=torch.bool), response_mask), 1)[rows]
        credit, r = token_level_rewards(
            self.credit_model, ids, attention_mask, resp,
            reward_mode=self.reward_mode, beta=self.beta, gold_credit=self.gold_credit,
        )
        # TRL's score is R, less missing_eos_penalty on rows without an EOS (its step 3).
        penalty = torch.zeros_like(r)
        if self.args.missing_eos_penalty is not None:
            has_eos = torch.any(responses[rows] == self.processing_class.eos_token_id, dim=-1)
            penalty = torch.where(has_eos, penalty, torch.full_like(penalty, self.args.missing_eos_penalty))
        trl_score = scores[rows].to(r.dtype) + penalty
        gap = (trl_score - r).abs()
        bad = gap > self.score_tolerance * (1 + r.abs())
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"TRL's reward_model scored a response {float(trl_score[i]):.5f} but credit_model gives R = "
                f"{float(r[i]):.5f} (|gap| {float(gap[i]):.2e} > score_tolerance {self.score_tolerance}): pass the same "
                "scorer to both (for a 2-class classifier, TRL's reward_model is its 1-output copy with head "
                "w_pos - w_neg, as benchmarks/peer_trl.py's one_output_reward_model builds it), or raise score_tolerance"
            )
        credit = credit[:, queries.shape[1] :].to(out.dtype)  # (rows, W): the response columns
        last = sequence_lengths[rows]
        credit[torch.arange(credit.shape[0], device=credit.device), last] -= penalty.to(out.dtype)
        out[rows] += credit
        return out

    def train(self):
        args = self.args
        accelerator = self.accelerator
        optimizer = self.optimizer
        model = self.model
        ref_policy = self.ref_model
        reward_model = self.reward_model
        processing_class = self.processing_class
        dataloader = self.dataloader
        device = accelerator.device

        def repeat_generator():
            while True:
                yield from dataloader

        iter_dataloader = iter(repeat_generator())
        generation_kwargs = {
            "max_new_tokens": args.response_length,
            "temperature": (args.temperature + 1e-7),
            "top_k": 0.0,
            "top_p": 1.0,
            "do_sample": True,
        }
        generation_config = GenerationConfig(**generation_kwargs)

        accelerator.print("===training policy===")
        start_time = time.time()
        stats_shape = (args.num_ppo_epochs, args.num_mini_batches, args.gradient_accumulation_steps)
        approxkl_stats = torch.zeros(stats_shape, device=device)
        pg_clipfrac_stats = torch.zeros(stats_shape, device=device)
        pg_loss_stats = torch.zeros(stats_shape, device=device)
        vf_loss_stats = torch.zeros(stats_shape, device=device)
        vf_clipfrac_stats = torch.zeros(stats_shape, device=device)
        entropy_stats = torch.zeros(stats_shape, device=device)
        ratio_stats = torch.zeros(stats_shape, device=device)
        model.train()

        # trainer state initialization
        self.state.global_step = 0
        self.state.episode = 0
        self.state.max_steps = args.num_total_batches
        self.state.num_train_epochs = args.total_episodes / self.train_dataset_len
        # Compute absolute values for logging, eval, and save if given as ratio
        if args.logging_steps is not None:
            if args.logging_steps < 1:
                self.state.logging_steps = math.ceil(self.state.max_steps * args.logging_steps)
            else:
                self.state.logging_steps = args.logging_steps
        if args.eval_steps is not None:
            if args.eval_steps < 1:
                self.state.eval_steps = math.ceil(self.state.max_steps * args.eval_steps)
            else:
                self.state.eval_steps = args.eval_steps
        if args.save_steps is not None:
            if args.save_steps < 1:
                self.state.save_steps = math.ceil(self.state.max_steps * args.save_steps)
            else:
                self.state.save_steps = args.save_steps
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)

        # backward compatibility
        if self.is_deepspeed_enabled:
            self.deepspeed = self.model
            self.model_wrapped = self.model

        for update in range(1, args.num_total_batches + 1):
            self.state.episode += 1 * args.batch_size
            data = next(iter_dataloader)
            with torch.no_grad():
                queries = data["input_ids"].to(device)
                context_length = queries.shape[1]
                responses = []
                postprocessed_responses = []
                logprobs = []
                ref_logprobs = []
                scores = []
                sequence_lengths = []
                values = []
                with (
                    unwrap_model_for_generation(
                        self.model,
                        self.accelerator,
                        gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                        generation_kwargs=generation_kwargs,  # Override model.generation_config with generation_kwargs to fix transformers#42762
                    ) as unwrapped_model
                ):
                    query_responses, logitss = batch_generation(
                        unwrapped_model.policy,
                        queries,
                        args.local_rollout_forward_batch_size,
                        processing_class.pad_token_id,
                        generation_config,
                    )

                for i in range(0, queries.shape[0], args.local_rollout_forward_batch_size):
                    query = queries[i : i + args.local_rollout_forward_batch_size]
                    query_response = query_responses[i : i + args.local_rollout_forward_batch_size]
                    response = query_response[:, context_length:]
                    logits = logitss[i : i + args.local_rollout_forward_batch_size]
                    logprob = selective_log_softmax(logits, response)
                    del logits
                    empty_cache()

                    if ref_policy is None:
                        with self.null_ref_context():
                            ref_output = forward(model.policy, query_response, processing_class.pad_token_id)
                    else:
                        ref_output = forward(ref_policy, query_response, processing_class.pad_token_id)
                    ref_logits = ref_output.logits[:, context_length - 1 : -1]
                    ref_logits /= args.temperature + 1e-7
                    ref_logprob = selective_log_softmax(ref_logits, response)
                    del ref_output, ref_logits
                    empty_cache()

                    # Response Processing 1. truncate response after the first occurrence of `stop_token_id`
                    postprocessed_response = response
                    if self.stop_token_id is not None:  # handle the edge case when stop_token_id exists but is 0
                        postprocessed_response = truncate_response(
                            self.stop_token_id, processing_class.pad_token_id, response
                        )

                    # Response Processing 2. run reward model on the truncated responses
                    postprocessed_query_response = torch.cat((query, postprocessed_response), 1)
                    sequence_length = first_true_indices(postprocessed_response == processing_class.pad_token_id) - 1
                    unwrapped_value_model = accelerator.unwrap_model(model).value_model
                    full_value, _, _ = get_reward(
                        unwrapped_value_model, query_response, processing_class.pad_token_id, context_length
                    )
                    value = full_value[:, context_length - 1 : -1].squeeze(-1)
                    _, score, _ = get_reward(
                        reward_model, postprocessed_query_response, processing_class.pad_token_id, context_length
                    )

                    responses.append(response)
                    postprocessed_responses.append(postprocessed_response)
                    logprobs.append(logprob)
                    ref_logprobs.append(ref_logprob)
                    sequence_lengths.append(sequence_length)
                    scores.append(score)
                    values.append(value)
                responses = torch.cat(responses, 0)
                postprocessed_responses = torch.cat(postprocessed_responses, 0)
                logprobs = torch.cat(logprobs, 0)
                ref_logprobs = torch.cat(ref_logprobs, 0)
                sequence_lengths = torch.cat(sequence_lengths, 0)
                scores = torch.cat(scores, 0)
                values = torch.cat(values, 0)
                del (logprob, ref_logprob, full_value, value, score, unwrapped_model)
                empty_cache()
                gc.collect()

                # Response Processing 3. Filter completion. Ensure that the sample contains stop_token_id
                # Completions not passing that filter will receive a lower score.
                contain_eos_token = torch.any(postprocessed_responses == self.processing_class.eos_token_id, dim=-1)
                if self.args.missing_eos_penalty is not None:
                    scores[~contain_eos_token] -= self.args.missing_eos_penalty
                # accelerator.print(f"{scores=}, {(contain_eos_token.sum() / len(contain_eos_token))=}")

                # be very careful with `padding_mask_p1`; see https://excalidraw.com/#json=LWnzG4w2k5DjF_EOL_xPt,e2w3a-hFJ_gX5vOfeyXGTw
                response_idxs = torch.arange(responses.shape[1], device=responses.device).repeat(responses.shape[0], 1)
                padding_mask = response_idxs > sequence_lengths.unsqueeze(1)
                logprobs = torch.masked_fill(logprobs, padding_mask, INVALID_LOGPROB)
                ref_logprobs = torch.masked_fill(ref_logprobs, padding_mask, INVALID_LOGPROB)
                sequence_lengths_p1 = sequence_lengths + 1
                padding_mask_p1 = response_idxs > (sequence_lengths_p1.unsqueeze(1))
                values = torch.masked_fill(values, padding_mask_p1, 0)

                # 4. compute rewards
                # Formula used by http://joschu.net/blog/kl-approx.html for the k1 and k3 estimators
                logr = ref_logprobs - logprobs
                kl = -logr if args.kl_estimator == "k1" else (logr.exp() - 1) - logr  # Else statement is k3
                non_score_reward = -args.kl_coef * kl
                rewards = non_score_reward.clone()
                actual_start = torch.arange(rewards.size(0), device=rewards.device)
                actual_end = torch.where(sequence_lengths_p1 < rewards.size(1), sequence_lengths_p1, sequence_lengths)
                rewards = self.add_token_credit(rewards, scores, queries, postprocessed_responses, sequence_lengths)  # abc_gym: was rewards[actual_start, actual_end] += scores

                # 5. whiten rewards
                if args.whiten_rewards:
                    rewards = masked_whiten(rewards, mask=~padding_mask_p1, shift_mean=False)
                    rewards = torch.masked_fill(rewards, padding_mask_p1, 0)

                # 6. compute advantages and returns
                lastgaelam = 0
                advantages_reversed = []
                gen_length = responses.shape[1]
                for t in reversed(range(gen_length)):
                    nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
                    delta = rewards[:, t] + args.gamma * nextvalues - values[:, t]
                    lastgaelam = delta + args.gamma * args.lam * lastgaelam
                    advantages_reversed.append(lastgaelam)
                advantages = torch.stack(advantages_reversed[::-1], axis=1)
                returns = advantages + values
                advantages = masked_whiten(advantages, ~padding_mask)
                advantages = torch.masked_fill(advantages, padding_mask, 0)
                empty_cache()

            # Do multiple epochs of PPO training, with a fresh random shuffle in each epoch
            for ppo_epoch_idx in range(args.num_ppo_epochs):
                b_inds = np.random.permutation(args.local_batch_size)
                minibatch_idx = 0
                for mini_batch_start in range(0, args.local_batch_size, args.local_mini_batch_size):
                    mini_batch_end = mini_batch_start + args.local_mini_batch_size
                    mini_batch_inds = b_inds[mini_batch_start:mini_batch_end]
                    gradient_accumulation_idx = 0
                    for micro_batch_start in range(0, args.local_mini_batch_size, args.per_device_train_batch_size):
                        with accelerator.accumulate(model):
                            micro_batch_end = micro_batch_start + args.per_device_train_batch_size
                            micro_batch_inds = mini_batch_inds[micro_batch_start:micro_batch_end]
                            mb_advantage = advantages[micro_batch_inds]
                            mb_responses = responses[micro_batch_inds]
                            mb_query_responses = query_responses[micro_batch_inds]
                            mb_logprobs = logprobs[micro_batch_inds]
                            mb_return = returns[micro_batch_inds]
                            mb_values = values[micro_batch_inds]

                            output, vpred_temp = forward(model, mb_query_responses, processing_class.pad_token_id)
                            logits = output.logits[:, context_length - 1 : -1]
                            logits /= args.temperature + 1e-7
                            new_logprobs = selective_log_softmax(logits, mb_responses)
                            new_logprobs = torch.masked_fill(
                                new_logprobs, padding_mask[micro_batch_inds], INVALID_LOGPROB
                            )
                            vpred = vpred_temp[:, context_length - 1 : -1].squeeze(-1)
                            vpred = torch.masked_fill(vpred, padding_mask_p1[micro_batch_inds], 0)
                            vpredclipped = torch.clamp(
                                vpred,
                                mb_values - args.cliprange_value,
                                mb_values + args.cliprange_value,
                            )
                            vf_losses1 = torch.square(vpred - mb_return)
                            vf_losses2 = torch.square(vpredclipped - mb_return)
                            vf_loss_max = torch.max(vf_losses1, vf_losses2)
                            vf_loss = 0.5 * masked_mean(vf_loss_max, ~padding_mask_p1[micro_batch_inds])
                            vf_clipfrac = masked_mean(
                                (vf_losses2 > vf_losses1).float(), ~padding_mask_p1[micro_batch_inds]
                            )
                            logprobs_diff = new_logprobs - mb_logprobs
                            ratio = torch.exp(logprobs_diff)
                            pg_losses = -mb_advantage * ratio
                            pg_losses2 = -mb_advantage * torch.clamp(ratio, 1.0 - args.cliprange, 1.0 + args.cliprange)
                            pg_loss_max = torch.max(pg_losses, pg_losses2)
                            pg_loss = masked_mean(pg_loss_max, ~padding_mask[micro_batch_inds])
                            loss = pg_loss + args.vf_coef * vf_loss
                            accelerator.backward(loss)
                            optimizer.step()
                            optimizer.zero_grad()
                            with torch.no_grad():
                                pg_clipfrac = masked_mean(
                                    (pg_losses2 > pg_losses).float(), ~padding_mask[micro_batch_inds]
                                )
                                prob_dist = torch.nn.functional.softmax(logits, dim=-1)
                                entropy = torch.logsumexp(logits, dim=-1) - torch.sum(prob_dist * logits, dim=-1)
                                approxkl = 0.5 * (logprobs_diff**2).mean()
                                approxkl_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = approxkl
                                pg_clipfrac_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = (
                                    pg_clipfrac
                                )
                                pg_loss_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = pg_loss
                                vf_loss_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = vf_loss
                                vf_clipfrac_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = (
                                    vf_clipfrac
                                )
                                entropy_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = entropy.mean()
                                ratio_stats[ppo_epoch_idx, minibatch_idx, gradient_accumulation_idx] = ratio.mean()
                        gradient_accumulation_idx += 1
                    minibatch_idx += 1
                    # del everything and empty cache
                    # fmt: off
                    del (
                        output, vpred_temp, logits, new_logprobs, vpred, vpredclipped,
                        vf_losses1, vf_losses2, vf_loss, vf_clipfrac, logprobs_diff, ratio, pg_losses, pg_losses2, pg_loss_max,
                        pg_loss, loss, pg_clipfrac, prob_dist, entropy, approxkl, mb_return,
                        mb_advantage, mb_values, mb_responses, mb_query_responses, mb_logprobs,
                    )
                    # fmt: on
                    empty_cache()
            with torch.no_grad():
                mean_kl = kl.sum(1).mean()
                # Mask padding positions, filled with INVALID_LOGPROB, else they'd drag the entropy negative
                mean_entropy = ((-logprobs) * (~padding_mask).float()).sum(1).mean()
                mean_non_score_reward = non_score_reward.sum(1).mean()
                rlhf_reward = mean_non_score_reward + scores.mean()
                eps = int(self.state.episode / (time.time() - start_time))
                metrics = {}
                metrics["eps"] = eps
                metrics["objective/kl"] = self.accelerator.gather_for_metrics(mean_kl).mean().item()
                metrics["objective/entropy"] = self.accelerator.gather_for_metrics(mean_entropy).mean().item()
                metrics["objective/non_score_reward"] = (
                    self.accelerator.gather_for_metrics(mean_non_score_reward).mean().item()
                )
                metrics["objective/rlhf_reward"] = self.accelerator.gather_for_metrics(rlhf_reward).mean().item()
                metrics["objective/scores"] = self.accelerator.gather_for_metrics(scores.mean()).mean().item()
                metrics["policy/approxkl_avg"] = self.accelerator.gather_for_metrics(approxkl_stats).mean().item()
                metrics["policy/clipfrac_avg"] = self.accelerator.gather_for_metrics(pg_clipfrac_stats).mean().item()
                metrics["loss/policy_avg"] = self.accelerator.gather_for_metrics(pg_loss_stats).mean().item()
                metrics["loss/value_avg"] = self.accelerator.gather_for_metrics(vf_loss_stats).mean().item()
                metrics["val/clipfrac_avg"] = self.accelerator.gather_for_metrics(vf_clipfrac_stats).mean().item()
                metrics["policy/entropy_avg"] = self.accelerator.gather_for_metrics(entropy_stats).mean().item()
                metrics["val/ratio"] = self.accelerator.gather_for_metrics(ratio_stats).mean().item()
                metrics["val/ratio_var"] = self.accelerator.gather_for_metrics(ratio_stats).var().item()
                metrics["val/num_eos_tokens"] = (responses == processing_class.eos_token_id).sum().item()
                metrics["lr"] = self.lr_scheduler.get_last_lr()[0]
                metrics["episode"] = self.state.episode
                self.state.epoch = self.state.episode / self.train_dataset_len  # used by self.log
                self.state.global_step += 1
                self.log(metrics)

            self.lr_scheduler.step()
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_save:
                self._save_checkpoint(model, trial=None)
                self.control = self.callback_handler.on_save(self.args, self.state, self.control)
            del kl, mean_kl, mean_entropy, mean_non_score_reward, scores, metrics, non_score_reward
            empty_cache()
            gc.collect()

            if args.num_sample_generations > 0 and (update - 1) % self.sample_generations_freq == 0:
                self.generate_completions(sampling=True)
                empty_cache()
            del (
                query_responses,
                responses,
                postprocessed_responses,
                logprobs,
                ref_logprobs,
                values,
                sequence_lengths,
                contain_eos_token,
                sequence_lengths_p1,
                response_idxs,
                padding_mask,
                padding_mask_p1,
                rewards,
                actual_start,
                actual_end,
                advantages,
                returns,
            )
            empty_cache()

        # HF trainer specifics
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        if self.control.should_save:
            self._save_checkpoint(model, trial=None)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)
