"""Optional vLLM backend for `rrpo generate --backend vllm` (GPU only; vllm is not a dependency).

The engine is fed what the transformers backend and training feed the model: the prompt from the family's
adapter (`prompt_text`: the checkpoint's chat template and the family's quirks), the decoded frames as
they are (native aspect ratio, the clip's own sampling), the clip's timing as the video's metadata
(vLLM's documented `multi_modal_data={"video": (frames, metadata)}` form: the source fps, the sampled
frames' indices in the source, the source's frame count and duration) and the family's processor
arguments (`processor_video_kwargs`: no re-sampling, the per-frame pixel cap, ...) as `mm_processor_kwargs`.

Checked here (tests/test_vllm_backend.py, with a stand-in `vllm` module): exactly what is handed to
`vllm.LLM` and `LLM.generate`. Not checked (no GPU, no vllm on this machine): that vLLM's own processing of
those inputs gives the same video tokens and positions as transformers'.
"""

from __future__ import annotations

from typing import Any

from rrpo.errors import RRPOError


def video_metadata_dict(clip: Any) -> dict[str, Any]:
    """A clip's timing as vLLM's video metadata: the fields of the `VideoMetadata` the transformers backend
    hands its processor (`rrpo.models.families.qwen2_vl.video_metadata`), as plain values."""
    from rrpo.models.families.qwen2_vl import video_metadata

    meta = video_metadata(clip)
    return {
        "fps": meta.fps,
        "frames_indices": list(meta.frames_indices),
        "total_num_frames": meta.total_num_frames,
        "duration": meta.duration,
        "do_sample_frames": False,
    }


class VLLMGenerator:
    def __init__(
        self,
        model_dir: str,
        adapter_dir: str | None,
        *,
        frames: int,
        frame_size,  # noqa: ANN001
        max_new_tokens: int,
        batch_size: int,
        load_options: dict | None = None,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise RRPOError(
                "--backend vllm needs vllm installed (pip install vllm, on a GPU machine)"
            ) from err
        from rrpo.models.loading import family_of, recorded_frame_size, resolve_model
        from rrpo.models.registry import family_class

        options = dict(load_options or {})
        local = resolve_model(model_dir, revision=options.get("revision"))
        cls = family_class(family_of(local))
        if cls.ported:
            raise RRPOError(f"--backend vllm: the {cls.family} port runs on the transformers backend only")
        # The family's adapter without weights: its prompt and processor arguments are what training uses.
        self.vlm = cls(
            None,
            cls.load_processor(local),
            num_frames=frames,
            frame_size=frame_size or recorded_frame_size(local),
            fps=options.get("fps"),
            max_frames=options.get("max_frames", 768),
            max_pixels=options.get("max_pixels"),
        )
        self.llm = LLM(
            model=str(local), enable_lora=adapter_dir is not None, limit_mm_per_prompt={"video": 1}
        )
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.lora = None
        if adapter_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(resolve_model(adapter_dir, what="adapter")))
        self.frame_size = self.vlm.frame_size
        self.tokenizer = self.vlm.tokenizer

    def request(self, clip: Any, prompt: str) -> dict[str, Any]:
        """One engine request: prompt, frames with their timing, the family's processor arguments."""
        from rrpo.models.base import as_clip

        clip = as_clip(clip)
        kwargs = {k: v for k, v in self.vlm.processor_video_kwargs([clip]).items() if k != "video_metadata"}
        return {
            "prompt": self.vlm.prompt_text(prompt),
            "multi_modal_data": {"video": (clip.frames, video_metadata_dict(clip))},
            "mm_processor_kwargs": {"do_sample_frames": False, **kwargs},
        }

    def __call__(self, items):  # noqa: ANN001
        requests = [self.request(clip, prompt) for clip, prompt in items]
        outputs = self.llm.generate(requests, self.sampling, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]
