"""Is the shipped GPT-2 reward model valid at the lengths the experiments generate? (issue 19, item 5)

For each completion-length range (default 8-15, 40-59 and 90-109 new tokens, the ranges
of ``abc_gym/Sentiment-v0``, ``abc_gym/SentimentLong-v0`` and the 90-109 runs) two sets of
texts are scored by the shipped RM and by VADER (the gold scorer):

- ``policy``: the shipped policy's plain samples (``do_sample``, top_k 0, top_p 1) after the
  shipped held-out prompts (drawn at random, seeded). Each sample gets a length L drawn
  uniformly from the range, and EOS is suppressed before the range's minimum (HF
  ``min_new_tokens``), as the env masks it (``action_masks``); the completion stops at L
  tokens or at (and including) the first ``<|endoftext|>``: the env's episode. Prompts are
  grouped by token length (no padding) and each group samples ``max`` new tokens once; the
  first L of them have the distribution of an L-token episode (the EOS rule depends only on
  the position), as in ``build.sample_completions``.
- ``corpus``: held-out reviews (seed 1, the 3000 reviews of the build's held-out set) cut
  like ``build.make_fragments``: a 2-7-token prompt + L tokens, L drawn from the range. Where
  a review is too short the next held-out reviews are appended, joined by a space (one long
  lowercase review, which is what the policy writes when EOS is suppressed), and the token
  sequence is cut; these rows never end in ``<|endoftext|>``. Row i starts at review i.

Scoring is the env's: the token ids prompt + completion (prompt encoded without special
tokens, as ``core`` does) through :class:`abc_gym.reward_model.RewardModel`, so R =
logit[POSITIVE] - logit[NEGATIVE] is the number the env puts in ``info["score"]``; the gold
score is ``gold.gold_score`` of the decoded prompt + completion (``skip_special_tokens``, no
clean-up), the text the env hands its gold scorer (``core._decode``; ``info["text"]`` is the
completion alone, but ``info["gold_score"]`` scores prompt + completion).

Per row: polar accuracy (sign of R against VADER's label on texts VADER calls positive,
compound >= 0.05, or negative, <= -0.05; neutral texts skipped: ``build.polar_accuracy``)
with its number of polar texts and a Wilson 95% interval; Spearman(R, VADER compound) with
a Fisher-z 95% interval (standard error sqrt(1.06 / (n - 3)), Fieller et al. 1957); mean R.
A ``reference`` row reproduces the build's held-out accuracy (``make_fragments`` of the
3000 held-out reviews with ``Random(7)``: 0.9161 on 1991 fragments) through the same path.

Verdict rule: a range is **valid** when the polar accuracy of BOTH its rows (policy samples
and corpus cuts) is at least ``REFERENCE_ACCURACY - TOLERANCE`` = 0.916 - 0.05 = 0.866 (the
shipped RM's short-text held-out accuracy, docs/embedded_task.md, minus 0.05); otherwise
retrain the RM on longer fragments or drop the range from the verdicts.

    python -m benchmarks.rm_validity                       # 400 per range, 8-15 40-59 90-109
    python -m benchmarks.rm_validity --n 100 --lengths 8-15 90-109 --out /tmp/rm_validity.json
    python -m benchmarks.rm_validity --reward-model /tmp/rmlong/models/reward_gpt2   # a retrained RM
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from abc_gym.tasks.sentiment.build import parse_token_range as parse_range

REFERENCE_ACCURACY = 0.916  # shipped RM, held-out make_fragments accuracy (docs/embedded_task.md: 0.9161)
TOLERANCE = 0.05
DEFAULT_LENGTHS = ("8-15", "40-59", "90-109")
PROMPT_TOKENS = (2, 7)  # make_fragments' prompt cut, also the shipped prompts' range
BATCH = 64


@dataclass
class Row:
    """One table row: a length range and a text source."""

    lengths: str
    source: str  # "policy", "corpus" or "reference"
    n: int
    mean_new_tokens: float
    eos_share: float
    polar_accuracy: float
    n_polar: int
    accuracy_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    mean_r: float
    sd_r: float
    vader_pos_share: float
    vader_neg_share: float


# ----------------------------------------------------------------------------- statistics


def polar_accuracy(scores: Sequence[float], compounds: Sequence[float]) -> tuple[float, int]:
    """Share of VADER-polar texts whose R has VADER's sign, and how many texts are polar.

    A text is polar when its compound is >= 0.05 (positive) or <= -0.05 (negative), the
    thresholds of ``gold.vader_label``; R > 0 counts as positive, as in ``build.polar_accuracy``
    (R == 0 counts as negative there too). NaN accuracy when no text is polar.
    """
    hits = [(s > 0) == (c >= 0.05) for s, c in zip(scores, compounds) if c >= 0.05 or c <= -0.05]
    return (sum(hits) / len(hits) if hits else float("nan")), len(hits)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def spearman_with_ci(x: Sequence[float], y: Sequence[float], z: float = 1.959964) -> tuple[float, tuple[float, float]]:
    """Spearman's rho (scipy) and its Fisher-z 95% interval, se = sqrt(1.06 / (n - 3))."""
    from scipy.stats import spearmanr

    n = len(x)
    rho = float(spearmanr(x, y).statistic) if n >= 3 else float("nan")
    if n <= 3 or not math.isfinite(rho):
        return rho, (float("nan"), float("nan"))
    zr = math.atanh(max(min(rho, 0.999999), -0.999999))
    se = math.sqrt(1.06 / (n - 3))
    return rho, (math.tanh(zr - z * se), math.tanh(zr + z * se))


