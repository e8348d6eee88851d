"""Seeded generator of short synthetic English movie reviews.

The reviews replace IMDb for the embedded sentiment task. Their sentiment is
carried by words from the VADER lexicon and modified by VADER's own rules
(negation, booster/dampener intensifiers, the contrastive "but"), so the label
of a review hinges on specific tokens and their order. Every review is lowercase,
uses only ASCII, ends sentences with "." and avoids "!" and ALL CAPS (VADER
gives those extra emphasis, which would make the gold rule depend on typography).

Labels come from VADER's compound score (see ``gold.vader_label``) and the
generator balances positive / negative / neutral reviews by rejection sampling.
"""

from __future__ import annotations

import random
from functools import lru_cache

from abc_gym.compat.vader import BOOSTER_DICT, NEGATE, SentimentIntensityAnalyzer
from abc_gym.tasks.sentiment.gold import vader_label

# Curated from the VADER lexicon; filtered at import so every kept word really
# carries the intended sign (|valence| >= 1) and is not treated as a booster.
_POS_ADJ = (
    "good great brilliant wonderful excellent amazing beautiful charming delightful "
    "enjoyable fantastic fun funny gorgeous impressive lovely magnificent marvelous "
    "perfect pleasant powerful remarkable stunning superb terrific thrilling clever "
    "creative elegant engaging entertaining fascinating fresh graceful honest hilarious "
    "inspiring intelligent interesting nice outstanding playful smart sweet talented "
    "thoughtful worthy sincere strong original bold cool admirable awesome convincing "
    "satisfying splendid superior vibrant wise adorable brave cheerful exciting happy "
    "joyful lively heartwarming rich hopeful fabulous ambitious accomplished classy "
    "competent confident dynamic earnest effective energetic friendly glamorous grand "
    "passionate pleasing precious pretty romantic spirited successful sympathetic valuable"
).split()
_NEG_ADJ = (
    "bad awful terrible horrible boring dull weak stupid ugly annoying disappointing "
    "dreadful dumb fake flawed lame lazy messy painful pathetic poor ridiculous sad "
    "unpleasant useless worthless crude disgusting frustrating hopeless inferior "
    "irritating miserable offensive tragic cruel depressing grim harsh hateful horrendous "
    "idiotic incompetent insulting nasty obnoxious tense troubled angry arrogant bitter "
    "broken careless chaotic confused dismal disastrous exhausting failed feeble foolish "
    "gross ignorant insane insipid lousy mindless pitiful repetitive rotten rude selfish "
    "sick sluggish stressful tired toothless vile wrong"
).split()
_POS_NOUN = "masterpiece triumph joy delight treat pleasure success winner blessing".split()
_NEG_NOUN = "disaster mess failure disappointment waste catastrophe tragedy fiasco embarrassment".split()
# "i <verb> the film" (subject-experiencer verbs).
_POS_VERB = "loved liked enjoyed admired adored appreciated".split()
_NEG_VERB = "hated disliked despised regretted loathed".split()
# Base forms for "i did not <verb> the film" (all in the lexicon).
_POS_BASE = "love like enjoy admire adore appreciate".split()
_NEG_BASE = "hate dislike despise regret loathe".split()
# "the film <verb> me" (object-experiencer verbs, past participle in the lexicon).
_POS_PSYCH = "amazed charmed delighted excited impressed inspired pleased thrilled amused fascinated".split()
_NEG_PSYCH = "bored annoyed disappointed frustrated confused depressed irritated offended upset".split()

# Intensifiers come from VADER's BOOSTER_DICT (incr > 0, dampeners < 0).
_BOOSTERS = ["very", "extremely", "really", "quite", "totally", "absolutely", "thoroughly",
             "remarkably", "utterly", "deeply", "especially", "particularly", "highly"]
_DAMPENERS = ["slightly", "somewhat", "barely", "hardly", "partly", "marginally", "occasionally"]
# Negations from VADER's NEGATE list that read naturally after "was"/"is".
_NEGATIONS = ["not", "never"]
_NEG_AUX = ["was not", "was never", "wasn't", "is not", "isn't", "is never"]

