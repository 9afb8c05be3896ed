"""What the distributed engines see through `PairForward` (the module the Trainer wraps): the real model's
config (DeepSpeed's "auto" bucket sizes) and its layer classes (FSDP's per-layer wrapping)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def pair_forward_module(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from rrpo.models import build_tiny_model, load_model
    from rrpo.train.trainer import PairForward

    d = build_tiny_model("qwen2.5-vl", tmp_path_factory.mktemp("engines") / "m", num_frames=4)
    vlm = load_model(d)
    peft_model = get_peft_model(vlm.model, LoraConfig(r=2, target_modules=vlm.lora_target_modules))
    vlm.model = peft_model
    return PairForward(peft_model, vlm, 1024), vlm


def test_fsdp_transformer_auto_wrap_shards_every_layer(pair_forward_module):
    """accelerate's TRANSFORMER_BASED_WRAP (configs/accelerate_fsdp.yaml names no class) reads the
    module's `_no_split_modules`: every decoder layer and vision block is its own FSDP unit."""
    from types import SimpleNamespace

    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    module, vlm = pair_forward_module
    plugin = SimpleNamespace(
        auto_wrap_policy=transformer_auto_wrap_policy, transformer_cls_names_to_wrap=None
    )
    policy = fsdp2_prepare_auto_wrap_policy(plugin, module)
    wrapped = [type(m).__name__ for m in module.modules() if policy(m)]
    text = vlm.hf_model.config.text_config
    vision = vlm.hf_model.config.vision_config
    assert wrapped.count("Qwen2_5_VLDecoderLayer") == text.num_hidden_layers
    assert wrapped.count("Qwen2_5_VLVisionBlock") == vision.depth
    assert set(wrapped) == {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"}


def test_the_wrapped_config_gives_deepspeed_its_hidden_size(pair_forward_module):
    module, vlm = pair_forward_module
    assert module.config is vlm.hf_model.config
    assert module.config.text_config.hidden_size == 64  # where transformers' DeepSpeed integration looks


@pytest.mark.parametrize("name", ["deepspeed_zero2.json", "deepspeed_zero3.json"])
def test_shipped_deepspeed_configs_fill_their_auto_sizes(name, pair_forward_module):
    """transformers' own finalisation of the shipped configs against the module the Trainer wraps (it
    failed with "neither hidden_size nor hidden_sizes" when PairForward had no config)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    module, _ = pair_forward_module
    ds = HfTrainerDeepSpeedConfig(json.loads((CONFIGS / name).read_text()))
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=1, report_to=[])
    ds.trainer_config_process(args)
    ds.trainer_config_finalize(args, module, num_training_steps=10)
    assert ds.get_value("zero_optimization.reduce_bucket_size") == 64 * 64


@pytest.mark.parametrize(
    ("version", "ok"), [("5.17.0", False), ("5.18.0", True), ("5.24.0.dev0", True), ("4.57.1", False)]
)
def test_an_older_transformers_is_refused_in_one_line(version, ok):
    from rrpo.errors import RRPOError
    from rrpo.models.loading import check_transformers

    if ok:
        check_transformers(version)
    else:
        with pytest.raises(RRPOError, match=f"transformers {version} is too old for rrpo: 5.18 is the first"):
            check_transformers(version)


def _lora_grads_of_one_step(module, vlm, batch, *, checkpointing: bool):
    import torch

    peft_model = module.module
    for p in peft_model.parameters():
        p.grad = None
    if checkpointing:
        module.gradient_checkpointing_enable()
    else:
        peft_model.get_base_model().gradient_checkpointing_disable()
    peft_model.train()
    torch.manual_seed(0)  # LoRA dropout draws the same masks in both runs (and in the recomputation)
    out = module(**batch)
    loss = out["policy_chosen_logps"].sum() - out["policy_rejected_logps"].sum() + out["chosen_kl"].sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("attention", ["mask", "shared-prefix"])
def test_gradient_checkpointing_through_the_packed_pass_gives_the_same_gradients(
    pair_forward_module, attention
):
    """Checkpointing the language model's layers under the packed pass, LoRA (with dropout) and the
    adapter-off reference pass: every LoRA gradient equals the one without checkpointing, with the dense
    mask and with the shared-prefix attention (whose layers are recomputed during the backward pass)."""
    import numpy as np
    import torch

    from rrpo.models import collate_pairs, encode_pair
    from rrpo.video.clip import Clip

    module, vlm = pair_forward_module
    vlm.packed_attention = attention
    for name, p in module.module.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # non-zero B: gradients reach lora_A too
    clip = Clip.uniform(np.random.default_rng(0).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8), 2.0)
    pairs = [encode_pair(vlm, clip, "What?", "A red car.", "A blue bus.", [(2, 5)], [(2, 6)])]
    batch = collate_pairs(vlm, pairs, layout="packed")
    plain = _lora_grads_of_one_step(module, vlm, batch, checkpointing=False)
    checkpointed = _lora_grads_of_one_step(module, vlm, batch, checkpointing=True)
    assert vlm.hf_model.is_gradient_checkpointing
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5), name
    assert any(float(g.abs().sum()) > 0 for g in plain.values())