# ----------------------------------------------------------------------------- models and scoring


def check_fits(ranges: Sequence[tuple[int, int]], policy_positions: int, rm_positions: int | None) -> None:
    """Refuse a range whose longest episode (7-token prompt + MAX) does not fit the models' positions."""
    limit = min(policy_positions, rm_positions or policy_positions)
    bad = [f"{lo}-{hi}" for lo, hi in ranges if PROMPT_TOKENS[1] + hi > limit]
    if bad:
        raise SystemExit(
            f"length range(s) {', '.join(bad)} do not fit: a {PROMPT_TOKENS[1]}-token prompt + MAX new tokens must be "
            f"<= {limit} positions (policy n_positions {policy_positions}, reward model {rm_positions}); "
            f"use MAX <= {limit - PROMPT_TOKENS[1]}"
        )


def load_models(reward_model: Path | None = None, device: str = "cpu"):
    """The shipped policy, its tokenizer and the RM (default: the shipped one) wrapped as the env wraps it."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from abc_gym.reward_model import RewardModel
    from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH

    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    policy = GPT2LMHeadModel.from_pretrained(POLICY_PATH).eval().to(device)
    rm = RewardModel.from_pretrained(reward_model or REWARD_MODEL_PATH, tok, device=device)
    return tok, policy, rm


def score_sequences(rm, seqs: Sequence[Sequence[int]], batch: int = BATCH) -> list[float]:
    """R of each token sequence (prompt + completion), right-padded batches, the env's call."""
    out: list[float] = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), rm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, s in enumerate(chunk):
            ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[b, : len(s)] = 1
        out += rm.score(ids, mask, with_attention=False).score.tolist()
    return out


def gold_texts(tok, seqs: Sequence[Sequence[int]]) -> list[str]:
    """The text the env hands its gold scorer: prompt + completion decoded (``alignment.decode_texts``)."""
    from abc_gym.alignment import decode_texts

    return decode_texts(tok, seqs)


# ----------------------------------------------------------------------------- text sources