# (subject, is_plural)
_SUBJECTS = [
    ("the film", False), ("the movie", False), ("the plot", False), ("the acting", False),
    ("the soundtrack", False), ("the ending", False), ("the cast", False), ("the director", False),
    ("the dialogue", False), ("the pacing", False), ("the story", False), ("the script", False),
    ("the cinematography", False), ("the score", False), ("the lead actor", False),
    ("the lead actress", False), ("the villain", False), ("the camera work", False),
    ("the editing", False), ("the final act", False), ("the opening scene", False),
    ("the screenplay", False), ("the sequel", False), ("the premise", False), ("the humor", False),
    ("the characters", True), ("the effects", True), ("the costumes", True), ("the visuals", True),
    ("the songs", True), ("the fight scenes", True), ("the performances", True),
    ("the supporting actors", True), ("the sets", True),
]
_NEUTRAL_ADJ = ("long short quiet loud simple slow fast modern old new familiar different "
                "unusual traditional colorful busy mysterious dramatic quick plain steady "
                "ordinary typical historical musical visual").split()
_CHARACTERS = ["a young detective", "an old farmer", "two sisters", "a retired teacher",
               "a small family", "a lonely painter", "a police officer", "three students",
               "a ship captain", "a young doctor", "an aging boxer", "a taxi driver"]
_PLACES = ["a quiet town", "the city", "a remote island", "the desert", "a small village",
           "a crowded hotel", "the mountains", "a busy harbor", "an old house", "the suburbs"]
_TIMES = ["last night", "on a rainy sunday", "with my brother", "at the cinema", "on a long flight",
          "with some friends", "on television", "at a festival", "over the weekend", "after work"]
_DURATIONS = ["ninety minutes", "two hours", "almost three hours", "about an hour and a half",
              "just under two hours", "two and a half hours"]
_NEUTRAL_TEMPLATES = [
    "i watched it {time}.",
    "the story follows {char} in {place}.",
    "it runs {dur}.",
    "the film is set in {place}.",
    "{subj} {be} {nadj}.",
    "the director also wrote the script.",
    "it was released {time2}.",
    "{char} {move} to {place}.",
    "most of it takes place in {place}.",
    "i saw it {time} and then read the book.",
]
_TIMES2 = ["last year", "in the spring", "a few years ago", "in the summer", "this month"]
_MOVES = ["moves", "travels", "returns", "comes back"]


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, float]:
    return SentimentIntensityAnalyzer().lexicon


def _filtered(words: list[str], sign: int) -> list[str]:
    """Keep words whose VADER valence has the wanted sign and magnitude >= 1."""
    lex = _lexicon()
    return [w for w in dict.fromkeys(words)
            if w in lex and lex[w] * sign >= 1.0 and w not in BOOSTER_DICT and w not in NEGATE]


@lru_cache(maxsize=1)
def vocab() -> dict[str, list[str]]:
    """Word lists used by the generator, filtered against the installed VADER lexicon."""
    lex = _lexicon()
    v = {
        "pos_adj": _filtered(_POS_ADJ, 1), "neg_adj": _filtered(_NEG_ADJ, -1),
        "pos_noun": _filtered(_POS_NOUN, 1), "neg_noun": _filtered(_NEG_NOUN, -1),
        "pos_verb": _filtered(_POS_VERB, 1), "neg_verb": _filtered(_NEG_VERB, -1),
        "pos_psych": _filtered(_POS_PSYCH, 1), "neg_psych": _filtered(_NEG_PSYCH, -1),
        "boosters": [w for w in _BOOSTERS if BOOSTER_DICT.get(w, 0) > 0],
        "dampeners": [w for w in _DAMPENERS if BOOSTER_DICT.get(w, 0) < 0],
        # Neutral adjectives must be absent from the lexicon so they carry no valence.
        "neutral_adj": [w for w in _NEUTRAL_ADJ if w not in lex],
    }
    assert len(v["pos_adj"]) >= 60 and len(v["neg_adj"]) >= 60, "VADER lexicon changed"
    return v


def _be(plural: bool, rng: random.Random) -> str:
    return rng.choice(["were", "are", "felt", "seemed"] if plural else ["was", "is", "felt", "seemed"])


def _adj_phrase(polarity: int, rng: random.Random) -> str:
    """An adjective phrase; negation flips the surface word's polarity (VADER's N_SCALAR)."""
    v = vocab()
    negate = rng.random() < 0.25
    # A negated phrase uses the opposite-sign adjective so the phrase keeps ``polarity``.
    word_sign = -polarity if negate else polarity
    adj = rng.choice(v["pos_adj"] if word_sign > 0 else v["neg_adj"])
    r = rng.random()
    mod = ""
    if r < 0.3:
        mod = rng.choice(v["boosters"]) + " "
    elif r < 0.4 and not negate:  # "not hardly good" reads badly; dampen only plain phrases
        mod = rng.choice(v["dampeners"]) + " "
    neg = rng.choice(_NEGATIONS) + " " if negate else ""
    return f"{neg}{mod}{adj}"


