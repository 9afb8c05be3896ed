"""Loading VideoChat2 stage 3 (`OpenGVLab/VideoChat2_stage3_Mistral_7B`) into the port.

The stage-3 file (`videochat2_mistral_7b_stage3.pth` as `{"model": state_dict}`, or the same tensors as
`.safetensors`) holds only what stage 3 trained: the UMT ViT, `vision_layernorm`, the Q-Former, the query
tokens, `mistral_proj` and a LoRA (r 16, alpha 32) on Mistral. The Mistral weights come from the base LLM
(`mistralai/Mistral-7B-Instruct-v0.2`, `--base-llm`). As the official loader does, Mistral is loaded in
fp16 and the LoRA merged exactly as the official run merged it (`merge_stage3_lora`: bit for bit), then
the model is cast to the requested dtype.

Widths, depths and vocabularies are read from the tensors' shapes; what shapes do not tell (attention
heads, layer-norm eps) comes from `settings`, defaulting to the released model's (UMT-L: 16 heads; the
Q-Former is BERT-base: 12 heads).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import rebuild_meta_buffers
from rrpo.models.families.videochat2.configuration import STAGE3_FILE
from rrpo.models.families.videochat2.modeling import VideoChat2, qformer_key

DEFAULT_SETTINGS = {
    "vit_heads": 16,
    "vit_depth": 24,  # as configured; return_index -2 builds one fewer
    "return_index": -2,
    "qformer_heads": 12,
    "qformer_layer_norm_eps": 1e-12,
    "qformer_hidden_act": "gelu",
    "lora_r": 16,
    "lora_alpha": 32,
}
_LORA_PREFIX = "mistral_model.base_model.model."


def read_stage3(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The stage-3 state dict from a directory or file (.safetensors preferred; .pth read weights-only)."""
    path = Path(path)
    if path.is_dir():
        for suffix in (".safetensors", ".pth"):
            if (path / f"{STAGE3_FILE}{suffix}").is_file():
                path = path / f"{STAGE3_FILE}{suffix}"
                break
        else:
            raise RRPOError(f"{path}: no {STAGE3_FILE}.safetensors or .pth")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    return loaded["model"] if isinstance(loaded, dict) and "model" in loaded else loaded


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def videochat2_from_state(
    state: dict[str, torch.Tensor], mistral_config: Any, settings: dict[str, Any] | None = None
) -> VideoChat2:
    """An empty port shaped like `state` (stage-3 keys), with `mistral_config` for the language model."""
    from transformers import InstructBlipQFormerConfig

    s = {**DEFAULT_SETTINGS, **(settings or {})}
    dim = state["vision_encoder.encoder.patch_embed.proj.weight"].shape[0]
    built = _count(state, r"vision_encoder\.encoder\.blocks\.(\d+)\.")
    vit = {"encoder_embed_dim": dim, "encoder_depth": built - s["return_index"] - 1, "encoder_num_heads": s["vit_heads"],
           "return_index": s["return_index"]}  # fmt: skip
    words = state["qformer.bert.embeddings.word_embeddings.weight"]
    qformer = InstructBlipQFormerConfig(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        num_hidden_layers=_count(state, r"qformer\.bert\.encoder\.layer\.(\d+)\."),
        num_attention_heads=s["qformer_heads"],
        intermediate_size=state["qformer.bert.encoder.layer.0.intermediate_query.dense.weight"].shape[0],
        hidden_act=s["qformer_hidden_act"],
        max_position_embeddings=state["qformer.bert.embeddings.position_embeddings.weight"].shape[0],
        layer_norm_eps=s["qformer_layer_norm_eps"],
        pad_token_id=0,
        cross_attention_frequency=2,
        encoder_hidden_size=dim,
    )
    return VideoChat2(
        vit, qformer, mistral_config, state["query_tokens"].shape[1], state["extra_query_tokens"].shape[1]
    )


def merge_stage3_lora(
    mistral: Any, state: dict[str, torch.Tensor], settings: dict[str, Any] | None = None
) -> Any:
    """`mistral` (fp16, as the official loader has it) with the stage-3 LoRA merged into its weights.

    Written out rather than left to peft: the official merge (peft 0.13 on CPU) computes
    fp16(fp32(W) + fp32(B @ A) * alpha / r); the peft installed here rounds the delta to fp16 before the
    add, which moves merged weights by up to 1.2e-4 (and the tiny model's log-probs by 1e-3)."""
    s = {**DEFAULT_SETTINGS, **(settings or {})}
    scale = s["lora_alpha"] / s["lora_r"]
    modules = dict(mistral.named_modules())
    found = sorted(
        {k.removeprefix(_LORA_PREFIX).rsplit(".lora_", 1)[0] for k in state if k.startswith(_LORA_PREFIX)}
    )
    if not found:
        raise RRPOError(
            "stage-3 checkpoint without the Mistral LoRA (no mistral_model.base_model.model.* keys)"
        )
    with torch.no_grad():
        for name in found:
            if name not in modules:
                raise RRPOError(f"stage-3 LoRA on {name!r}, which the base LLM does not have")
            a = state[f"{_LORA_PREFIX}{name}.lora_A.default.weight"].float()
            b = state[f"{_LORA_PREFIX}{name}.lora_B.default.weight"].float()
            weight = modules[name].weight
            weight.copy_((weight.float() + (b @ a) * scale).to(weight.dtype))
    return mistral


def load_videochat2(
    stage3: str | os.PathLike,
    base_llm: str | os.PathLike,
    *,
    settings: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> VideoChat2:
    """The merged stage-3 model: Mistral from `base_llm` in fp16 + the stage-3 LoRA merged by peft, the
    vision side and connector from the stage-3 file; then cast to `dtype` (strict key check)."""
    from transformers import MistralForCausalLM

    state = read_stage3(stage3)
    mistral = MistralForCausalLM.from_pretrained(
        base_llm, dtype=torch.float16, attn_implementation=attn_implementation
    )
    merged = merge_stage3_lora(mistral, state, settings)
    with torch.device("meta"):
        model = videochat2_from_state(state, merged.config, settings)
    ours = {
        qformer_key(k) if k.startswith("qformer.bert.") else k: v
        for k, v in state.items()
        if not k.startswith("mistral_model.")
    }
    ours.pop("qformer.embeddings.position_ids", None)
    ours.update({f"mistral_model.{k}": v for k, v in merged.state_dict().items()})
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(ours)), sorted(set(ours) - expected)
    if missing or unexpected:
        raise RRPOError(
            f"{stage3}: does not match the VideoChat2 port (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in ours.items()}, assign=True, strict=True)
    model.mistral_model.generation_config = merged.generation_config
    rebuild_meta_buffers(model)
    return model.eval()


def official_qformer_key(key: str) -> str:
    """The inverse of `qformer_key`: transformers' Q-Former name -> the checkpoint's `qformer.bert.*`."""
    key = key.removeprefix("qformer.")
    key = key.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
    key = key.replace(".attention.attention.", ".attention.self.").replace(
        ".crossattention.attention.", ".crossattention.self."
    )
    return "qformer.bert." + key


_BERT_BASE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "'", "-", "!", ":"]


def build_tiny_videochat2(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    num_frames: int = 4,
    image_size: int = 32,
) -> Path:
    """A tiny random-weight VideoChat2 laid out like the release plus what the Hub would supply: the
    stage-3 file (ViT, Q-Former, query tokens, mistral_proj and a Mistral LoRA under the official key
    names), the base LLM in `mistral/`, a BERT vocabulary in `bert/` (letters as word pieces, so any
    lower-case text tokenizes), and the heads in `videochat2_settings.json`."""
    import json

    from safetensors.torch import save_file
    from transformers import InstructBlipQFormerConfig, MistralConfig, MistralForCausalLM

    from rrpo.models.families.videochat2.configuration import (
        INSTRUCTION,
        SETTINGS_FILE,
        SYSTEM,
        load_qformer_tokenizer,
    )
    from rrpo.models.tiny_parts import NEXT_VIDEO_TEMPLATE, llama_tokenizer, write_family_meta

    out = Path(out_dir)
    (out / "mistral").mkdir(parents=True, exist_ok=True)
    (out / "bert").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = llama_tokenizer(NEXT_VIDEO_TEMPLATE, extra=())
    words = sorted({w.strip(".,?'\n").lower() for w in (INSTRUCTION + " " + SYSTEM).split()} - {""})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = _BERT_BASE + words + letters + [f"##{c}" for c in letters]
    (out / "bert" / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    bert = load_qformer_tokenizer(out / "bert")
    mistral_cfg = MistralConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, sliding_window=None,
    )  # fmt: skip
    mistral = MistralForCausalLM(mistral_cfg).eval()
    mistral.generation_config.pad_token_id = tok.pad_token_id
    mistral.save_pretrained(out / "mistral")
    tok.save_pretrained(out / "mistral")
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(bert), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, layer_norm_eps=1e-12, pad_token_id=0, cross_attention_frequency=2,
        encoder_hidden_size=32,
    )  # fmt: skip
    vit = {"encoder_embed_dim": 32, "encoder_depth": 3, "encoder_num_heads": 4, "return_index": -2}
    model = VideoChat2(vit, qformer, mistral_cfg)
    with torch.no_grad():
        model.query_tokens.normal_(0, 0.5)
        model.extra_query_tokens.normal_(0, 0.5)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("mistral_model."):
            continue
        state[official_qformer_key(key) if key.startswith("qformer.") else key] = value.contiguous()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, module in mistral.named_modules():
        if name.endswith(
            ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
        ):
            rank = DEFAULT_SETTINGS["lora_r"]
            prefix = f"{_LORA_PREFIX}{name}"
            state[f"{prefix}.lora_A.default.weight"] = (
                torch.randn(rank, module.in_features, generator=generator) * 0.02
            )
            state[f"{prefix}.lora_B.default.weight"] = (
                torch.randn(module.out_features, rank, generator=generator) * 0.02
            )
    save_file(state, str(out / f"{STAGE3_FILE}.safetensors"), metadata={"format": "pt"})
    (out / SETTINGS_FILE).write_text(json.dumps({"vit_heads": 4, "qformer_heads": 4}, indent=2) + "\n")
    write_family_meta(out, "videochat2", image_size, num_frames)
    return out
