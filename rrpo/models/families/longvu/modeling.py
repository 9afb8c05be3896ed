"""LongVU (Shen et al., arXiv 2410.17434; Vision-CAIR/LongVU_Qwen2_7B), the RRPO paper's headline model,
written on transformers components: `Qwen2Model` + `lm_head` for the language model, `SiglipVisionModel`
and `Dinov2Model` for the two towers, and here only what transformers lacks — the spatial-vision
aggregator (`VisionTokenSampler`), the frame selection and the token budget rules. No remote code.

Parameter names are the released checkpoint's (`model.layers.*`, `model.mm_projector.*`,
`model.mm_projector_aux_{0,1}.*`, `model.vision_sampler_0.*`, `model.vision_query`, `model.image_newline`,
`lm_head.weight`), so `model.safetensors` loads by name; the towers, which are not in it, sit under
`vision_towers.siglip` / `vision_towers.dino` with their own repositories' key names.

The path of one video (each step checked against the official code's outputs on a tiny random model,
tests/test_longvu.py):
1. DINOv2 on every frame (378 px): patch tokens `last_hidden_state[:, 1:]`, 27x27 -> 24x24 bilinear.
2. Frame selection, only when the frames do not fit the context at 64 tokens each: in windows of 16
   frames, drop frames whose mean DINO cosine similarity to the window is >= `dino_threshold` (the
   middle frame always stays).
3. SigLIP on the kept frames (384 px): `hidden_states[-1]` (no post-layernorm), 27x27 -> 24x24.
4. Per tower Linear-GELU-Linear-LayerNorm (`mm_projector_aux_i`); the SigLIP output's mean is the
   global context.
5. The sampler: 144 queries per frame (`vision_query`), each attending to its 2x2 cell of both 24x24
   grids through `connector_depth` cross-attention layers; `mm_projector` to the LM width.
6. `unpad_image` and one `image_newline` per row: 12 x (w + 1) tokens. The official code reads the
   (height, width) it is given as (width, height), so a 240x320 frame loses 2 *columns* (132 tokens),
   not rows; reproduced on purpose (`unpad_grid`).
7. When the frames do not fit at 144 tokens: an 8x8 copy of every frame, with the frames most similar
   to the text (cross-modal query) restored to 144; when even that does not fit, spatial token
   reduction in chunks of 8 frames (`drop_threshold`) and a forced cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Model
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from rrpo.models.families.longvu.configuration import LongVUConfig
from rrpo.models.families.longvu.vision import (
    VisionTowers,
    grid_cells,
    padding_mask,
    select_frames,
    unpad_grid,
)

IMAGE_TOKEN_INDEX = -200  # the official `<image>` placeholder id, replaced by the visual tokens
IGNORE_INDEX = -100
SAMPLER_HEADS = 16  # hard-coded in the official VisionCrossAttentionLayer


class _MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=False)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def _norm_linear(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out, bias=False))


class _MultiTowerCrossAttention(nn.Module):
    """Queries attend to the concatenated keys/values of every tower (one projection per tower)."""

    def __init__(self, dim: int, num_towers: int, num_heads: int = SAMPLER_HEADS):
        super().__init__()
        self.num_heads, self.num_towers = num_heads, num_towers
        self.q_proj = _norm_linear(dim, dim)
        for i in range(num_towers):
            setattr(self, f"k_proj_{i}", _norm_linear(dim, dim))
            setattr(self, f"v_proj_{i}", _norm_linear(dim, dim))
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, queries: torch.Tensor, latents: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """queries [N, q, D]; latents: per tower [N, k_i, D]; mask [N, 1, q, sum k_i] bool (True: attend)."""
        n, q_len, dim = queries.shape
        heads = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, -1, heads, dim // heads).transpose(1, 2)

        q = split(self.q_proj(queries))
        k = split(torch.cat([getattr(self, f"k_proj_{i}")(x) for i, x in enumerate(latents)], dim=1))
        v = split(torch.cat([getattr(self, f"v_proj_{i}")(x) for i, x in enumerate(latents)], dim=1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(n, q_len, dim))


class _SamplerLayer(nn.Module):
    def __init__(self, dim: int, cell_sides: list[int]):
        super().__init__()
        self.proj_context = nn.Linear(dim, dim, bias=False)
        self.proj_in = nn.Linear(2 * dim, dim, bias=False)
        self.proj_out = _MLP(dim, dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.cross_attn = _MultiTowerCrossAttention(dim, len(cell_sides))
        for i, side in enumerate(cell_sides):
            if side > 1:  # a learned position for each token of a query's cell
                setattr(self, f"pos_embed_{i}", nn.Parameter(torch.zeros(side * side, dim)))

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        latents: list[torch.Tensor],
        masks: list[torch.Tensor],
    ) -> torch.Tensor:
        residual = queries
        x = self.proj_in(torch.cat([queries, self.proj_context(context)], -1))
        mask = torch.cat([m.view(m.shape[0], 1, 1, -1).expand(-1, -1, x.shape[1], -1) for m in masks], dim=-1)
        placed = [
            lat + getattr(self, f"pos_embed_{i}")[None].to(lat.dtype) if lat.shape[1] > 1 else lat
            for i, lat in enumerate(latents)
        ]
        x = x + self.cross_attn(x, placed, mask)
        return self.proj_out(self.norm(x)) + residual


class VisionTokenSampler(nn.Module):
    """`connector_depth` layers of cross-attention from the queries to the towers' cells."""

    def __init__(self, dim: int, cell_sides: list[int], depth: int):
        super().__init__()
        self.layers = nn.ModuleList([_SamplerLayer(dim, cell_sides) for _ in range(depth)])

    def forward(self, queries, context, latents, masks):  # noqa: ANN001, ANN201 - see _SamplerLayer
        for layer in self.layers:
            queries = layer(queries, context, latents, masks)
        return queries


