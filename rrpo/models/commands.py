"""`rrpo tiny-model`: write a tiny random-weight video LLM of a real family for tests and the toy world."""

from __future__ import annotations

import argparse

from rrpo.models.registry import FAMILY_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tiny-model",
        help="build a tiny random-weight model of a video-LLM family (offline)",
        description="Build a tiny random-weight model of the real transformers class of FAMILY, with a "
        "locally trained byte-level BPE tokenizer, a chat template and the family's processor, saved so "
        "that from_pretrained(OUT) works offline.",
    )
    p.add_argument("--family", choices=FAMILY_NAMES, help="the family to build (or --from-config)")
    p.add_argument(
        "--from-config",
        dest="from_config",
        default=None,
        help="shrink a real checkpoint's non-weight files (config, processor, chat template, tokenizer, "
        "generation config) in DIR to a random-weight model of its real class: vocabulary, token ids, "
        "patch / merge sizes and processor settings kept, layers and widths shrunk (a smoke-test model of "
        "your own checkpoint)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-size", type=int, default=64, help="text model hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="text model layers (default 2)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default 2)")
    p.add_argument("--image-size", type=int, default=None, help="square frame side the processor keeps")
    p.add_argument("--frames", type=int, default=16, help="frames per video recorded for load_model")
    p.set_defaults(func=run_tiny_model)

    from rrpo.models.options import add_model_options

    i = subparsers.add_parser(
        "inspect",
        help="show exactly what a checkpoint is fed for one video and question",
        description="Print the exact prompt (video placeholder summarised), the number of video tokens, the "
        "sampled frames' real timestamps, the per-frame size the processor chose, the end-of-turn and stop "
        "tokens, and write a contact sheet of the sampled frames.",
    )
    i.add_argument("--model", required=True, help="model directory or Hub id")
    i.add_argument("--adapter", default=None, help="optional LoRA adapter")
    i.add_argument("--video", required=True, help="video file")
    i.add_argument("--question", required=True)
    i.add_argument("--frames", type=int, default=16, help="uniform frames (default 16; see --fps)")
    i.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    i.add_argument("--sheet", default=None, help="contact sheet PNG (default: inspect_<video name>.png)")
    i.add_argument("--json", action="store_true", help="print JSON instead of the readable summary")
    add_model_options(i)
    i.set_defaults(func=run_inspect)


def run_tiny_model(args: argparse.Namespace) -> int:
    from rrpo.errors import RRPOError
    from rrpo.models.tiny import build_tiny_model, shrink_checkpoint

    if args.from_config:
        out = shrink_checkpoint(args.from_config, args.out, family=args.family, seed=args.seed)
        print(f"wrote a shrunk random-weight copy of {args.from_config} to {out}")
        return 0
    if not args.family:
        raise RRPOError("rrpo tiny-model: give --family or --from-config")

    out = build_tiny_model(
        args.family,
        args.out,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        image_size=args.image_size,
        num_frames=args.frames,
    )
    print(f"wrote a tiny {args.family} model to {out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rrpo.models import load_model
    from rrpo.models.inspect import inspect_model
    from rrpo.models.options import model_options

    vlm = load_model(
        args.model,
        device="auto",
        adapter_dir=args.adapter,
        num_frames=args.frames,
        frame_size=tuple(args.frame_size) if args.frame_size else None,
        **model_options(args),
    )
    import sys

    from rrpo.models.loading import describe_placement

    print(describe_placement(vlm), file=sys.stderr)
    sheet = args.sheet or f"inspect_{Path(args.video).stem}.png"
    info = inspect_model(vlm, args.video, args.question, sheet=sheet)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"family {info['family']}  model {info['model']}")
    print("--- prompt ---")
    print(info["prompt"])
    print("--------------")
    before = info.get("video_tokens_before_compression")
    kept = f" ({before} before token compression)" if before is not None else ""
    print(f"prompt tokens {info['prompt_tokens']}, video tokens {info['video_tokens']}{kept}")
    src = info["source"]
    print(f"source {src['size_hw'][1]}x{src['size_hw'][0]} at {src['fps']} fps, {src['duration_s']} s")
    print(f"frames {info['frames']} (sampled {info['sampled_fps']} fps) at {info['timestamps_s']} s")
    print(f"frame size seen by the model (h, w) {info.get('frame_hw_seen_by_model')}", end="")
    print(f", grid (t, h, w) {info['grid_thw']}" if "grid_thw" in info else "")
    if "second_per_grid_ts" in info:
        print(f"second_per_grid_ts {info['second_per_grid_ts']}")
    print(
        f"end of turn {info['turn_end']!r}; stops at {info['stop_tokens']} {info['stop_token_ids']}; "
        f"pad {info['pad_token_id']}"
    )
    print(f"contact sheet {info['contact_sheet']}")
    return 0
