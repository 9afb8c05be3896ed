"""VideoChat2 (Li et al., arXiv 2311.17005; OpenGVLab/VideoChat2_stage3_Mistral_7B), the RRPO paper's third
base model, on transformers components: `MistralForCausalLM` for the language model, transformers'
InstructBLIP Q-Former (`InstructBlipQFormerModel`: BERT with cross-attention every second layer and a
separate feed-forward path for the query tokens — the LAVIS Q-Former VideoChat2 uses, same math), and
here only the UMT video ViT, which transformers lacks.

The path of one video (checked against the official code's outputs, tests/test_videochat2.py):
1. UMT-L/16 ViT at 224 px: Conv3d patches (1, 16, 16), a fixed sinusoid table made for 4 frames of
   14x14 and linearly interpolated in time to T (not a parameter), pre-LN blocks whose qkv has a q bias,
   a zero k bias and a v bias. The config says 24 blocks but the official `return_index=-2` builds 23;
   the encoder's own final norm is an identity, `vision_layernorm` (eps 1e-12) comes after.
2. The Q-Former: 32 query tokens + 64 extra ones attend to the instruction text (`[CLS] ... [SEP]`) and,
   through cross-attention, to the T x 196 ViT tokens; the 96 query outputs go through `mistral_proj`:
   96 visual tokens per video, whatever T.
Parameter names follow the merged official model (`vision_encoder.encoder.*`, `vision_layernorm.*`,
`qformer.bert.*` are renamed to transformers' Q-Former names on load, `query_tokens`,
`extra_query_tokens`, `mistral_proj.*`, `mistral_model.*`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VIT_GRID = 14  # 224 / 16
CKPT_FRAMES = 4  # the frame count the UMT position table was made for


def sinusoid_table(
    frames: int, dim: int, grid: int = VIT_GRID, ckpt_frames: int = CKPT_FRAMES
) -> torch.Tensor:
    """The official `get_sinusoid_encoding_table(196 * frames, dim, ckpt_num_frame=4, cur_frame=frames)`:
    a 1-D sinusoid table over 4 x 14 x 14 positions, linearly interpolated in time to `frames` (when they
    differ). Returns [1, frames * grid * grid, dim] float32."""

    def table(n: int) -> np.ndarray:
        positions = np.arange(n)[:, None]
        angles = positions / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
        angles[:, 0::2] = np.sin(angles[:, 0::2])
        angles[:, 1::2] = np.cos(angles[:, 1::2])
        return angles

    per_frame = grid * grid
    if frames == ckpt_frames:
        return torch.tensor(table(per_frame * frames), dtype=torch.float).unsqueeze(0)
    base = torch.tensor(table(per_frame * ckpt_frames), dtype=torch.float).unsqueeze(0)
    base = base.reshape(-1, ckpt_frames, grid, grid, dim).permute(0, 2, 3, 4, 1).reshape(-1, dim, ckpt_frames)
    base = F.interpolate(base, size=frames, mode="linear")
    return base.reshape(1, grid, grid, dim, frames).permute(0, 4, 1, 2, 3).flatten(1, 3)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def videochat2_pixels(frames: np.ndarray, resolution: int = 224) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> [T, 3, 224, 224] as the official `load_video` transform makes them:
    each frame's shorter side to 224 (PIL bicubic through torchvision), centre crop, /255, CLIP mean/std."""
    from PIL import Image
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    resize, crop = Resize(resolution, interpolation=InterpolationMode.BICUBIC), CenterCrop(resolution)
    images = [np.asarray(crop(resize(Image.fromarray(np.ascontiguousarray(f))))) for f in frames]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 16):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class UMTEncoder(nn.Module):
    """The UMT ViT's encoder (`vision_encoder.encoder.*` in the checkpoint)."""

    def __init__(self, dim: int, depth: int, heads: int, return_index: int = -2, patch: int = 16):
        super().__init__()
        self.patch_embed = _PatchEmbed(dim, patch)
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth + return_index + 1)])
        self.dim = dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, 224, 224] -> tokens [B, T * 196, dim]."""
        x = self.patch_embed(video)
        x = x + sinusoid_table(video.shape[2], self.dim).to(x.device, x.dtype)
        for block in self.blocks:
            x = block(x)
        return x


class UMTVisionEncoder(nn.Module):
    """`vision_encoder`: the encoder plus the [B, T, 196, C] view of its tokens."""

    def __init__(self, dim: int, depth: int, heads: int, return_index: int = -2):
        super().__init__()
        self.encoder = UMTEncoder(dim, depth, heads, return_index)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        frames = video.shape[2]
        x = self.encoder(video)
        return x.view(x.shape[0], frames, x.shape[1] // frames, x.shape[2])


def qformer_key(key: str) -> str:
    """A LAVIS/VideoChat2 Q-Former key (`qformer.bert.*`) as transformers' InstructBLIP Q-Former names it."""
    key = key.removeprefix("qformer.bert.")
    key = key.replace("embeddings.LayerNorm.", "embeddings.layernorm.")
    key = key.replace(".attention.self.", ".attention.attention.").replace(
        ".crossattention.self.", ".crossattention.attention."
    )
    return "qformer." + key


