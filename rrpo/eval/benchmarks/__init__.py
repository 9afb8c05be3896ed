"""Benchmark loaders and scorers, one module per benchmark, and the `BENCHMARKS` registry.

    from rrpo.eval.benchmarks import BENCHMARKS
    bench = BENCHMARKS["mlvu"]
    items = bench.load(Path("MLVU/json"))                    # list[EvalItem]
    result = bench.score(items, {item.id: reply, ...})       # dict, see base.py
    result = bench.score(items, preds, scoring="paper")      # the RRPO paper's own extraction

docs/scoring.md lists each benchmark's official rule and where the paper's scripts differ.
"""

from __future__ import annotations

from rrpo.errors import RRPOError
from rrpo.eval.benchmarks.base import SCORING_MODES, Benchmark, EvalItem, Judge
from rrpo.eval.benchmarks.longvideobench import LongVideoBench
from rrpo.eval.benchmarks.mlvu import MLVU
from rrpo.eval.benchmarks.mvbench import MVBench, TVBench
from rrpo.eval.benchmarks.tempcompass import TempCompass
from rrpo.eval.benchmarks.videohallucer import VideoHallucer
from rrpo.eval.benchmarks.videomme import VideoMME

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (VideoHallucer(), TVBench(), MVBench(), VideoMME(), MLVU(), TempCompass(), LongVideoBench())
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark `name`; RRPOError listing the known names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise RRPOError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


__all__ = ["BENCHMARKS", "SCORING_MODES", "Benchmark", "EvalItem", "Judge", "get_benchmark"]
