"""Provenance: command, settings, git commit, versions and model hashes stored with every result."""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def model_files_hash() -> str:
    """Short sha256 over every shipped model file (path and bytes): a run belongs to one build of the task."""
    from abc_gym.tasks.sentiment import POLICY_PATH

    root = Path(POLICY_PATH).parent  # abc_gym/tasks/sentiment/models
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def artefact_hashes() -> dict[str, str]:
    """Short sha256 of the shipped model weights: results belong to one build of the task."""
    from abc_gym.tasks.sentiment import MINILM_HEAD_PATH, POLICY_PATH, REWARD_MODEL_PATH

    out = {}
    for name, path in (("policy", POLICY_PATH / "model.safetensors"), ("reward_gpt2", REWARD_MODEL_PATH / "model.safetensors"),
                       ("reward_minilm_head", MINILM_HEAD_PATH / "head.safetensors")):
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "missing"
    out["all_model_files"] = model_files_hash()  # what --resume checks
    return out


def run_meta(args: argparse.Namespace, wall_s: float | None) -> dict[str, Any]:
    """Command, settings, versions and artefacts: enough to rerun and to know what was run."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    return {
        "command": "python -m benchmarks.dense_vs_sparse " + " ".join(shlex.quote(a) for a in args.argv),
        "settings": {k: v for k, v in vars(args).items() if k != "argv"},
        "wall_s": wall_s,
        "git": {"commit": commit, "dirty": dirty},
        "artefacts": artefact_hashes(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "cuda": torch.cuda.is_available(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
