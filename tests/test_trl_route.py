"""TRL 1.12.0's PPO learning from the dense credit (abc_gym.integrations.trl).

Runs only where TRL 1.12.0 is installed (its own venv: the main CI leg has none, and the tests
say so when they skip). One real ``train()`` update on the shipped policy and reward model
(4 completions x 6 tokens), with the rewards TRL's GAE consumed checked against
:func:`abc_gym.batch_credit.token_level_rewards`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import tempfile
import types
import warnings
from typing import Any

import pytest
import torch

from abc_gym.batch_credit import token_level_rewards
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH, load_prompts

try:
    import trl

    TRL: str | None = trl.__version__
except ImportError:
    TRL = None
needs_trl = pytest.mark.skipif(
    TRL != "1.12.0",
    reason=("TRL is not installed" if TRL is None else f"TRL {TRL} is not 1.12.0")
    + ": the TRL route runs on TRL 1.12.0 only, the last release with PPO (1.13 removed it); "
    "pip install 'abc_gym[trl]' in its own venv (the main CI leg has no TRL)",
)

COMPLETIONS, NEW_TOKENS = 4, 6


@pytest.mark.parametrize("fake", [None, "1.13.0"])
def test_without_trl_1_12_the_import_names_the_install(fake: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TRL, or a TRL other than 1.12.0 (1.13 has no PPO): importing the route fails in one message naming the install."""
    monkeypatch.setitem(sys.modules, "trl", types.SimpleNamespace(__version__=fake) if fake else None)
    monkeypatch.delitem(sys.modules, "abc_gym.integrations.trl", raising=False)
    with pytest.raises(ImportError, match=r'needs TRL 1\.12\.0|runs on TRL 1\.12\.0 only') as err:
        importlib.import_module("abc_gym.integrations.trl")
    assert '[trl]" (trl==1.12.0' in str(err.value) and (fake is None or f"found TRL {fake}" in str(err.value))


