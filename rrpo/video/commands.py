"""`rrpo perturb`: decode a video, perturb its frames, write a contact sheet and print what was done."""

from __future__ import annotations

import argparse

from rrpo.errors import RRPOError

# Kept in step with rrpo.video.perturb (not imported here so that `rrpo --help` does not load numpy).
_KINDS = ("mask", "global_shuffle", "local_shuffle", "mask+global_shuffle", "mask+local_shuffle")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `rrpo perturb` to the `rrpo` command."""
    p = subparsers.add_parser(
        "perturb",
        help="perturb a video's frames and write a contact sheet (original above perturbed)",
        description="Decode uniformly sampled frames of VIDEO, apply a perturbation (RRPO, arXiv 2504.12083) "
        "deterministically for (--seed, --key, --variant), write a PNG contact sheet and print the "
        "perturbation as JSON.",
    )
    p.add_argument("video", metavar="VIDEO", help="video file (anything PyAV/FFmpeg decodes)")
    p.add_argument(
        "--kind", choices=_KINDS, default="mask+local_shuffle", help="perturbation (default: %(default)s)"
    )
    p.add_argument("--frames", type=int, default=16, help="frames to sample (default: %(default)s)")
    p.add_argument("--out", required=True, help="where to write the contact sheet (PNG)")
    p.add_argument("--seed", type=int, default=0, help="global seed (default: %(default)s)")
    p.add_argument(
        "--key", default=None, help="record id the randomness is keyed on (default: the file name)"
    )
    p.add_argument("--variant", type=int, default=0, help="which of a record's perturbations (default: 0)")
    p.add_argument(
        "--mask-fraction",
        type=parse_mask_fraction,
        default=(0.25, 0.5),
        metavar="LO-HI|F",
        help="fraction of frames to black out: a range drawn from uniformly, or a fixed value (default: 0.25-0.5)",
    )
    p.add_argument("--window", type=int, default=4, help="local-shuffle window (default: %(default)s)")
    p.add_argument(
        "--size",
        type=parse_size,
        default=None,
        metavar="N|HxW",
        help="resize decoded frames to N x N or H x W before perturbing (default: keep the video's size)",
    )
    p.add_argument("--cell", type=int, default=96, help="thumbnail width in the sheet (default: %(default)s)")
    p.add_argument("--start", type=float, default=None, help="segment start in seconds")
    p.add_argument("--end", type=float, default=None, help="segment end in seconds")
    p.add_argument("--video-out", default=None, help="also write the perturbed frames as an mp4")
    p.set_defaults(func=run_perturb)


def parse_mask_fraction(text: str) -> float | tuple[float, float]:
    """'0.3' -> 0.3; '0.25-0.5' -> (0.25, 0.5). Range checks happen in rrpo.video.perturb."""
    try:
        if "-" in text:  # fractions are positive, so a '-' always separates a range
            lo, hi = text.split("-", 1)
            return float(lo), float(hi)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction like 0.3 or a range like 0.25-0.5, got {text!r}"
        ) from None


def parse_size(text: str) -> tuple[int, int]:
    """'112' -> (112, 112); '96x128' -> (96, 128) as (height, width)."""
    try:
        parts = [int(x) for x in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 112 or 96x128 (height x width), got {text!r}")
    return parts[0], parts[1]


def run_perturb(args: argparse.Namespace) -> int:
    """Run `rrpo perturb`; prints the PerturbInfo as JSON on stdout."""
    import json
    from pathlib import Path

    from rrpo.video.io import read_frames, write_video
    from rrpo.video.perturb import perturb_frames, validate_args
    from rrpo.video.sheet import contact_sheet

    # Check the cheap arguments before spending time decoding.
    validate_args(args.kind, args.mask_fraction, args.window)
    if args.frames < 1:
        raise RRPOError(f"--frames must be at least 1, got {args.frames}")
    if args.cell < 8:
        raise RRPOError(f"--cell must be at least 8, got {args.cell}")
    if args.start is not None and args.end is not None and args.end < args.start:
        raise RRPOError(f"--end ({args.end}) is before --start ({args.start})")
    key = args.key if args.key is not None else Path(args.video).name

    frames = read_frames(args.video, args.frames, size=args.size, start_sec=args.start, end_sec=args.end)
    perturbed, info = perturb_frames(
        frames,
        args.kind,
        seed=args.seed,
        key=key,
        mask_fraction=args.mask_fraction,
        window=args.window,
        variant=args.variant,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(frames, perturbed, info=info, cell=args.cell).save(out, format="PNG")
    if args.video_out:
        try:
            write_video(args.video_out, perturbed)
        except ValueError as err:
            raise RRPOError(f"cannot write {args.video_out}: {err}") from err
    print(json.dumps(info.to_dict()))
    return 0
