"""`rrpo convert`: import the RRPO paper's `<MASK>`-tagged JSON as preference pairs, or export back."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `rrpo convert` to the CLI."""
    p = subparsers.add_parser(
        "convert",
        help="convert preference pairs from/to the RRPO paper's <MASK>-tagged JSON",
        description="--from paper IN.json: import the paper's released pairs (a JSON list of {question, "
        "answer, pred, answer_masked, pred_masked, src, sample_id, video}) as pairs JSONL; records that "
        "cannot be used go to a rejects file with the reason. --to paper IN.jsonl: export pairs to the "
        "paper's format so its own training code can read them.",
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="from_format", choices=["paper"], help="import from this format")
    direction.add_argument("--to", dest="to_format", choices=["paper"], help="export to this format")
    p.add_argument("input", help="the paper's JSON (--from) or a pairs JSONL file (--to)")
    p.add_argument("--out", required=True, help="pairs JSONL (--from) or the paper's JSON (--to)")
    p.add_argument(
        "--rejects",
        default=None,
        help="--from only: where rejected records go (default: <out stem>.rejects.jsonl)",
    )
    p.add_argument(
        "--video-root",
        default=None,
        help="--from only: reject records whose video is not under this directory",
    )
    p.add_argument(
        "--token-diff-spans",
        metavar="TOKENIZER",
        default=None,
        help="--from only: for records without <MASK> markup, mark spans by a token-level alignment of answer "
        "and pred with this tokenizer (a directory or Hub id; the paper's VideoChat2 convention: the Mistral "
        "tokenizer, --min-match-size 3)",
    )
    p.add_argument(
        "--min-match-size", type=int, default=3, help="with --token-diff-spans: shortest common run"
    )
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Run `rrpo convert`; prints counts. Returns 0."""
    from rrpo.data import paper_format
    from rrpo.errors import RRPOError

    if args.to_format:
        if args.rejects or args.video_root:
            raise RRPOError("--rejects and --video-root only apply to --from")
        n = paper_format.convert_to_paper(args.input, args.out)
        print(f"read {n} pairs from {args.input}")
        print(f"wrote {n} records to {args.out}")
        return 0

    rejects = args.rejects or paper_format.default_rejects_path(args.out)
    fallback = None
    if args.token_diff_spans:
        from transformers import AutoTokenizer

        from rrpo.data.spans import token_diff_spans

        tokenizer = AutoTokenizer.from_pretrained(args.token_diff_spans)
        fallback = lambda c, r: token_diff_spans(tokenizer, c, r, args.min_match_size)  # noqa: E731
    result = paper_format.convert_from_paper(
        args.input, args.out, rejects=rejects, video_root=args.video_root, span_fallback=fallback
    )
    print(f"read {result.read} records from {args.input}")
    print(f"wrote {len(result.pairs)} pairs to {args.out}")
    if result.aligned:
        print(
            f"  ({result.aligned} of them after aligning masked and plain text that differ only in whitespace)"
        )
    print(f"rejected {len(result.rejects)} records -> {rejects}")
    for reason, count in sorted(result.counts.items()):
        print(f"  {reason}: {count} ({paper_format.REJECT_REASONS[reason]})")
    return 0
