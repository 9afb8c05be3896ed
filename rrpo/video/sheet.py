"""Contact sheet: the original frames above the perturbed ones, to see what a perturbation did.

Layout (all sizes in pixels; T frames, input frames H x W, ``cell`` wide thumbnails):

- thumbnails are ``cell`` x ``cell_h`` with ``cell_h = max(1, round(cell * H / W))``;
- width  = ``T * cell + (T + 1) * PAD``;
- height = ``PAD + 2 * (CAPTION_H + cell_h + LABEL_H) + PAD``.

Each row has a caption above it and an index label under every thumbnail. Original cells show their
frame index. With a `PerturbInfo`, perturbed cells show the source frame they display (``order[j]``);
a frame moved from its position gets an orange frame and label, a masked one a red cross, red frame and
the label ``"<src> M"``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rrpo.video.perturb import PerturbError, PerturbInfo

PAD = 4
CAPTION_H = 14
LABEL_H = 12
BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)
MOVED = (255, 160, 0)
MASKED = (230, 40, 40)


def sheet_size(num_frames: int, frame_height: int, frame_width: int, cell: int = 96) -> tuple[int, int]:
    """(width, height) of the contact sheet for T = `num_frames` frames of H x W; see the module docstring."""
    cell_h = _cell_height(frame_height, frame_width, cell)
    width = num_frames * cell + (num_frames + 1) * PAD
    height = PAD + 2 * (CAPTION_H + cell_h + LABEL_H) + PAD
    return width, height


def contact_sheet(
    original: np.ndarray, perturbed: np.ndarray, *, info: PerturbInfo | None = None, cell: int = 96
) -> Image.Image:
    """Two-row RGB sheet: `original` [T, H, W, 3] uint8 above `perturbed` [T, H', W', 3] uint8.

    Save it with ``image.save(path, format="PNG")``. Raises PerturbError when the clips have different
    lengths, `info` does not match them, or `cell` < 8.
    """
    original, perturbed = np.asarray(original), np.asarray(perturbed)
    for name, clip in (("original", original), ("perturbed", perturbed)):
        if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0:
            raise PerturbError(
                f"{name} frames must be non-empty uint8 [T, H, W, 3], got {clip.dtype} {clip.shape}"
            )
    t = len(original)
    if len(perturbed) != t:
        raise PerturbError(f"original has {t} frames but perturbed has {len(perturbed)}")
    if info is not None and info.num_frames != t:
        raise PerturbError(f"PerturbInfo describes {info.num_frames} frames, the clips have {t}")
    if cell < 8:
        raise PerturbError(f"cell must be at least 8 pixels, got {cell}")

    _, h, w, _ = original.shape
    cell_h = _cell_height(h, w, cell)
    sheet = Image.new("RGB", sheet_size(t, h, w, cell), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()

    top = PAD
    draw.text((PAD, top), f"original ({t} frames)", fill=TEXT, font=font)
    for j in range(t):
        x, y = _cell_origin(j, cell), top + CAPTION_H
        sheet.paste(_thumbnail(original[j], cell, cell_h), (x, y))
        draw.text((x + 2, y + cell_h), str(j), fill=TEXT, font=font)

    top += CAPTION_H + cell_h + LABEL_H
    draw.text((PAD, top), _caption(info), fill=TEXT, font=font)
    masked = set(info.masked) if info is not None else set()
    for j in range(t):
        x, y = _cell_origin(j, cell), top + CAPTION_H
        sheet.paste(_thumbnail(perturbed[j], cell, cell_h), (x, y))
        box = (x, y, x + cell - 1, y + cell_h - 1)
        if info is None:
            label, colour = str(j), TEXT
        elif j in masked:
            label, colour = f"{info.order[j]} M", MASKED
            draw.line(box, fill=MASKED, width=2)
            draw.line((box[0], box[3], box[2], box[1]), fill=MASKED, width=2)
            draw.rectangle(box, outline=MASKED, width=2)
        elif info.order[j] != j:
            label, colour = str(info.order[j]), MOVED
            draw.rectangle(box, outline=MOVED, width=2)
        else:
            label, colour = str(j), TEXT
        draw.text((x + 2, y + cell_h), label, fill=colour, font=font)
    return sheet


def _caption(info: PerturbInfo | None) -> str:
    if info is None:
        return "perturbed"
    parts = [f"perturbed: {info.kind}", f"seed {info.seed}", f"key {info.key}"]
    if info.variant:
        parts.append(f"variant {info.variant}")
    if info.window is not None:
        parts.append(f"window {info.window}")
    if info.mask_fraction is not None:
        parts.append(f"masked {len(info.masked)}/{info.num_frames}")
    return ", ".join(parts)


def _cell_height(frame_height: int, frame_width: int, cell: int) -> int:
    return max(1, round(cell * frame_height / frame_width))


def _cell_origin(j: int, cell: int) -> int:
    return PAD + j * (cell + PAD)


def _thumbnail(frame: np.ndarray, width: int, height: int) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(frame)).resize((width, height), Image.Resampling.BILINEAR)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=10)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()
