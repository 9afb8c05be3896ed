"""`rrpo generate` and `rrpo merge-shards`."""

from __future__ import annotations

import argparse
import json
import sys

from rrpo.models.options import add_model_options, model_fingerprint, model_options


def _mask_fraction(text: str) -> tuple[float, float] | float:
    if "-" in text:
        lo, hi = (float(x) for x in text.split("-"))
        return (lo, hi)
    return float(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="make preference pairs from the model's mistakes on perturbed videos")
    p.add_argument("--model", required=True, help="model directory (any supported family)")
    p.add_argument("--adapter", default=None, help="optional LoRA adapter directory")
    p.add_argument(
        "--data", required=True, help="questions JSONL (id, video, question, answer, answer_type, options)"
    )
    p.add_argument("--video-root", required=True)
    p.add_argument(
        "--out",
        required=True,
        help="pairs JSONL (or a directory: DIR/pairs.jsonl); its sidecars go beside it, named after it: "
        "pairs.rejects.jsonl, pairs.correct.jsonl, pairs.retry.jsonl, pairs.summary.json, pairs.run.json",
    )
    p.add_argument(
        "--perturb",
        default="mask+local_shuffle",
        help="mask | global_shuffle | local_shuffle | mask+global_shuffle | mask+local_shuffle",
    )
    p.add_argument("--num-perturbations", type=int, default=2)
    p.add_argument("--mask-fraction", type=_mask_fraction, default=(0.25, 0.5), help="e.g. 0.25-0.5 or 0.3")
    p.add_argument("--window", type=int, default=4, help="local shuffle window (frames)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="resize frames to exactly H x W (default: native aspect ratio, sized by the model's processor)",
    )
    add_model_options(p)
    p.add_argument("--batch-size", type=int, default=8, help="model inputs per generate call")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="reject questions whose prompt is longer than this, before the processor (default: the model's context)",
    )
    p.add_argument(
        "--judge",
        choices=["rule", "llm"],
        default="rule",
        help="rule: mcq/yes-no only; llm: also open answers (judge + LLM concept differ)",
    )
    p.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1"
    )
    p.add_argument("--judge-model", default="gpt-4o-mini")
    p.add_argument(
        "--judge-api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (never logged or written)",
    )
    p.add_argument("--judge-cache", default=None, help="cache dir for judge replies (default: beside --out)")
    p.add_argument("--judge-timeout", type=float, default=30.0, help="seconds per judge request (default 30)")
    p.add_argument(
        "--judge-retries", type=int, default=4, help="retries of a failed judge request (openai's; default 4)"
    )
    p.add_argument(
        "--judge-max-failures",
        type=int,
        default=3,
        help="give up on the judge endpoint for the run after this many failed requests in a row "
        "(the records are left for a rerun; 0: never give up)",
    )
    p.add_argument(
        "--spans",
        choices=["differ", "token-diff"],
        default="differ",
        help="how a pair's differing spans are marked: the rule/LLM differ (default), or a token-level "
        "alignment with the model's tokenizer (the paper's VideoChat2 convention)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", default=None, help="i/n: process only the records of shard i of n")
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (also the default: done ids are always skipped)",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="read video paths that lead outside --video-root (refused by default: '../..', absolute paths)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start clean: delete this --out and its sidecars first (a run with other settings is refused "
        "without it)",
    )
    p.set_defaults(func=_run_generate)

    m = sub.add_parser("merge-shards", help="join the outputs of `rrpo generate --shard i/n`")
    m.add_argument("--out", required=True, help="the --out given to the shards")
    m.add_argument("--num-shards", type=int, required=True)
    m.set_defaults(func=_run_merge_shards)


