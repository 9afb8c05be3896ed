"""LongVU's configuration: the released `config.json` (model_type "cambrian_qwen")."""

from __future__ import annotations

from typing import Any

from transformers import Qwen2Config


class LongVUConfig(Qwen2Config):
    """The released `config.json` (model_type "cambrian_qwen"): a Qwen2 config plus the connector's
    fields, kept as attributes. `siglip_config` / `dino_config` describe the towers (dicts)."""

    model_type = "cambrian_qwen"

    def __init__(self, siglip_config: dict | None = None, dino_config: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.siglip_config = siglip_config
        self.dino_config = dino_config
        self.vision_hidden_size = kwargs.get("vision_hidden_size", 1024)
        self.query_num_list = kwargs.get("query_num_list", [144])
        self.connector_depth = kwargs.get("connector_depth", 3)
        self.image_token_len = kwargs.get("image_token_len", 144)
        self.lowres_token = kwargs.get("lowres_token", 8)
        self.tokenizer_model_max_length = kwargs.get("tokenizer_model_max_length", 8192)
        self.inference_max_length = kwargs.get("inference_max_length", 16)
        self.dino_threshold = kwargs.get("dino_threshold", 0.83)
        self.drop_threshold = kwargs.get("drop_threshold", 0.7)
        self.highres = kwargs.get("highres", True)
        self.mm_vision_tower_aux_token_len_list = kwargs.get("mm_vision_tower_aux_token_len_list", [576, 576])


# ---------------------------------------------------------------------------------------------------
# The spatial-vision aggregator (names as in the checkpoint)
