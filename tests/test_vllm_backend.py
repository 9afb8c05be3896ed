"""`rrpo generate --backend vllm` hands the engine what the transformers backend feeds the model: the
adapter's prompt, the decoded frames, the clip's real timing as video metadata and the family's processor
arguments. A stand-in `vllm` module records the calls (vllm itself needs a GPU: what vLLM then does with
these inputs is not checked here)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from rrpo.video.clip import Clip


class _Recorder:
    llm_kwargs: dict = {}
    requests: list = []


def _fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")

    class LLM:
        def __init__(self, **kwargs):
            _Recorder.llm_kwargs = kwargs

        def generate(self, requests, sampling, lora_request=None, use_tqdm=True):
            _Recorder.requests = requests
            out = types.SimpleNamespace(text=" (B) yes ")
            return [types.SimpleNamespace(outputs=[out]) for _ in requests]

    vllm.LLM = LLM
    vllm.SamplingParams = lambda **kw: kw
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, i, path: (name, i, path)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl", "llava-onevision"])
def test_the_engine_gets_the_prompt_frames_timing_and_sizing_training_uses(family, tmp_path, monkeypatch):
    from rrpo.models import build_tiny_model, load_model
    from rrpo.selfalign.commands import make_generator

    _fake_vllm(monkeypatch)
    model = build_tiny_model(family, tmp_path / "m", num_frames=4)
    (model / "rrpo_family.json").unlink()  # as a real checkpoint: the processor sizes the frames
    gen = make_generator(str(model), None, backend="vllm", frames=4, frame_size=None, max_new_tokens=5,
                         batch_size=4, load_options={"max_pixels": 3136})  # fmt: skip
    vlm = load_model(model, num_frames=4, max_pixels=3136)
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    # 4 frames sampled from a 60-second source at 30 fps: indices 225, 675, 1125, 1575
    clip = Clip(frames, [7.5, 22.5, 37.5, 52.5], [225, 675, 1125, 1575], 30.0, 60.0, (48, 64), 1800)
    assert gen([(clip, "Is there a dog?")]) == ["(B) yes"]
    assert _Recorder.llm_kwargs["model"] == str(model) and _Recorder.llm_kwargs["enable_lora"] is False
    (req,) = _Recorder.requests
    assert req["prompt"] == vlm.prompt_text("Is there a dog?")  # the template and the family's quirks
    video, meta = req["multi_modal_data"]["video"]
    assert video is frames
    assert meta == {"fps": 30.0, "frames_indices": [225, 675, 1125, 1575], "total_num_frames": 1800,
                    "duration": 60.0, "do_sample_frames": False}  # fmt: skip
    expected = {k: v for k, v in vlm.processor_video_kwargs([clip]).items() if k != "video_metadata"}
    assert req["mm_processor_kwargs"] == {"do_sample_frames": False, **expected}
    if family.startswith("qwen"):  # the per-frame pixel cap reaches the engine
        assert req["mm_processor_kwargs"]["size"]["longest_edge"] <= 3136 * (4 if family == "qwen3-vl" else 1)


def test_a_port_is_refused_on_the_vllm_backend(tmp_path, monkeypatch):
    from rrpo.errors import RRPOError
    from rrpo.models import build_tiny_model
    from rrpo.selfalign.commands import make_generator

    _fake_vllm(monkeypatch)
    model = build_tiny_model("videochat2", tmp_path / "m", num_frames=4)
    with pytest.raises(RRPOError, match="videochat2 port runs on the transformers backend only"):
        make_generator(
            str(model), None, backend="vllm", frames=4, frame_size=None, max_new_tokens=5, batch_size=1
        )