@torch.no_grad()
def policy_samples(
    policy, tok, prompts: Sequence[str], n: int, lo: int, hi: int, seed: int
) -> tuple[list[list[int]], list[int]]:
    """``n`` episodes (prompt ids + completion ids) of the shipped policy, lengths drawn from [lo, hi]."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    chosen = [rng.randrange(len(prompts)) for _ in range(n)]
    lengths = [rng.randint(lo, hi) for _ in range(n)]
    enc = [tok(prompts[i], add_special_tokens=False)["input_ids"] for i in chosen]
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(enc):
        groups.setdefault(len(e), []).append(i)
    seqs: list[list[int]] = [[] for _ in range(n)]
    new_tokens = [0] * n
    eos = tok.eos_token_id
    for plen, idx in sorted(groups.items()):
        for j in range(0, len(idx), BATCH):
            part = idx[j : j + BATCH]
            ids = torch.tensor([enc[i] for i in part], device=policy.device)
            gen = policy.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                min_new_tokens=lo, max_new_tokens=hi, pad_token_id=tok.pad_token_id, eos_token_id=eos,
            )
            for row, i in zip(gen[:, plen:].tolist(), part):
                comp = row[: lengths[i]]
                if eos in comp:  # the episode ends at (and includes) <|endoftext|>
                    comp = comp[: comp.index(eos) + 1]
                seqs[i] = enc[i] + comp
                new_tokens[i] = len(comp)
    return seqs, new_tokens


def corpus_cuts(tok, reviews: Sequence[str], n: int, lo: int, hi: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """``n`` held-out cuts: 2-7 prompt tokens + L in [lo, hi] tokens; row i starts at review i, later reviews
    appended (joined by a space) until long enough."""
    rng = random.Random(seed)
    seqs, new_tokens = [], []
    for i in range(n):
        plen, length = rng.randint(*PROMPT_TOKENS), rng.randint(lo, hi)
        k, text = i % len(reviews), ""
        while True:
            text = reviews[k % len(reviews)] if not text else text + " " + reviews[k % len(reviews)]
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= plen + length:
                break
            k += 1
        seqs.append(ids[: plen + length])
        new_tokens.append(length)
    return seqs, new_tokens


def reference_fragments(tok, reviews: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """The build's held-out fragments (``make_fragments`` with ``Random(7)``), which gave 0.9161."""
    from abc_gym.tasks.sentiment.build import make_fragments

    frags = make_fragments(tok, list(reviews), random.Random(7))
    return [f[0] for f in frags], [len(f[0]) for f in frags]


# ----------------------------------------------------------------------------- rows


def measure(rm, tok, lengths: str, source: str, seqs: list[list[int]], new_tokens: list[int]) -> Row:
    from abc_gym.tasks.sentiment.gold import gold_score

    scores = score_sequences(rm, seqs)
    compounds = [gold_score(t) for t in gold_texts(tok, seqs)]
    acc, n_polar = polar_accuracy(scores, compounds)
    hits = round(acc * n_polar) if n_polar else 0
    rho, rho_ci = spearman_with_ci(scores, compounds)
    eos = tok.eos_token_id
    return Row(
        lengths=lengths, source=source, n=len(seqs), mean_new_tokens=float(np.mean(new_tokens)),
        eos_share=float(np.mean([s[-1] == eos for s in seqs])),
        polar_accuracy=acc, n_polar=n_polar, accuracy_ci=wilson_interval(hits, n_polar),
        spearman=rho, spearman_ci=rho_ci, mean_r=float(np.mean(scores)), sd_r=float(np.std(scores)),
        vader_pos_share=float(np.mean([c >= 0.05 for c in compounds])),
        vader_neg_share=float(np.mean([c <= -0.05 for c in compounds])),
    )


