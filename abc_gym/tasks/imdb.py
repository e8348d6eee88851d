"""The paper's IMDb setup by hub ids: policy lvwerra/gpt2-imdb, reward model XanderJC/gpt2-rm-imdb.

Prompts are the first 2-7 policy tokens of IMDb training reviews (``datasets``, optional
extra ``abc_gym[imdb]``). Offline, each loader fails with a message saying what to
download or which local paths to pass (``gym.make(..., policy=DIR, reward_model=DIR,
prompts=[...])``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMDB_POLICY = "lvwerra/gpt2-imdb"
IMDB_REWARD_MODEL = "XanderJC/gpt2-rm-imdb"


def imdb_prompts(tokenizer: Any, n: int = 1024, seed: int = 0, min_tokens: int = 2, max_tokens: int = 7) -> list[str]:
    """First 2-7 tokens of ``n`` IMDb training reviews, cut with the policy's tokenizer (seeded)."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise ImportError(
            'IMDb prompts need the datasets package: pip install "abc_gym[imdb]", '
            "or pass prompts=[...] (a list of strings or a .json/.txt file) to gym.make"
        ) from err
    try:
        reviews = load_dataset("stanfordnlp/imdb", split="train")["text"]
    except Exception as err:  # datasets raises several types when offline
        raise OSError(
            "could not load the IMDb dataset (offline?): on a machine with network run "
            "`python -c \"import datasets; datasets.load_dataset('stanfordnlp/imdb')\"` to cache it, "
            f"or pass prompts=[...] to gym.make; original error: {type(err).__name__}: {err}"
        ) from err
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(reviews), size=min(n, len(reviews)), replace=False)
    prompts = []
    for i in picks:
        ids = tokenizer(reviews[int(i)].replace("<br />", " "), add_special_tokens=False)["input_ids"]
        k = int(rng.integers(min_tokens, max_tokens + 1))
        prompts.append(tokenizer.decode(ids[:k]))
    return prompts
