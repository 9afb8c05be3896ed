"""The `videochat2` family: VideoChat2 stage 3 (Mistral-7B) ported on transformers components, split as
transformers splits a model folder: `configuration` (settings, paths, prompts), `modeling` (UMT ViT,
Q-Former, projection, Mistral), `loading` (the stage-3 release, the LoRA merge, tiny models) and `adapter`
(the family behind rrpo's adapter interface)."""

from rrpo.models.families.videochat2.adapter import VideoChat2Adapter

__all__ = ["VideoChat2Adapter"]