class VideoChat2(nn.Module):
    """The merged stage-3 model (module doc). `encode_video` is the official `encode_img`; `language_model`
    (`mistral_model`) takes `inputs_embeds`."""

    def __init__(
        self,
        vit: dict,
        qformer_config,
        mistral_config,
        num_query_token: int = 32,
        extra_num_query_token: int = 64,
    ):  # noqa: ANN001
        super().__init__()
        from transformers import InstructBlipQFormerModel, MistralForCausalLM

        self.vision_encoder = UMTVisionEncoder(
            vit["encoder_embed_dim"],
            vit["encoder_depth"],
            vit["encoder_num_heads"],
            vit.get("return_index", -2),
        )
        self.vision_layernorm = nn.LayerNorm(vit["encoder_embed_dim"], eps=1e-12)
        self.qformer = InstructBlipQFormerModel(qformer_config)
        width = qformer_config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, width))
        self.extra_query_tokens = nn.Parameter(torch.zeros(1, extra_num_query_token, width))
        self.mistral_proj = nn.Linear(width, mistral_config.hidden_size)
        self.mistral_model = MistralForCausalLM(mistral_config)
        self.config = mistral_config  # what peft and generation read
        self.bos_token_id = int(mistral_config.bos_token_id if mistral_config.bos_token_id is not None else 1)

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per video: the query tokens (32 + 64), whatever the frame count."""
        return self.query_tokens.shape[1] + self.extra_query_tokens.shape[1]

    def encode_video(
        self,
        pixel_values: torch.Tensor,
        instruction_input_ids: torch.Tensor,
        instruction_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pixel values [B, T, 3, 224, 224] and the Q-Former's instruction ids [B, n] -> [B, 96, hidden]."""
        stages = self.stages = {}
        video = pixel_values.permute(0, 2, 1, 3, 4).to(self.mistral_proj.weight.dtype)  # [B, C, T, H, W]
        tokens = self.vision_encoder(video)
        stages["vit_out"] = tokens
        b, t, n, c = tokens.shape
        tokens = self.vision_layernorm(tokens.reshape(b, -1, c))
        stages["vision_layernorm_out"] = tokens
        queries = torch.cat([self.query_tokens, self.extra_query_tokens], dim=1).expand(b, -1, -1)
        if instruction_attention_mask is None:
            instruction_attention_mask = torch.ones_like(instruction_input_ids)
        mask = torch.cat(
            [
                torch.ones(queries.shape[:2], dtype=instruction_attention_mask.dtype, device=queries.device),
                instruction_attention_mask,
            ],
            dim=1,
        )
        out = self.qformer(
            input_ids=instruction_input_ids,
            attention_mask=mask,
            query_embeds=queries,
            encoder_hidden_states=tokens,
            encoder_attention_mask=torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device),
        )
        stages["qformer_last_hidden"] = out.last_hidden_state
        visual = self.mistral_proj(out.last_hidden_state[:, : queries.shape[1]])
        stages["image_emb"] = visual
        return visual

    def training_embeds(
        self, visual: torch.Tensor, before_ids: torch.Tensor, after_ids: torch.Tensor, bos_token_id: int
    ) -> torch.Tensor:
        """The official training forward's inputs_embeds for one sample: position 0 is a vector *filled
        with the BOS id* (`inputs_embeds[:, :1] = bos_token_id`, not the BOS embedding; reproduced), then
        the text before `</Video>` (no BOS), the 96 visual tokens, and `</Video>` + the rest. [1, L, H]."""
        embed = self.mistral_model.get_input_embeddings()
        bos = torch.full(
            (1, 1, visual.shape[-1]), float(bos_token_id), dtype=visual.dtype, device=visual.device
        )
        return torch.cat([bos, embed(before_ids), visual, embed(after_ids)], dim=1)

    def embed_packed(
        self,
        input_ids: torch.Tensor,
        pixel_values_videos: torch.Tensor | None = None,
        video_frames: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        video_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of rows laid out by the adapter: -201 at a training prompt's first position (the
        vector filled with the BOS id), -200 once per visual token; the videos' frames concatenated
        along dim 0 (`video_frames` [B]) and their Q-Former instruction ids [B, n]. The visual tokens
        are computed unless `video_tokens` are given; returns (inputs_embeds, video_tokens [B * 96, H])."""
        if video_tokens is None:
            parts, start = [], 0
            for row, count in enumerate(video_frames.tolist()):
                pixels = pixel_values_videos[start : start + count].unsqueeze(0)
                parts.append(
                    self.encode_video(
                        pixels, qformer_input_ids[row : row + 1], qformer_attention_mask[row : row + 1]
                    )[0]
                )
                start += count
            video_tokens = torch.cat(parts)
        embed = self.mistral_model.get_input_embeddings()
        embeds = embed(input_ids.clamp(min=0))
        bos = (input_ids == -201).unsqueeze(-1)
        embeds = torch.where(bos, torch.full_like(embeds, float(self.bos_token_id)), embeds)
        visual = (input_ids == -200).unsqueeze(-1)
        if int(visual.sum()) != video_tokens.shape[0]:
            raise RuntimeError(
                f"VideoChat2: {int(visual.sum())} video placeholders for {video_tokens.shape[0]} tokens"
            )
        return embeds.masked_scatter(visual, video_tokens.to(embeds.dtype)), video_tokens

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_frames: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        **kwargs,  # noqa: ANN003
    ):  # noqa: ANN201 - Mistral's CausalLMOutputWithPast
        """Mistral over the adapter's prompts (video placeholders spliced) or plain `inputs_embeds`."""
        if pixel_values_videos is not None:
            inputs_embeds, _ = self.embed_packed(
                input_ids, pixel_values_videos, video_frames, qformer_input_ids, qformer_attention_mask
            )
            input_ids = None
        return self.mistral_model(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )
