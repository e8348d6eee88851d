"""Row-only SDPA attention equals full eager; ABC credit equals a hand computation from eager attentions."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2ForSequenceClassification

from abc_gym.credit import abc_credit
from abc_gym.reward_model import RewardModel
from abc_gym.tasks.sentiment import REWARD_MODEL_PATH
from tests.conftest import tiny_bert, tiny_gpt2_config


@torch.no_grad()
def _eager_last_layer(model, ids, mask):
    model.set_attn_implementation("eager")
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    return out.logits, out.attentions[-1].mean(dim=1)  # (B, C), (B, T, T)


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture()
def tiny_gpt2_rm(policy_tokenizer):
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(tiny_gpt2_config(policy_tokenizer, num_labels=2)).eval()


TEXTS = ["the film was not good", "a very boring plot but the acting was brilliant", "great"]


def test_row_equals_eager_decoder(policy_tokenizer, tiny_gpt2_rm):
    ids, mask = _batch(policy_tokenizer, TEXTS)
    logits, full = _eager_last_layer(tiny_gpt2_rm, ids, mask)
    last = mask.sum(-1) - 1  # right padding: the head reads the last real token
    expected = full[torch.arange(len(TEXTS)), last] * mask
    rm = RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu", attention_source="row")
    out = rm.score(ids, mask)
    torch.testing.assert_close(out.attention, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.score, logits[:, 1] - logits[:, 0], atol=1e-5, rtol=0)


def test_row_equals_eager_shipped_reward_model(policy_tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(REWARD_MODEL_PATH)
    ids, mask = _batch(policy_tokenizer, TEXTS)
    _, full = _eager_last_layer(model, ids, mask)
    expected = full[torch.arange(len(TEXTS)), mask.sum(-1) - 1] * mask
    got = RewardModel(model, policy_tokenizer, policy_tokenizer, device="cpu").score(ids, mask).attention
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_row_equals_eager_encoder(policy_tokenizer, pooling):
    model = tiny_bert(len(policy_tokenizer), policy_tokenizer.pad_token_id)
    # give the encoder a [CLS]-like first token: pooling reads row 0 for "cls"
    ids, mask = _batch(policy_tokenizer, TEXTS)
    _, full = _eager_last_layer(model, ids, mask)
    if pooling == "cls":
        expected = full[:, 0]
    else:
        w = mask.float() / mask.sum(-1, keepdim=True)
        expected = torch.einsum("bq,bqk->bk", w, full)
    rm = RewardModel(model, policy_tokenizer, policy_tokenizer, device="cpu", pooling=pooling)
    torch.testing.assert_close(rm.score(ids, mask).attention, expected * mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("source", ["row", "eager"])
def test_abc_credit_matches_hand_computation_decoder(policy_tokenizer, tiny_gpt2_rm, source):
    prompt = policy_tokenizer("the acting", add_special_tokens=False)["input_ids"]
    completion = policy_tokenizer(" was not very good at all", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + completion])
    mask = torch.ones_like(ids)
    logits, full = _eager_last_layer(tiny_gpt2_rm, ids, mask)
    r_hand = float(logits[0, 1] - logits[0, 0])
    row = full[0, -1]  # last layer, head mean, from the scored (last) token
    a = row[len(prompt) :] / row[len(prompt) :].sum()  # completion keys only, renormalised
    beta = 0.8
    hand = beta * a * r_hand
    hand[-1] += (1 - beta) * r_hand

    rm = RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu", attention_source=source)
    out = rm.score(ids, mask)
    cmask = torch.zeros_like(ids, dtype=torch.bool)
    cmask[0, len(prompt) :] = True
    credit = abc_credit(out.score, out.attention, cmask, beta)
    torch.testing.assert_close(credit[0, len(prompt) :].float(), hand, atol=1e-5, rtol=1e-5)
    assert credit[0, : len(prompt)].abs().sum() == 0


def test_abc_credit_matches_hand_computation_encoder(minilm_tokenizer, policy_tokenizer):
    """Encoder with its own tokenizer: [CLS] row, then carried to policy tokens by characters."""
    model = tiny_bert(len(minilm_tokenizer), minilm_tokenizer.pad_token_id)
    prompt = policy_tokenizer("the plot", add_special_tokens=False)["input_ids"]
    completion = policy_tokenizer(" was brilliant", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + completion])
    text = policy_tokenizer.decode(ids[0])
    enc = minilm_tokenizer([text], return_tensors="pt", return_offsets_mapping=True)
    logits, full = _eager_last_layer(model, enc["input_ids"], enc["attention_mask"])
    cls_row = full[0, 0]
    # hand mapping: each policy token gets the attention of the RM tokens overlapping its characters
    offsets = enc["offset_mapping"][0].tolist()
    spans, pos = [], 0
    for k in range(len(ids[0])):
        end = len(policy_tokenizer.decode(ids[0, : k + 1]))
        spans.append((pos, end))
        pos = end
    mapped = torch.tensor([sum(float(cls_row[j]) for j, (s, e) in enumerate(offsets) if s < pe and ps < e) for ps, pe in spans])
    a = mapped[len(prompt) :] / mapped[len(prompt) :].sum()

    rm = RewardModel(model, minilm_tokenizer, policy_tokenizer, device="cpu")
    assert not rm.same_tokenizer and rm.pooling == "cls"
    out = rm.score(ids, torch.ones_like(ids))
    torch.testing.assert_close(out.score, logits[:, 1] - logits[:, 0], atol=1e-5, rtol=0)
    cmask = torch.zeros_like(ids, dtype=torch.bool)
    cmask[0, len(prompt) :] = True
    credit = abc_credit(out.score, out.attention, cmask, beta=1.0)
    torch.testing.assert_close(credit[0, len(prompt) :].float(), a * out.score[0], atol=1e-5, rtol=1e-5)


def test_unreadable_attention_is_a_clear_error(policy_tokenizer, tiny_gpt2_rm):
    tiny_gpt2_rm._supports_attention_backend = False
    with pytest.raises(ValueError, match="attention_source='eager'"):
        RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu", attention_source="row")


def test_eager_model_without_attentions_is_a_clear_error(policy_tokenizer, tiny_gpt2_rm):
    class NoAttention(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def set_attn_implementation(self, name):
            pass

        def forward(self, **kw):
            out = self.inner(**{k: v for k, v in kw.items() if k != "output_attentions"})
            out.attentions = None
            return out

    rm = RewardModel(NoAttention(tiny_gpt2_rm), policy_tokenizer, policy_tokenizer, device="cpu", attention_source="eager")
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="returned no attention weights"):
        rm.score(ids, torch.ones_like(ids))
    # scoring without attention (sparse credit) still works and is not affected
    assert rm.score(ids, torch.ones_like(ids), with_attention=False).attention is None


def test_label_selection(policy_tokenizer, tiny_gpt2_rm):
    with pytest.raises(ValueError, match="not one of the model's labels"):
        RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu", positive_label="GOOD")
    rm = RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu", positive_label=0)
    assert (rm.pos_index, rm.neg_index) == (0, 1)


def test_pooling_auto_rule(policy_tokenizer, tiny_gpt2_rm):
    """GPT-2 (causal-only type) reads the last token even with a tokenizer that has a [CLS];
    BERT (also a masked LM) reads [CLS] even with a tokenizer without one."""
    assert RewardModel(tiny_gpt2_rm, policy_tokenizer, policy_tokenizer, device="cpu").pooling == "last"
    bert = tiny_bert(len(policy_tokenizer), policy_tokenizer.pad_token_id)
    assert RewardModel(bert, policy_tokenizer, policy_tokenizer, device="cpu").pooling == "cls"
