"""The `videochat2` family: VideoChat2 stage 3 (Mistral-7B) ported on transformers components, split as
transformers splits a model folder: `configuration` (settings, paths, prompts), `modeling` (UMT ViT,
Q-Former, projection, Mistral), `loading` (the stage-3 release, the LoRA merge, tiny models) and `adapter`
(the family behind rrpo's adapter interface)."""

from rrpo.models.families.videochat2.adapter import VideoChat2Adapter

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {
    "name": "videochat2",
    "adapter": "VideoChat2Adapter",
    "order": 7,
    "options": {
        "base_llm": (
            "VideoChat2 only: the base LLM its stage 3 was trained on (default: --model's mistral/, "
            "else mistralai/Mistral-7B-Instruct-v0.2)"
        ),
        "qformer_tokenizer": (
            "VideoChat2 only: the Q-Former's BERT tokenizer (default: --model's bert/, else "
            "bert-base-uncased)"
        ),
    },
}

__all__ = ["VideoChat2Adapter"]
