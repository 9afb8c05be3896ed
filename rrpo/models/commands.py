"""`rrpo tiny-model`: write a tiny random-weight video LLM of a real family for tests and the toy world."""

from __future__ import annotations

import argparse

FAMILY_NAMES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "llava-next-video")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tiny-model",
        help="build a tiny random-weight model of a video-LLM family (offline)",
        description="Build a tiny random-weight model of the real transformers class of FAMILY, with a "
        "locally trained byte-level BPE tokenizer, a chat template and the family's processor, saved so "
        "that from_pretrained(OUT) works offline.",
    )
    p.add_argument("--family", required=True, choices=FAMILY_NAMES)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-size", type=int, default=64, help="text model hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="text model layers (default 2)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default 2)")
    p.add_argument("--image-size", type=int, default=None, help="square frame side the processor keeps")
    p.add_argument("--frames", type=int, default=16, help="frames per video recorded for load_model")
    p.set_defaults(func=run_tiny_model)


def run_tiny_model(args: argparse.Namespace) -> int:
    from rrpo.models.tiny import build_tiny_model

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
