"""`rrpo inspect`: show exactly what a checkpoint is fed for one video and question.

The first thing to run when a checkpoint misbehaves: the prompt text with the video placeholder
summarised, the video-token count, the sampled frames' real timestamps, the per-frame size the
processor chose, the end-of-turn and stop tokens, and a contact sheet of the sampled frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def _summarise(text: str, token: str) -> str:
    """Collapse each run of `token` into `token x N`."""
    return re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token} x {len(m.group(0)) // len(token)}", text)


def frames_sheet(frames: np.ndarray, timestamps: list[float], path: Path, *, cell: int = 160) -> Path:
    """One row per 8 frames, each labelled with its timestamp; native aspect ratio kept."""
    from PIL import Image, ImageDraw

    t, h, w, _ = frames.shape
    cw, ch = cell, max(8, round(cell * h / w))
    cols = min(8, t)
    rows = (t + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cw, rows * (ch + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (frame, ts) in enumerate(zip(frames, timestamps)):
        x, y = (i % cols) * cw, (i // cols) * (ch + 14)
        sheet.paste(Image.fromarray(frame).resize((cw, ch)), (x, y + 14))
        draw.text((x + 2, y + 1), f"{i}: {ts:.2f} s", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def inspect_model(vlm: Any, video: str | Path, question: str, *, sheet: str | Path | None = None) -> dict:
    """What `vlm` receives for (video, question): a JSON-ready dict (see the module docstring)."""
    clip = vlm.read_clip(video)
    prompt = vlm.prompt_text(question)
    inputs = vlm.video_inputs([prompt], [clip])
    tok = vlm.tokenizer
    ids = inputs["input_ids"][0]
    video_token = vlm.video_feature_token
    video_id = tok.convert_tokens_to_ids(video_token)
    text = tok.decode(ids)
    info: dict[str, Any] = {
        "family": vlm.family,
        "model": getattr(vlm, "source", None),
        "prompt": _summarise(text, video_token),
        "prompt_tokens": int(ids.numel()),
        "video_tokens": int((ids == video_id).sum()),
        "frames": clip.num_frames,
        "timestamps_s": [round(t, 3) for t in clip.timestamps],
        "source": {
            "fps": round(clip.source_fps, 3),
            "duration_s": round(clip.duration, 3),
            "size_hw": list(clip.source_size),
        },
        "decoded_frame_hw": [int(clip.frames.shape[1]), int(clip.frames.shape[2])],
        "sampled_fps": round(clip.sampled_fps, 4),
        "turn_end": vlm.turn_end,
        "stop_token_ids": vlm.stop_token_ids,
        "stop_tokens": tok.convert_ids_to_tokens(vlm.stop_token_ids),
        "pad_token_id": vlm.pad_token_id,
    }
    if "video_grid_thw" in inputs:
        t, gh, gw = (int(x) for x in inputs["video_grid_thw"][0])
        patch = vlm.processor.video_processor.patch_size
        info["grid_thw"] = [t, gh, gw]
        info["frame_hw_seen_by_model"] = [gh * patch, gw * patch]
    elif "pixel_values_videos" in inputs:
        info["frame_hw_seen_by_model"] = list(inputs["pixel_values_videos"].shape[-2:])
    elif "pixel_values" in inputs:  # frames as images (InternVL): [frames, C, H, W]
        info["frame_hw_seen_by_model"] = list(inputs["pixel_values"].shape[-2:])
    if "video_compression_mask" in inputs:  # VideoLLaMA3 drops patches that barely change between frames
        info["video_tokens_before_compression"] = int(inputs["video_compression_mask"].numel())
    if "second_per_grid_ts" in inputs:
        info["second_per_grid_ts"] = [round(float(x), 4) for x in inputs["second_per_grid_ts"]]
    if sheet is not None:
        info["contact_sheet"] = str(frames_sheet(clip.frames, clip.timestamps, Path(sheet)))
    return info