def _projector(d_in: int, d_out: int, *, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out)]
    return nn.Sequential(*layers, nn.LayerNorm(d_out)) if norm else nn.Sequential(*layers)


class LongVUModel(Qwen2Model):
    """Qwen2Model plus the connector modules under the checkpoint's names."""

    def __init__(self, config: LongVUConfig):
        super().__init__(config)
        dim = config.vision_hidden_size
        tower_widths = [config.siglip_config["hidden_size"], config.dino_config["hidden_size"]]
        self.mm_projector = _projector(dim, config.hidden_size, norm=False)
        for i, width in enumerate(tower_widths):
            setattr(self, f"mm_projector_aux_{i}", _projector(width, dim, norm=True))
        queries = config.query_num_list[0]
        sides = [int(n**0.5) // int(queries**0.5) for n in config.mm_vision_tower_aux_token_len_list]
        self.vision_sampler_0 = VisionTokenSampler(dim, sides, config.connector_depth)
        self.vision_query = nn.Parameter(torch.zeros(1, dim))
        self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))


@dataclass
class VideoTokens:
    """One video's visual tokens [N, hidden] and what the official code computes on the way."""

    embeds: torch.Tensor
    frames_per_video: int
    kept_frames: torch.Tensor
    mix_res: bool
    high_res: bool
    highres_embeds: torch.Tensor | None = None  # 144-token version of every frame, when mixed
    stages: dict[str, torch.Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# The model
class LongVUForCausalLM(Qwen2PreTrainedModel, GenerationMixin):
    """LongVU on transformers components (module doc). `forward` takes either the official call
    (`input_ids` with `IMAGE_TOKEN_INDEX` where the video goes, `images=[siglip_pixels, dino_pixels]`
    of shape [B, T, 3, S, S], `image_sizes`) or plain `inputs_embeds` / `input_ids`."""

    config_class = LongVUConfig
    _no_split_modules = ["Qwen2DecoderLayer"]
    _tied_weights_keys: dict = {}

    def __init__(self, config: LongVUConfig):
        super().__init__(config)
        self.model = LongVUModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vision_towers = VisionTowers(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    # -- the visual tokens of one video ----------------------------------------------------------------
    def encode_video(
        self, siglip_pixels: torch.Tensor, dino_pixels: torch.Tensor, size: tuple[int, int], text_len: int
    ) -> VideoTokens:
        """Frames [T, 3, 384, 384] (SigLIP) and [T, 3, 378, 378] (DINO) of one video -> its visual tokens,
        given the number of prompt ids `text_len` (the official budget counts the placeholder too)."""
        cfg, model = self.config, self.model
        dtype = self.lm_head.weight.dtype
        towers = self.vision_towers
        stages: dict[str, torch.Tensor] = {}
        budget = cfg.tokenizer_model_max_length - text_len - cfg.inference_max_length
        dino = towers.encode(dino_pixels.to(dtype), "dino")
        stages["dino_features_all_frames"] = dino
        per_frame = cfg.lowres_token**2 if cfg.highres else cfg.image_token_len
        keep = torch.arange(len(dino), device=dino.device)
        if len(dino) >= max(1, budget // per_frame):
            keep = select_frames(dino, cfg.dino_threshold).to(dino.device)
        dino, siglip_pixels = dino[keep], siglip_pixels[keep]
        stages["dino_features_kept_frames"] = dino
        siglip = towers.encode(siglip_pixels.to(dtype), "siglip")
        stages["siglip_features_kept_frames"] = siglip
        aux = [model.mm_projector_aux_0(siglip).to(dtype), model.mm_projector_aux_1(dino).to(dtype)]
        stages["mm_projector_aux_0_out"], stages["mm_projector_aux_1_out"] = aux
        t, queries = len(keep), cfg.query_num_list[0]
        side = int(queries**0.5)
        context = aux[0].mean(1).view(t, 1, 1, -1).expand(-1, queries, 1, -1).flatten(0, 1)
        query = model.vision_query[0].view(1, 1, 1, -1).expand(t, queries, -1, -1).flatten(0, 1)
        cells, masks = [], []
        for feats in aux:
            mask = padding_mask(int(feats.shape[1] ** 0.5), size, feats.device)
            c, m = grid_cells(feats, mask, side)
            cells.append(c)
            masks.append(m)
        sampled = model.vision_sampler_0(query, context, cells, masks)
        stages["vision_sampler_0_out"] = sampled
        sampled = sampled.view(t, queries, -1)
        max_frames = max(1, budget // cfg.image_token_len)
        max_frames_low = max(1, budget // cfg.lowres_token**2)
        mix_res, high_res = True, True
        if t < max_frames:
            mix_res = False
        elif t > max_frames_low:
            mix_res = high_res = False
        mix = cfg.highres and mix_res
        high = model.mm_projector(sampled).to(dtype)
        stages["mm_projector_out_highres"] = high
        high_tokens = self._frames_with_newlines(high.view(t, side, side, -1), size)
        if not mix:
            return VideoTokens(
                torch.cat(high_tokens), len(dino_pixels), keep, mix_res, high_res, None, stages
            )
        low_side = cfg.lowres_token
        down = sampled.permute(0, 2, 1).reshape(t, -1, side, side)
        down = F.interpolate(down.float(), size=(low_side, low_side), mode="bilinear", align_corners=False)
        down = model.mm_projector(down.to(sampled.dtype).permute(0, 2, 3, 1).flatten(1, 2)).to(dtype)
        scale = side / low_side
        low_size = (int(size[0] / scale), int(size[1] / scale))
        low_tokens = self._frames_with_newlines(down.view(t, low_side, low_side, -1), low_size)
        return VideoTokens(
            torch.cat(low_tokens), len(dino_pixels), keep, mix_res, high_res, torch.cat(high_tokens), stages
        )

    def _frames_with_newlines(self, grids: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """Per frame: unpad the [h, w, H] grid, add `image_newline` after each row, flatten."""
        out = []
        for grid in grids:
            g = unpad_grid(grid.unsqueeze(0), size)
            h = g.shape[1]
            newline = self.model.image_newline.view(1, 1, 1, -1).expand(1, h, 1, -1).to(g.dtype)
            out.append(torch.cat([g, newline], dim=2).flatten(0, 2))
        return out

    # -- splicing the video into the prompt ------------------------------------------------------------
    def _fit_to_budget(self, video: VideoTokens, text_after: torch.Tensor, text_len: int) -> torch.Tensor:
        """The official inference rules once the text is embedded: the cross-modal query (frames most
        similar to the text after the video get their 144-token version back) or spatial token
        reduction, both only when the budget calls for it. `text_len`: text tokens (no placeholder)."""
        cfg = self.config
        visual = video.embeds
        budget = cfg.tokenizer_model_max_length - cfg.inference_max_length - text_len
        frames = len(video.kept_frames)
        mixed = False
        if (
            video.highres_embeds is not None
            and cfg.image_token_len > cfg.lowres_token**2
            and budget > len(visual)
        ):
            extra = video.highres_embeds.shape[0] // frames - visual.shape[0] // frames
            count = math.floor((budget - len(visual)) / extra)
            if count >= 1:
                mixed = True
                per_frame_sim = torch.matmul(visual, text_after.T).mean(-1).reshape(frames, -1).mean(-1)
                top = torch.topk(per_frame_sim, min(count, frames)).indices
                chosen = set(top.tolist())
                low = visual.reshape(frames, -1, visual.shape[-1])
                high = video.highres_embeds.reshape(frames, -1, visual.shape[-1])
                visual = torch.cat([high[i] if i in chosen else low[i] for i in range(frames)])
        if budget < len(visual) and not mixed:
            per_frame = visual.reshape(frames, -1, visual.shape[-1])
            chunks = []
            for start in range(0, frames, 8):
                chunk = per_frame[start : start + 8]
                if len(chunk) == 1:
                    chunks.append(chunk[0])
                    continue
                sim = F.cosine_similarity(
                    chunk[0].unsqueeze(0).expand(len(chunk) - 1, -1, -1), chunk[1:], dim=-1
                )
                chunks.append(
                    torch.cat([chunk[0], chunk[1:].flatten(0, 1)[sim.flatten() < cfg.drop_threshold]])
                )
            total = sum(len(c) for c in chunks)
            if total > budget:
                cut = math.ceil((total - budget) / len(chunks))
                chunks = [c[:-cut] for c in chunks]
            visual = torch.cat(chunks)[:budget]
        return visual

    def splice(
        self,
        input_ids: torch.Tensor,
        images: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[VideoTokens]]:
        """The official `prepare_inputs_labels_for_multimodal` for right-padded rows without padding:
        `input_ids` [B, n] with one `IMAGE_TOKEN_INDEX` each -> inputs_embeds [B, S, H] (right-padded
        with zeros), labels with the visual positions ignored, and each row's `VideoTokens`."""
        embeds, new_labels, videos = [], [], []
        for b, ids in enumerate(input_ids):
            at = int(torch.where(ids == IMAGE_TOKEN_INDEX)[0][0])
            before, after = ids[:at], ids[at + 1 :]
            video = self.encode_video(images[0][b], images[1][b], tuple(image_sizes[b]), len(ids))
            text = self.model.embed_tokens(torch.cat([before, after]))
            text_before, text_after = text[: len(before)], text[len(before) :]
            visual = self._fit_to_budget(video, text_after, len(before) + len(after))
            row = torch.cat([text_before, visual.to(text.dtype), text_after])
            embeds.append(row[: self.config.tokenizer_model_max_length])
            if labels is not None:
                lab = labels[b]
                ignored = lab.new_full((len(visual),), IGNORE_INDEX)
                new_labels.append(
                    torch.cat([lab[:at], ignored, lab[at + 1 :]])[: self.config.tokenizer_model_max_length]
                )
            videos.append(video)
        width = max(len(e) for e in embeds)
        padded = torch.stack([F.pad(e, (0, 0, 0, width - len(e))) for e in embeds])
        lab_out = None
        if labels is not None:
            lab_out = torch.stack([F.pad(x, (0, width - len(x)), value=IGNORE_INDEX) for x in new_labels])
        return padded, lab_out, videos

    def embed_with_video(
        self,
        input_ids: torch.Tensor,
        pixel_values_siglip: torch.Tensor | None = None,
        pixel_values_dino: torch.Tensor | None = None,
        video_frames: torch.Tensor | None = None,
        video_sizes: torch.Tensor | None = None,
        video_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of rows whose video is already expanded to its placeholder ids (the adapter's
        prompts: `IMAGE_TOKEN_INDEX` once per visual token), the videos' frames concatenated along dim 0
        (`video_frames` [B] per row, `video_sizes` [B, 2]). The tokens are computed without the budget
        rules (the adapter checked that none applies) unless `video_tokens` are given; returns
        (inputs_embeds, video_tokens)."""
        if video_tokens is None:
            parts, start = [], 0
            for count, size in zip(video_frames.tolist(), video_sizes.tolist()):
                end = start + count
                video = self.encode_video(
                    pixel_values_siglip[start:end], pixel_values_dino[start:end], tuple(size), 0
                )
                parts.append(video.embeds)
                start = end
            video_tokens = torch.cat(parts)
        placeholder = input_ids == IMAGE_TOKEN_INDEX
        if int(placeholder.sum()) != video_tokens.shape[0]:
            raise RuntimeError(
                f"LongVU: {int(placeholder.sum())} video placeholders for {video_tokens.shape[0]} tokens"
            )
        embeds = self.model.embed_tokens(input_ids.clamp(min=0))
        embeds = embeds.masked_scatter(placeholder.unsqueeze(-1), video_tokens.to(embeds.dtype))
        return embeds, video_tokens

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        images: list[torch.Tensor] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        use_cache: bool | None = None,
        pixel_values_siglip: torch.Tensor | None = None,
        pixel_values_dino: torch.Tensor | None = None,
        video_frames: torch.Tensor | None = None,
        video_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if images is not None and input_ids is not None and input_ids.shape[1] > 1:
            inputs_embeds, labels, _ = self.splice(input_ids, images, image_sizes, labels)
            input_ids, attention_mask = None, None
        elif pixel_values_siglip is not None and input_ids is not None:  # the adapter's expanded prompts
            inputs_embeds, _ = self.embed_with_video(
                input_ids, pixel_values_siglip, pixel_values_dino, video_frames, video_sizes
            )
            input_ids = None
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        images: list[torch.Tensor] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Greedy (or any) generation from the official inputs: the video is spliced in once, then
        transformers' `generate` continues from the embeddings (returns the new tokens only)."""
        if images is None:
            return super().generate(input_ids=input_ids, **kwargs)
        embeds, _, _ = self.splice(input_ids, images, image_sizes)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return super().generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
