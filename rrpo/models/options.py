"""Command-line options every command that loads a model shares (generate, train, eval, deviation,
merge, inspect): where the model comes from, its dtype and attention, and how videos are sampled."""

from __future__ import annotations

import argparse
from typing import Any

# Video tokens for 16 frames of 1280x720 (16:9) video under each family's default sizing, measured with
# the real processors (tests/test_real_checkpoints.py checks the rule that gives them).
TOKENS_16_FRAMES_16_9 = (
    "qwen2-vl / qwen2.5-vl 5760 (560x1008 per frame), qwen3-vl 5760 (640x1152), "
    "llava-onevision 3137 (384x384), llava-next-video 2304 (336x336 centre crop), internvl 4096 (448x448), "
    "videollama3 at most 16128 (672x1176; fewer where frames barely change)"
)


# "shared-prefix(-flex)": the model loads with sdpa (its vision tower and generation keep it) and the packed
# pair pass runs the segment attention of rrpo.models.packing.attention (no L x L mask). flash-attention-2
# is not offered: it takes only a 2D padding mask, which cannot say "rejected tokens do not see chosen ones".
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "shared-prefix", "shared-prefix-flex")
ATTN_HELP = (
    "attention of the packed pair pass (default sdpa: the dense 4D mask through the model's own sdpa, the "
    "reference path; eager: the same through eager attention; shared-prefix: prefix+chosen causal and "
    "rejected over the prefix's keys and its own, on fused SDPA kernels, never an L x L mask: less memory "
    "on long rows; shared-prefix-flex: the same through FlexAttention with a BlockMask, one compiled kernel "
    "for all rows on a GPU, forward-only on CPU). flash-attention-2 is not offered: it cannot take the dense "
    "mask"
)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse reports anything else in one line, naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_model_options(p: argparse.ArgumentParser, *, video: bool = True, none_defaults: bool = False) -> None:
    """Add --revision, --dtype, --attn-implementation and (with `video`) --fps, --max-frames, --max-pixels.

    `none_defaults` leaves every default None (for commands whose config file supplies defaults)."""

    def d(value: Any) -> Any:
        return None if none_defaults else value

    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model (Hub ids only)")
    from rrpo.models.registry import family_options

    for name, (_, text) in family_options().items():  # each family's own loading options (LongVU's towers...)
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=text)
    p.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp16", "fp32"),
        default=d("auto"),
        help="weights' dtype (default auto: bf16 on a GPU that supports it, fp32 on CPU)",
    )
    p.add_argument(
        "--attn-implementation",
        dest="attn_implementation",
        choices=ATTN_IMPLEMENTATIONS,
        default=d("sdpa"),
        help="attention of the packed pair pass (default sdpa; shared-prefix: no L x L mask, see rrpo train "
        "--help)",
    )
    if video:
        p.add_argument(
            "--fps",
            type=positive_float,
            default=None,
            help="sample frames at this rate (frames per second, up to --max-frames) instead of --frames "
            "uniform frames; Qwen's own pipeline uses 2",
        )
        p.add_argument(
            "--max-frames",
            dest="max_frames",
            type=positive_int,
            default=d(768),
            help="cap for --fps (default 768)",
        )
        p.add_argument(
            "--max-pixels",
            dest="max_pixels",
            type=positive_int,
            default=None,
            help="pixel cap per frame for the Qwen families (native aspect ratio kept; default: the "
            "checkpoint's reference sizing). Video tokens for 16 frames of 16:9 video by default: "
            + TOKENS_16_FRAMES_16_9,
        )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """`load_model` keyword arguments from the options `add_model_options` added; the family-only ones
    travel together as `family_options` (every command hands them to `load_model` the same way)."""
    from rrpo.models.registry import family_options

    out: dict[str, Any] = {}
    for name in ("revision", "dtype", "attn_implementation", "fps", "max_frames", "max_pixels"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    family = {name: getattr(args, name) for name in family_options() if getattr(args, name, None) is not None}
    if family:
        out["family_options"] = family
    return out


def model_fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    """The part of a run fingerprint (`rrpo.data.runs`) every model-loading command shares: rrpo's
    version, the model and adapter (Hub id + revision, or a hash of the local directory) and the
    loading options."""
    from rrpo import __version__
    from rrpo.data.runs import model_identity

    options = model_options(args)
    return {
        "rrpo": __version__,
        "model": model_identity(args.model, options.get("revision")),
        "adapter": model_identity(getattr(args, "adapter", None)),
        "load_options": options,
    }
