"""LongVU's two vision towers, their preprocessing and the token-grid geometry (unpadding, per-query
cells, frame selection), on transformers' `SiglipVisionModel` and `Dinov2Model` (the towers are not in
the LongVU checkpoint: `google/siglip-so400m-patch14-384` and `facebook/dinov2-giant`, read at 384 and
378 px).

Preprocessing follows the official `process_images`: each frame padded to a square with the processor's
mean colour, resized to the tower's resolution (PIL bicubic), then the tower's own image processor
(SigLIP: mean/std 0.5; DINOv2: ImageNet mean/std, shortest edge and centre crop at 378).
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel

SIGLIP_ID = "google/siglip-so400m-patch14-384"
DINO_ID = "facebook/dinov2-giant"
DINO_RESOLUTION = 378


class VisionTowers(nn.Module):
    """SigLIP and DINOv2, as LongVU reads them: tokens resampled to a 24x24 grid. `config` is a
    `rrpo.models.families.longvu.configuration.LongVUConfig` (its `siglip_config` / `dino_config` dicts)."""

    def __init__(self, config: Any):
        super().__init__()
        self.siglip = SiglipVisionModel(SiglipVisionConfig(**_tower_kwargs(config.siglip_config)))
        self.dino = Dinov2Model(Dinov2Config(**_tower_kwargs(config.dino_config)))
        # LongVU runs DINOv2 (trained at 518 px) at 378 px with the position-table interpolation of the
        # transformers it was trained with (4.42): a bicubic *scale factor* of (27 + 0.1) / 37. Current
        # transformers interpolates to a size instead, which samples other points (DINO features move
        # by ~0.1 on the golden model); the released weights expect the old rule.
        self.dino.embeddings.interpolate_pos_encoding = types.MethodType(
            _legacy_dino_pos_encoding, self.dino.embeddings
        )
        self.grid = int(config.mm_vision_tower_aux_token_len_list[0] ** 0.5)

    def _resample(self, tokens: torch.Tensor) -> torch.Tensor:
        n, count, dim = tokens.shape
        side = int(count**0.5)
        if side == self.grid:
            return tokens
        grid = tokens.view(n, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return grid.to(tokens.dtype).permute(0, 2, 3, 1).flatten(1, 2)

    def encode(self, pixels: torch.Tensor, tower: str, chunk: int = 64) -> torch.Tensor:
        """Frames [T, 3, S, S] -> [T, 576, width] (in chunks of 64 frames, as the official code)."""
        out = []
        for start in range(0, pixels.shape[0], chunk):
            x = pixels[start : start + chunk]
            if tower == "siglip":
                tokens = self.siglip(pixel_values=x, output_hidden_states=True).hidden_states[-1]
            else:
                tokens = self.dino(pixel_values=x).last_hidden_state[:, 1:]
            out.append(self._resample(tokens))
        return torch.cat(out, 0)


def _legacy_dino_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:  # noqa: ANN001
    """DINOv2's position table for a `height` x `width` input, as transformers 4.42 computed it."""
    num_patches = embeddings.shape[1] - 1
    num_positions = self.position_embeddings.shape[1] - 1
    if num_patches == num_positions and height == width:
        return self.position_embeddings
    class_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
    dim = embeddings.shape[-1]
    patch = self.config.patch_size
    rows, cols = height // patch + 0.1, width // patch + 0.1  # the 0.1 is 4.42's guard against rounding
    side = int(math.sqrt(num_positions))
    grid = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.to(torch.float32),
        scale_factor=(float(rows / side), float(cols / side)),
        mode="bicubic",
        align_corners=False,
    ).to(patch_pos.dtype)
    return torch.cat((class_pos, grid.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)


def _tower_kwargs(cfg: dict | None) -> dict:
    if not cfg:
        raise ValueError("LongVUConfig needs siglip_config and dino_config (the towers' config.json)")
    return {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype")}


def expand_to_square(image: Any, colour: tuple[int, ...]) -> Any:
    """A PIL image padded to a square with `colour`, the content centred (the official `expand2square`)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), colour)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def tower_pixels(frames: np.ndarray, processor: Any, resolution: int) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> pixel values [T, 3, resolution, resolution] (float32) for one tower:
    padded to square with the processor's mean colour, PIL-bicubic resized, then the processor."""
    from PIL import Image

    colour = tuple(int(x * 255) for x in processor.image_mean)
    images = [
        expand_to_square(Image.fromarray(np.ascontiguousarray(f)), colour).resize(
            (resolution, resolution), Image.BICUBIC
        )
        for f in frames
    ]
    return processor(images=images, return_tensors="pt")["pixel_values"].float()


def load_tower_processors(siglip_dir: str, dino_dir: str) -> tuple[Any, Any]:
    """The towers' image processors as LongVU configures them (DINOv2 at 378 px)."""
    from transformers import AutoImageProcessor

    siglip = AutoImageProcessor.from_pretrained(siglip_dir)
    dino = AutoImageProcessor.from_pretrained(
        dino_dir,
        crop_size={"height": DINO_RESOLUTION, "width": DINO_RESOLUTION},
        size={"shortest_edge": DINO_RESOLUTION},
    )
    return siglip, dino


def longvu_pixels(frames: np.ndarray, siglip_processor: Any, dino_processor: Any) -> list[torch.Tensor]:
    """The official `images=[siglip, dino]` for one video: [[1, T, 3, 384, 384], [1, T, 3, 378, 378]]."""
    siglip = tower_pixels(frames, siglip_processor, int(siglip_processor.size["height"]))
    dino = tower_pixels(frames, dino_processor, int(dino_processor.crop_size["height"]))
    return [siglip.unsqueeze(0), dino.unsqueeze(0)]


# ---------------------------------------------------------------------------------------------------
# Geometry helpers (the official code's rules, quirks included)
def unpad_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the padding of a [.., h, w, ..] grid (dims 1 and 2) of a frame padded to square. `size` is
    what the official code is given, (height, width), and read as (width, height): reproduced."""
    original_width, original_height = size
    cur_h, cur_w = grid.shape[1:3]
    if original_width / original_height > cur_w / cur_h:
        new_h = int(original_height * (cur_w / original_width))
        pad = (cur_h - new_h) // 2
        return grid[:, pad : cur_h - pad]
    new_w = int(original_width * (cur_h / original_height))
    pad = (cur_w - new_w) // 2
    return grid[:, :, pad : cur_w - pad]


def padding_mask(side: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """[side, side] bool: False on the rows/columns a square-padded frame's padding fills."""
    mask = torch.ones(1, side, side, dtype=torch.bool, device=device)
    original_width, original_height = size
    if original_width / original_height > 1.0:
        pad = (side - int(original_height * (side / original_width))) // 2
        if pad > 0:
            mask[:, :pad], mask[:, -pad:] = False, False
    else:
        pad = (side - int(original_width * (side / original_height))) // 2
        if pad > 0:
            mask[:, :, :pad], mask[:, :, -pad:] = False, False
    return mask[0]


def grid_cells(
    features: torch.Tensor, mask: torch.Tensor, query_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, S*S, D] tower tokens -> per-query cells [T*q*q, r*r, D] and their masks [T*q*q, r*r]."""
    t, count, dim = features.shape
    side = int(count**0.5)
    r = side // query_side
    cells = (
        features.view(t, query_side, r, query_side, r, dim).permute(0, 1, 3, 2, 4, 5).reshape(-1, r * r, dim)
    )
    m = mask.view(query_side, r, query_side, r).permute(0, 2, 1, 3).reshape(-1, r * r)
    m = m.unsqueeze(0).expand(t, -1, -1).reshape(-1, r * r).clone()
    m[m.sum(-1) == 0] = True  # a cell entirely in the padding still attends (to itself)
    return cells, m


def select_frames(features: torch.Tensor, threshold: float, window: int = 16) -> torch.Tensor:
    """Indices of the frames kept by DINO similarity: in windows of `window` frames (the whole clip when
    shorter), a frame goes when its mean cosine similarity to the window's frames is >= `threshold`; the
    window's middle frame always stays. At most 400 frames, evenly spaced, as the official code."""
    kept = []
    for start in range(0, len(features), window):
        segment = features[start : start + window].flatten(1, 2)
        segment = segment / torch.norm(segment, dim=1, keepdim=True)
        similarity = torch.mean(segment @ segment.T, dim=1)
        similarity[len(segment) // 2] = 0
        kept.append(torch.where(similarity < threshold)[0] + start)
    indices = torch.cat(kept)
    if len(indices) > 400:
        step = len(indices) / 400.0
        indices = indices[[int(step * i) for i in range(400)]]
    return indices
