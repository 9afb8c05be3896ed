"""The `rrpo` command.

Each stage of the pipeline registers its own subcommands in a `commands.py` beside its code
(`register(subparsers)` adds parsers whose `func` runs the command), so this file stays a table of
contents. Modules are imported only when the command line is parsed, and a stage whose module is
missing or fails to import does not break the others.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from rrpo.errors import RRPOError

# Order is the order of the pipeline, which is the order `rrpo --help` lists commands in.
COMMAND_MODULES = [
    "rrpo.models.commands",  # tiny-model
    "rrpo.video.commands",  # perturb
    "rrpo.data.commands",  # convert
    "rrpo.selfalign.commands",  # generate, merge-shards
    "rrpo.train.commands",  # train, merge
    "rrpo.eval.commands",  # eval, score, compare, deviation
    "rrpo.toy.commands",  # toy, demo
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrpo",
        description="Self-align video LLMs with RRPO: generate preference data from perturbed videos, "
        "train with the RRPO loss, and evaluate.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from rrpo import __version__

    return f"rrpo {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A command that parses its own options (`rrpo train`: HfArgumentParser over RRPOConfig) sets
    # `pass_through_args` and gets the words after its name as `args.extra_args`.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "pass_through_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    # The words this run was invoked with (commands that record their own provenance read it).
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except RRPOError as err:
        print(f"rrpo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rrpo {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        # A full disk, a read-only or forbidden output: say so and where; what was written is resumable.
        reason = DISK_ERRORS.get(err.errno)
        if reason is None:
            raise
        where = err.filename or "an output file"
        print(
            f"rrpo {args.command}: error: cannot write {where}: {reason}; free space or fix permissions, then "
            "run the same command again (work written so far is kept and resumed)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


if __name__ == "__main__":
    sys.exit(main())