def verdicts(rows: Sequence[Row]) -> dict[str, dict]:
    """Per range: valid when every policy/corpus row's polar accuracy >= REFERENCE_ACCURACY - TOLERANCE."""
    floor = REFERENCE_ACCURACY - TOLERANCE
    out: dict[str, dict] = {}
    for r in rows:
        if r.source == "reference":
            continue
        v = out.setdefault(r.lengths, {"floor": floor, "accuracies": {}, "valid": True})
        v["accuracies"][r.source] = r.polar_accuracy
        v["valid"] = bool(v["valid"] and r.polar_accuracy >= floor)
    return out


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| new tokens | texts | n | mean new tokens | ends in EOS | VADER pos / neg | polar acc (95% CI) | n polar "
        "| Spearman(R, VADER) (95% CI) | mean R (sd) |",
        "|---|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.lengths} | {r.source} | {r.n} | {r.mean_new_tokens:.1f} | {r.eos_share:.2f} "
            f"| {r.vader_pos_share:.2f} / {r.vader_neg_share:.2f} "
            f"| {r.polar_accuracy:.3f} ({r.accuracy_ci[0]:.3f}-{r.accuracy_ci[1]:.3f}) | {r.n_polar} "
            f"| {r.spearman:.3f} ({r.spearman_ci[0]:.3f}-{r.spearman_ci[1]:.3f}) | {r.mean_r:.2f} ({r.sd_r:.2f}) |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rm_validity", description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", nargs="+", type=parse_range, default=[parse_range(s) for s in DEFAULT_LENGTHS],
                    metavar="MIN-MAX", help="completion-length ranges in new tokens (default: 8-15 40-59 90-109)")
    ap.add_argument("--n", type=int, default=400, help="texts per range and source (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-corpus", action="store_true", help="skip the held-out corpus rows")
    ap.add_argument("--no-reference", action="store_true", help="skip the build's held-out reference row")
    ap.add_argument("--n-heldout", type=int, default=3000, help="held-out (seed 1) reviews generated (default 3000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--reward-model", type=Path, default=None, metavar="DIR",
                    help="score with this GPT-2 RM folder instead of the shipped one (e.g. a retrained RM)")
    ap.add_argument("--out", type=Path, help="write rows and verdicts as JSON here")
    ns = ap.parse_args(argv)
    if ns.n < 4:
        ap.error("--n must be >= 4")
    return ns


def run(ns: argparse.Namespace) -> dict:
    from abc_gym.tasks.sentiment import load_prompts
    from abc_gym.tasks.sentiment.build import HELDOUT_SEED
    from abc_gym.tasks.sentiment.corpus import generate_labelled

    torch.set_num_threads(ns.threads)
    t0 = time.perf_counter()
    tok, policy, rm = load_models(ns.reward_model)
    check_fits(ns.lengths, policy.config.n_positions, rm.max_positions)
    prompts = load_prompts()
    need_reviews = not (ns.no_corpus and ns.no_reference)
    reviews = [t for t, _ in generate_labelled(ns.n_heldout, HELDOUT_SEED)] if need_reviews else []
    rows: list[Row] = []
    if not ns.no_reference:
        rows.append(measure(rm, tok, "make_fragments", "reference", *reference_fragments(tok, reviews)))
        print(f"reference done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    for k, (lo, hi) in enumerate(ns.lengths):
        label = f"{lo}-{hi}"
        seed = ns.seed * 1000 + k
        rows.append(measure(rm, tok, label, "policy", *policy_samples(policy, tok, prompts, ns.n, lo, hi, seed)))
        if not ns.no_corpus:
            rows.append(measure(rm, tok, label, "corpus", *corpus_cuts(tok, reviews, ns.n, lo, hi, seed)))
        print(f"{label} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return {
        "rows": [asdict(r) for r in rows],
        "verdicts": verdicts(rows),
        "reference_accuracy": REFERENCE_ACCURACY,
        "tolerance": TOLERANCE,
        "settings": {"reward_model": str(ns.reward_model or "shipped"), "n": ns.n, "lengths": [f"{lo}-{hi}" for lo, hi in ns.lengths], "seed": ns.seed,
                     "threads": ns.threads, "n_heldout": ns.n_heldout},
        "wall_s": time.perf_counter() - t0,
        "_rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    ns = parse_args(argv)
    result = run(ns)
    rows = result.pop("_rows")
    print(table(rows))
    print()
    floor = REFERENCE_ACCURACY - TOLERANCE
    for label, v in result["verdicts"].items():
        accs = ", ".join(f"{s} {a:.3f}" for s, a in v["accuracies"].items())
        word = "valid" if v["valid"] else "NOT valid"
        print(f"{label}: {word} (polar accuracy {accs}; floor {REFERENCE_ACCURACY} - {TOLERANCE} = {floor:.3f})")
    print(f"wall time {result['wall_s']:.0f} s")
    if ns.out is not None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