def _clause(polarity: int, rng: random.Random) -> str:
    """One opinion clause (no final period) whose intended polarity is ``polarity``."""
    v = vocab()
    subj, plural = rng.choice(_SUBJECTS)
    kind = rng.random()
    if kind < 0.45:
        if rng.random() < 0.5:
            return f"{subj} {_be(plural, rng)} {_adj_phrase(polarity, rng)}"
        return f"{subj} {_be(plural, rng)} {_adj_phrase(polarity, rng)} and {_adj_phrase(polarity, rng)}"
    if kind < 0.62:
        # "i loved the plot" / "i did not enjoy the plot" (negated base form flips polarity)
        if rng.random() < 0.25:
            base = rng.choice(_NEG_BASE if polarity > 0 else _POS_BASE)
            return f"i {rng.choice(['did not', 'didnt', 'never'])} {base} {subj}"
        verb = rng.choice(v["pos_verb"] if polarity > 0 else v["neg_verb"])
        mod = rng.choice(["", "", "really ", "totally ", "somewhat ", "absolutely "])
        return f"i {mod}{verb} {subj}"
    if kind < 0.78:
        psych = rng.choice(v["pos_psych"] if polarity > 0 else v["neg_psych"])
        mod = rng.choice(["", "", "really ", "completely ", "slightly ", "thoroughly "])
        if rng.random() < 0.5:
            return f"i was {mod}{psych} by {subj}"
        return f"{subj} {'have' if plural else 'has'} {mod}{psych} me"
    noun = rng.choice(v["pos_noun"] if polarity > 0 else v["neg_noun"])
    article = "an" if noun[0] in "aeiou" else "a"
    if rng.random() < 0.5:
        return f"it was {article} {noun}"
    mod = rng.choice(["", "complete ", "total ", "real "])
    if mod:
        article = "a"
    return f"{subj} {'were' if plural else 'was'} {article} {mod}{noun}"


def _neutral_sentence(rng: random.Random) -> str:
    subj, plural = rng.choice(_SUBJECTS)
    return rng.choice(_NEUTRAL_TEMPLATES).format(
        time=rng.choice(_TIMES), char=rng.choice(_CHARACTERS), place=rng.choice(_PLACES),
        dur=rng.choice(_DURATIONS), subj=subj, be=_be(plural, rng),
        nadj=rng.choice(vocab()["neutral_adj"]), time2=rng.choice(_TIMES2), move=rng.choice(_MOVES),
    )


def _sentence(polarity: int, rng: random.Random) -> str:
    """A sentence leaning to ``polarity`` (1, -1) or neutral (0)."""
    if polarity == 0:
        return _neutral_sentence(rng)
    if rng.random() < 0.2:
        # Contrast: VADER halves what precedes the first "but" and boosts what follows by 1.5.
        return f"{_clause(-polarity, rng)} but {_clause(polarity, rng)}."
    return _clause(polarity, rng) + "."


_N_SENT_WEIGHTS = [0.14, 0.2, 0.2, 0.18, 0.16, 0.12]  # 1..6 sentences


def _draft(target: int, rng: random.Random) -> str:
    """One candidate review biased toward ``target`` (1 pos, 0 neg, -1 neutral)."""
    n = rng.choices(range(1, 7), weights=_N_SENT_WEIGHTS)[0]
    sentences = []
    for _ in range(n):
        r = rng.random()
        if target == -1:
            # Neutral reviews: mostly facts, occasionally a weak mixed opinion.
            pol = 0 if r < 0.85 else rng.choice([1, -1])
        else:
            lean = 1 if target == 1 else -1
            pol = lean if r < 0.6 else (0 if r < 0.85 else -lean)
        sentences.append(_sentence(pol, rng))
    return " ".join(sentences)


def generate_labelled(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` reviews with their VADER labels (1 pos, 0 neg, -1 neutral), classes balanced.

    Targets cycle pos/neg/neutral in a seeded random order; each draft is rejected
    until VADER agrees with its target, so the mix is exact up to n mod 3.
    """
    rng = random.Random(seed)
    targets = [(1, 0, -1)[i % 3] for i in range(n)]
    rng.shuffle(targets)
    out: list[tuple[str, int]] = []
    for target in targets:
        while True:
            text = _draft(target, rng)
            if vader_label(text) == target:
                out.append((text, target))
                break
    return out


def generate_reviews(n: int, seed: int) -> list[str]:
    """``n`` seeded synthetic movie reviews, balanced over VADER pos / neg / neutral."""
    return [t for t, _ in generate_labelled(n, seed)]