@needs_trl
def test_train_is_trls_own_but_for_the_reward_statement() -> None:
    """The copied train() is TRL 1.12.0's, line for line, except the one statement that places the score."""
    from abc_gym.integrations import trl as route

    theirs = inspect.getsource(route.PPOTrainer.train).splitlines()
    ours = inspect.getsource(route.DenseCreditPPOTrainer.train).splitlines()
    changed = [d for d in difflib.unified_diff(theirs, ours, lineterm="", n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    assert changed == [
        "-                rewards[actual_start, actual_end] += scores",
        "+                rewards = self.add_token_credit(rewards, scores, queries, postprocessed_responses, sequence_lengths)"
        "  # abc_gym: was rewards[actual_start, actual_end] += scores",
    ], changed


def _trainer(reward_mode: str) -> tuple[Any, Any]:
    """DenseCreditPPOTrainer on the shipped models at tiny sizes, for one update; and the policy tokenizer."""
    import datasets
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.ppo import PPOConfig

    from abc_gym.integrations import trl as route
    from benchmarks.peer_trl import trl_models

    tok = AutoTokenizer.from_pretrained(POLICY_PATH, padding_side="left")
    prompts = datasets.Dataset.from_dict({"input_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in load_prompts()]})
    policy, ref, value, reward = trl_models(tok)
    with warnings.catch_warnings():  # transformers 5 renamed gradient_checkpointing, which TRL 1.12 still reads
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = PPOConfig(
            output_dir=tempfile.mkdtemp(prefix="abc_gym_trl_route_"), report_to="none", save_strategy="no",
            disable_tqdm=True, use_cpu=True, seed=0, bf16=False, fp16=False, gradient_checkpointing=False,
            learning_rate=1e-4, num_ppo_epochs=1, num_mini_batches=1, per_device_train_batch_size=COMPLETIONS,
            local_rollout_forward_batch_size=COMPLETIONS, total_episodes=COMPLETIONS, response_length=NEW_TOKENS,
            kl_coef=0.2, gamma=1.0, lam=0.95, whiten_rewards=False, missing_eos_penalty=None, stop_token=None,
            num_sample_generations=0,
        )
        trainer = route.DenseCreditPPOTrainer(
            args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward, train_dataset=prompts,
            value_model=value, credit_model=RewardModel.from_pretrained(REWARD_MODEL_PATH, tok, device="cpu"),
            reward_mode=reward_mode, beta=0.8,
        )
    trainer.remove_callback(PrinterCallback)
    return trainer, tok


def _gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """GAE over ``(B, R)`` rewards and values, as TRL's step 6 (before whitening)."""
    last, out = 0.0, []
    for t in reversed(range(rewards.shape[1])):
        nxt = values[:, t + 1] if t < rewards.shape[1] - 1 else 0.0
        last = rewards[:, t] + gamma * nxt - values[:, t] + gamma * lam * last
        out.append(last)
    return torch.stack(out[::-1], 1)


@needs_trl
@pytest.mark.parametrize("reward_mode", ["abc", "sparse"])
def test_trl_ppo_learns_from_the_dense_credit(reward_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One TRL update: the rewards its GAE consumed are its KL term + batch_credit's credit for the same ids."""
    from abc_gym.integrations import trl as route
    from benchmarks.peer_trl import torch_threads

    with torch_threads(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*var\(\): degrees of freedom.*")  # its metric over one minibatch
        trainer, tok = _trainer(reward_mode)
        seen: dict[str, Any] = {}
        hook, get_reward, whiten = trainer.add_token_credit, route.get_reward, route.masked_whiten

        def record_hook(rewards, scores, queries, responses, sequence_lengths):
            out = hook(rewards, scores, queries, responses, sequence_lengths)
            seen.update(kl=rewards.clone(), scores=scores.clone(), queries=queries, responses=responses,
                        lengths=sequence_lengths, rewards=out.clone())
            return out

        def record_reward(model, query_responses, pad_token_id, context_length):
            out = get_reward(model, query_responses, pad_token_id, context_length)
            if model is not trainer.reward_model:
                seen["full_value"] = out[0]
            return out

        def record_whiten(values, mask, shift_mean=True):
            seen.setdefault("advantages", values.clone())  # the only call: the advantages (whiten_rewards=False)
            return whiten(values, mask, shift_mean)

        monkeypatch.setattr(trainer, "add_token_credit", record_hook)
        monkeypatch.setattr(route, "get_reward", record_reward)
        monkeypatch.setattr(route, "masked_whiten", record_whiten)
        before = [p.detach().clone() for p in trainer.model.policy.parameters()]
        trainer.train()

    queries, responses, lengths = seen["queries"], seen["responses"], seen["lengths"]
    assert trainer.state.global_step == 1 and (lengths >= 0).all(), lengths  # 1 update; no empty response here
    # The credit, independently: batch_credit on the prompt + response TRL's reward model scored.
    P = queries.shape[1]
    in_response = torch.arange(responses.shape[1]).unsqueeze(0) <= lengths.unsqueeze(1)
    credit, score = token_level_rewards(
        trainer.credit_model, torch.cat((queries, responses), 1),
        torch.cat((queries != tok.pad_token_id, in_response), 1),
        torch.cat((torch.zeros_like(queries, dtype=torch.bool), in_response), 1),
        reward_mode=reward_mode, beta=0.8,
    )
    credit = credit[:, P:].float()
    torch.testing.assert_close(score, seen["scores"], atol=1e-4, rtol=1e-4)  # TRL's own RM gave the same R
    torch.testing.assert_close(seen["rewards"] - seen["kl"], credit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(credit.sum(1), seen["scores"], atol=1e-4, rtol=1e-4)  # R is conserved per row
    last = torch.nn.functional.one_hot(lengths, responses.shape[1]).bool()
    if reward_mode == "abc":  # dense: every row has credit before its last token
        assert ((credit != 0) & ~last).any(1).all(), credit
    else:
        assert (credit[~last] == 0).all(), credit
    # TRL's GAE ran on those rewards (not on its own last-token score): its advantages are theirs.
    values = seen["full_value"][:, P - 1 : -1].squeeze(-1)
    values = values.masked_fill(torch.arange(values.shape[1]).unsqueeze(0) > (lengths + 1).unsqueeze(1), 0)
    expected = _gae(seen["rewards"], values, trainer.args.gamma, trainer.args.lam)
    torch.testing.assert_close(seen["advantages"], expected, atol=1e-5, rtol=1e-5)
    # and the policy took a step
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.policy.parameters()))
    if reward_mode == "abc":
        _check_the_edges(trainer, seen, credit)


def _check_the_edges(trainer: Any, seen: dict[str, Any], credit: torch.Tensor) -> None:
    """On the recorded rollout: a different reward model is refused, missing_eos_penalty goes on the last token,
    an empty response keeps TRL's placement."""
    from abc_gym.integrations import trl as route

    kl, scores, queries, responses, lengths = (seen[k] for k in ("kl", "scores", "queries", "responses", "lengths"))
    hook = route.DenseCreditPPOTrainer.add_token_credit.__get__(trainer)
    with pytest.raises(ValueError, match="unknown reward_mode .no-such-scheme."):
        route.DenseCreditPPOTrainer(credit_model=trainer.credit_model, reward_mode="no-such-scheme")
    with pytest.raises(ValueError, match="pass the same scorer to both"):
        hook(kl, scores + 1.0, queries, responses, lengths)
    has_eos = (responses == trainer.processing_class.eos_token_id).any(1)
    trainer.args.missing_eos_penalty = 2.0
    try:
        out = hook(kl, scores - 2.0 * ~has_eos, queries, responses, lengths)
    finally:
        trainer.args.missing_eos_penalty = None
    last = torch.nn.functional.one_hot(lengths, responses.shape[1]).float()
    torch.testing.assert_close(out - kl, credit - 2.0 * (~has_eos).float().unsqueeze(1) * last, atol=1e-5, rtol=1e-5)
    empty = responses.clone()
    empty[0] = trainer.processing_class.pad_token_id
    out = hook(kl, scores, queries, empty, torch.cat((torch.tensor([-1]), lengths[1:])))
    expected = kl[0].clone()
    expected[0] += scores[0]
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1:] - kl[1:], credit[1:], atol=1e-5, rtol=1e-5)
