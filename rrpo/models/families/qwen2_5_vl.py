"""The `qwen2.5-vl` family (Qwen/Qwen2.5-VL-7B-Instruct): Qwen2-VL's adapter with a windowed vision tower
and absolute-time temporal positions (`second_per_grid_ts`, from the clip's real sampled rate)."""

from __future__ import annotations

from typing import Any

from rrpo.models.families.qwen2_vl import Qwen2VLAdapter

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "qwen2.5-vl", "adapter": "Qwen25VLAdapter", "order": 2}


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct): `second_per_grid_ts` = temporal patch / sampled fps."""

    family = FAMILY["name"]
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    real_checkpoints = ("qwen2.5-vl",)
    shrink_vision = {"hidden_size": 32, "depth": 1, "num_heads": 2, "intermediate_size": 64,
                     "out_hidden_size": 64, "fullatt_block_indexes": [0]}  # fmt: skip

    @classmethod
    def tiny_vision(cls, text: dict[str, Any]) -> dict[str, Any]:
        patch = cls.tiny_patch
        return {"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": patch, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "intermediate_size": 64, "out_hidden_size": text["hidden_size"],
                "window_size": 2 * patch * 2, "fullatt_block_indexes": [1], "tokens_per_second": 2}  # fmt: skip
