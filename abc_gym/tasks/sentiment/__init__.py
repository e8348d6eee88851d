"""Embedded offline sentiment task: synthetic reviews, a small GPT-2 policy and reward models.

Everything here is built by ``python -m abc_gym.tasks.sentiment.build`` and
shipped inside the package, so the task runs with no network access.
"""

from __future__ import annotations

import json
from pathlib import Path

_ROOT = Path(__file__).resolve().parent

POLICY_PATH: Path = _ROOT / "models" / "policy"
REWARD_MODEL_PATH: Path = _ROOT / "models" / "reward_gpt2"
MINILM_HEAD_PATH: Path = _ROOT / "models" / "reward_minilm_head"
PROMPTS_PATH: Path = _ROOT / "data" / "prompts.json"

__all__ = ["POLICY_PATH", "REWARD_MODEL_PATH", "MINILM_HEAD_PATH", "PROMPTS_PATH", "load_prompts"]


def load_prompts() -> list[str]:
    """The shipped prompts: the first 2-7 policy tokens of held-out reviews, decoded."""
    with PROMPTS_PATH.open(encoding="utf-8") as f:
        return list(json.load(f)["prompts"])