def _run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rrpo.data.record import load_questions
    from rrpo.errors import RRPOError
    from rrpo.selfalign.pipeline import GenerateConfig, generate_pairs

    cfg = GenerateConfig.from_args(args)  # checks every setting before any record is read
    fingerprint = generate_fingerprint(args, cfg)  # before the frame size is resolved from the model
    questions = load_questions(args.data)  # validates every record up front
    llm = None
    if args.judge == "llm":
        if not args.judge_url:
            raise RRPOError("--judge llm needs --judge-url (any OpenAI-compatible endpoint)")
        from rrpo.llm.client import LLMClient

        cache = args.judge_cache or str(Path(args.out).parent / "judge_cache")
        llm = LLMClient(
            args.judge_url,
            args.judge_model,
            api_key_env=args.judge_api_key_env,
            cache_dir=cache,
            timeout=args.judge_timeout,
            max_retries=args.judge_retries,
            max_consecutive_failures=args.judge_max_failures,
        )
    generator = make_generator(
        args.model,
        args.adapter,
        backend=args.backend,
        frames=cfg.frames,
        frame_size=cfg.frame_size,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        load_options=model_options(args),
    )
    if cfg.frame_size is None:
        cfg.frame_size = generator.frame_size
    summary = generate_pairs(
        questions,
        args.video_root,
        args.out,
        generator,
        cfg,
        llm=llm,
        fingerprint=fingerprint,
        overwrite=args.overwrite,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=2))
    if summary["judge_given_up"]:
        print(
            f"the judge endpoint {args.judge_url} failed {args.judge_max_failures} times in a row and was not "
            "called again in this run; check it, then run the same command again",
            file=sys.stderr,
        )
    if summary["retryable"]:
        by_reason = ", ".join(f"{k}: {v}" for k, v in summary["retryable_by_reason"].items())
        print(
            f"{len(summary['retryable'])} record(s) failed for reasons a rerun can fix ({by_reason}); they are "
            f"not marked done and are listed in {summary['files']['retry']}. Fix the cause and run the same "
            "command again.",
            file=sys.stderr,
        )
        return EXIT_RETRYABLE
    return 0


# `rrpo generate` finished, but some records failed for reasons a rerun can fix (docs/RELIABILITY.md).
EXIT_RETRYABLE = 3


def generate_fingerprint(args: argparse.Namespace, cfg) -> dict:  # noqa: ANN001
    """What makes two `rrpo generate` runs the same run (rrpo.data.runs): model, adapter, loading
    options, every generation setting, the judge, rrpo's version."""
    import dataclasses

    return {
        **model_fingerprint(args),
        "backend": args.backend,
        # Not allow_outside_root: it only lets records that failed run (a fix, not another run).
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "allow_outside_root"},
        "judge_model": args.judge_model if cfg.judge == "llm" else None,
    }


class TransformersGenerator:
    """Greedy batched generation through the model adapters (transformers `generate`)."""

    def __init__(
        self,
        model_dir: str,
        adapter_dir: str | None,
        *,
        frames: int,
        frame_size,
        max_new_tokens: int,
        batch_size: int,
        load_options: dict | None = None,
    ):
        import sys

        from rrpo.models import load_model
        from rrpo.models.loading import describe_placement

        self.vlm = load_model(
            model_dir,
            adapter_dir=adapter_dir,
            num_frames=frames,
            frame_size=frame_size,
            device="auto",
            **(load_options or {}),
        )
        print(describe_placement(self.vlm), file=sys.stderr)
        self.frame_size = self.vlm.frame_size
        self.tokenizer = self.vlm.tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        text = getattr(self.vlm.hf_model.config, "text_config", self.vlm.hf_model.config)
        # Prompts longer than this are rejected before the processor (a 10 MB question would exhaust RAM).
        self.context_length = getattr(text, "max_position_embeddings", None)

    def count_tokens(self, text: str) -> int:
        return len(self.vlm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, items):  # noqa: ANN001
        return self.vlm.generate(items, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)


def make_generator(model_dir: str, adapter_dir: str | None, *, backend: str, **kw):  # noqa: ANN003
    if backend == "vllm":
        from rrpo.selfalign.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_dir, adapter_dir, **kw)
    return TransformersGenerator(model_dir, adapter_dir, **kw)


def _run_merge_shards(args: argparse.Namespace) -> int:
    from rrpo.selfalign.pipeline import merge_shards

    print(json.dumps(merge_shards(args.out, args.num_shards), indent=2))
    return 0
