"""The `longvu` family: LongVU (Vision-CAIR/LongVU_Qwen2_7B) ported on transformers components, split as
transformers splits a model folder: `configuration`, `modeling` (the connector and the LM), `vision` (the
two towers and the official geometry rules), `loading` (the released layout, tiny models) and `adapter`
(the family behind rrpo's adapter interface)."""

from rrpo.models.families.longvu.adapter import LongVUAdapter

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {
    "name": "longvu",
    "adapter": "LongVUAdapter",
    "order": 6,
    "options": {
        "vision_towers": (
            "LongVU only: a directory holding its two towers as siglip/ and dinov2/ (default: inside "
            "--model, else google/siglip-so400m-patch14-384 and facebook/dinov2-giant from the Hub)"
        ),
    },
}

__all__ = ["LongVUAdapter"]
