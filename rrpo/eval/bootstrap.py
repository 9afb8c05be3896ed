"""Paired bootstrap intervals for the difference of two models' scores on the same held-out items.

Scores are ratios of per-unit sums (accuracy = correct / items, per-token KL = summed KL / tokens), so
each model gives two arrays over the same units (clips): `num` and `den`. Resampling units (not items)
keeps the items of one clip together: the questions about one video are not independent. Both models
are resampled with the same indices, which is what makes the interval paired: the clip-to-clip
variation they share cancels in the difference (Efron & Tibshirani, "An Introduction to the
Bootstrap", ch. 13, percentile intervals).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """`estimate` = score(a) - score(b) on all units; [`low`, `high`] its percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    units: int
    resamples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def ratio(num: np.ndarray, den: np.ndarray) -> float:
    return float(np.sum(num, dtype=np.float64) / np.sum(den, dtype=np.float64))


def paired_bootstrap(
    num_a: np.ndarray,
    den_a: np.ndarray,
    num_b: np.ndarray,
    den_b: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    scale: float = 1.0,
) -> Interval:
    """Interval of `scale * (sum(num_a)/sum(den_a) - sum(num_b)/sum(den_b))`, all arrays [units],
    resampling the units with replacement `resamples` times (the same draw for a and b)."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (num_a, den_a, num_b, den_b)]
    n = arrays[0].shape[0]
    if n == 0 or any(x.shape != (n,) for x in arrays):
        raise ValueError(f"need four 1-d arrays of one non-zero length, got {[x.shape for x in arrays]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    estimate = scale * (ratio(arrays[0], arrays[1]) - ratio(arrays[2], arrays[3]))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    # In chunks: the index matrix of 2,000 resamples of 1,000 units is 16 MB at once.
    chunk = max(1, 2**20 // n)
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        sa, da, sb, db = (x[idx].sum(axis=1) for x in arrays)
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[start : start + len(idx)] = scale * (sa / da - sb / db)
    stats = stats[np.isfinite(stats)]  # a resample whose denominators are all zero says nothing
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), confidence, n, int(stats.size))


def verdict(interval: Interval, margin: float = 0.0) -> str:
    """For a claim "a > b" (the interval of a - b): "holds" when the whole interval lies above
    `margin`, "does not hold" when it lies below it, else "inconclusive"."""
    if interval.low > margin:
        return "holds"
    if interval.high < margin:
        return "does not hold"
    return "inconclusive"
