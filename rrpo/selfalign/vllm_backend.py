"""Optional vLLM backend for `rrpo generate --backend vllm` (GPU only; vllm is not a dependency).

vLLM supports the same model families (Qwen2/2.5/3-VL, LLaVA-OneVision, LLaVA-NeXT-Video) and takes the
decoded frames as `multi_modal_data={"video": frames}` with the model's own chat template, so prompts and
frames are identical to the transformers backend.
"""

from __future__ import annotations

from rrpo.errors import RRPOError


class VLLMGenerator:
    def __init__(
        self,
        model_dir: str,
        adapter_dir: str | None,
        *,
        frames: int,
        frame_size,
        max_new_tokens: int,
        batch_size: int,
        load_options: dict | None = None,
    ):  # noqa: ANN001
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise RRPOError(
                "--backend vllm needs vllm installed (pip install vllm, on a GPU machine)"
            ) from err
        from transformers import AutoProcessor

        self.llm = LLM(model=model_dir, enable_lora=adapter_dir is not None, limit_mm_per_prompt={"video": 1})
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.lora = None
        if adapter_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapter_dir)
        self.frame_size = frame_size

    def __call__(self, items):  # noqa: ANN001
        requests = []
        for clip, prompt in items:
            frames = getattr(clip, "frames", clip)
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            requests.append({"prompt": text, "multi_modal_data": {"video": frames}})
        outputs = self.llm.generate(requests, self.sampling, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]
