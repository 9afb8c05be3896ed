"""The `longvu` family: LongVU (Vision-CAIR/LongVU_Qwen2_7B) ported on transformers components, split as
transformers splits a model folder: `configuration`, `modeling` (the connector and the LM), `vision` (the
two towers and the official geometry rules), `loading` (the released layout, tiny models) and `adapter`
(the family behind rrpo's adapter interface)."""

from rrpo.models.families.longvu.adapter import LongVUAdapter

__all__ = ["LongVUAdapter"]
