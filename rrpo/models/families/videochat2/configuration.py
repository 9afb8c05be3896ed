"""VideoChat2's settings: where its parts come from (the stage-3 directory, the base LLM, the Q-Former's
tokenizer), the heads its tensors do not tell, and the official prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASE_LLM = "mistralai/Mistral-7B-Instruct-v0.2"
QFORMER_TOKENIZER = "bert-base-uncased"
SETTINGS_FILE = "videochat2_settings.json"
STAGE3_FILE = "videochat2_mistral_7b_stage3"  # .pth or .safetensors; the release has no config.json
# The official training instruction (its Q-Former text) and the inference system prompt.
INSTRUCTION = "Carefully watch the video and answer the question."
SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
    "of objects, and the action and pose of persons. Based on your observations, answer the question.\n"
)


def model_paths(
    model_dir: str | Path, base_llm: Any = None, qformer_tokenizer: Any = None
) -> tuple[Any, Any, dict]:
    """(base LLM, Q-Former tokenizer, settings) for a model directory: explicit values, else the
    directory's own `mistral/`, `bert/` and settings file, else the Hub ids."""
    root = Path(model_dir)
    llm = base_llm or (root / "mistral" if (root / "mistral" / "config.json").is_file() else BASE_LLM)
    bert = qformer_tokenizer or (
        root / "bert" if (root / "bert" / "vocab.txt").is_file() else QFORMER_TOKENIZER
    )
    settings = json.loads((root / SETTINGS_FILE).read_text()) if (root / SETTINGS_FILE).is_file() else {}
    return llm, bert, settings


def load_qformer_tokenizer(path: Any) -> Any:
    """BERT's tokenizer with `[DEC]` added as BOS (the official `init_tokenizer`)."""
    from transformers import BertTokenizer

    local = Path(path) / "vocab.txt"
    tok = (
        BertTokenizer(str(local), do_lower_case=True)
        if local.is_file()
        else BertTokenizer.from_pretrained(str(path))
    )
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok
