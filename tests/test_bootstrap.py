"""The paired clip-level bootstrap (rrpo.eval.bootstrap) against a naive resampling loop."""

from __future__ import annotations

import numpy as np
import pytest

from rrpo.eval.bootstrap import Interval, paired_bootstrap, verdict


def naive_interval(a_items, b_items, clips, resamples, rng):
    """Resample clips one draw at a time and recompute both accuracies from the item lists."""
    units = sorted(set(clips))
    stats = []
    for _ in range(resamples):
        picked = rng.integers(0, len(units), len(units))
        a, b = [], []
        for u in picked:
            for i, c in enumerate(clips):
                if c == units[u]:
                    a.append(a_items[i])
                    b.append(b_items[i])
        stats.append(100 * (np.mean(a) - np.mean(b)))
    return np.percentile(stats, [2.5, 97.5])


def test_the_interval_matches_a_naive_loop_over_resampled_clips():
    rng = np.random.default_rng(7)
    clips = np.repeat(np.arange(120), rng.integers(1, 5, 120))  # 1-4 questions per clip
    skill = rng.normal(0, 1, 120)[clips]  # clip difficulty, shared by both models
    a = (rng.normal(0, 1, clips.size) + skill > -0.2).astype(float)
    b = (rng.normal(0, 1, clips.size) + skill > 0.1).astype(float)
    per_clip = [np.bincount(clips, weights=x) for x in (a, b)]
    count = np.bincount(clips).astype(float)
    ours = paired_bootstrap(per_clip[0], count, per_clip[1], count, resamples=4000, seed=1, scale=100)
    low, high = naive_interval(a, b, list(clips), 1000, np.random.default_rng(2))
    assert ours.estimate == pytest.approx(100 * (a.mean() - b.mean()))
    width = high - low
    # Two Monte Carlo estimates of the same percentiles: equal within a few percent of the width.
    assert abs(ours.low - low) < 0.08 * width and abs(ours.high - high) < 0.08 * width
    # Pairing matters: resampling the two models' clips independently gives a wider interval.
    r = np.random.default_rng(3)
    unpaired = []
    for _ in range(2000):
        i, j = r.integers(0, 120, 120), r.integers(0, 120, 120)
        unpaired.append(100 * (per_clip[0][i].sum() / count[i].sum() - per_clip[1][j].sum() / count[j].sum()))
    lo_u, hi_u = np.percentile(unpaired, [2.5, 97.5])
    assert hi_u - lo_u > 1.2 * (ours.high - ours.low)


def test_identical_models_give_a_zero_interval_and_verdicts_follow_the_interval():
    num = np.array([1.0, 0.0, 2.0, 1.0])
    den = np.array([1.0, 1.0, 2.0, 2.0])
    same = paired_bootstrap(num, den, num, den, resamples=200)
    assert same.estimate == same.low == same.high == 0.0
    assert verdict(same) == "inconclusive"

    def interval(lo, hi):
        return Interval(0.5 * (lo + hi), lo, hi, 0.95, 10, 100)

    assert verdict(interval(0.1, 2.0)) == "holds"
    assert verdict(interval(-2.0, -0.1)) == "does not hold"
    assert verdict(interval(-0.1, 2.0)) == "inconclusive"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one non-zero length"):
        paired_bootstrap(np.ones(3), np.ones(3), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.ones(3), np.ones(3), np.ones(3), np.ones(3), confidence=1.5)
