"""Frame perturbations that make a video LLM's answer go wrong (RRPO, arXiv 2504.12083, Sec. 3.1).

The self-alignment pipeline asks the model about a perturbed copy of each video; the answers it gives
to the perturbed video become the rejected responses. Perturbations (frames are uint8 [T, H, W, 3]):

- ``mask``: a fraction of the T frames, drawn uniformly from ``mask_fraction`` (default 25-50 %), is
  replaced by black frames; the count is ``round(fraction * T)`` (Python's ``round``).
- ``global_shuffle``: a random permutation of all frames, never the identity (for T > 1).
- ``local_shuffle``: frames permuted within consecutive windows of ``window`` frames (the last window
  may be shorter), never the identity overall (for T > 1).
- ``mask+global_shuffle`` / ``mask+local_shuffle``: shuffle first, then black out positions of the
  *shuffled* sequence. ``mask+local_shuffle`` is the paper's best and the default.

Randomness is a pure function of ``(seed, key, kind, variant)``: every draw is hashed with SHA-256
(not Python's per-process salted ``hash()``, and not numpy's Generator methods, whose streams may change
between numpy versions), so a record gets the same perturbation in any process, on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rrpo.errors import RRPOError

PERTURBATIONS = ("mask", "global_shuffle", "local_shuffle", "mask+global_shuffle", "mask+local_shuffle")
DEFAULT_PERTURBATION = "mask+local_shuffle"
DEFAULT_MASK_FRACTION = (0.25, 0.5)
DEFAULT_WINDOW = 4

# Redraws allowed when a shuffle comes out as the identity; the chance of needing one is 1/T! (global)
# or about (1/window!)^(T/window) (local), so the cap is never reached in practice.
_MAX_REDRAWS = 1000


class PerturbError(RRPOError, ValueError):
    """Bad perturbation arguments (unknown kind, window < 2, fraction outside (0, 1), bad frames)."""


@dataclass(frozen=True)
class PerturbInfo:
    """What a perturbation did, enough to reproduce and to explain it.

    ``order[j]`` is the input frame shown at output position j (before masking); ``masked`` are the
    sorted output positions replaced by black frames. ``mask_fraction`` is the fraction actually drawn
    (None when nothing was masked by design); ``window`` is the local-shuffle window (None otherwise).
    """

    kind: str
    num_frames: int
    order: list[int]
    masked: list[int]
    seed: int
    key: str
    variant: int = 0
    mask_fraction: float | None = None
    window: int | None = None
    rng_seed: str = field(default="", repr=False)  # hex digest the draws were derived from

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (plain ints, floats, strings and lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PerturbInfo:
        """Inverse of `to_dict`."""
        return cls(**data)


class _HashStream:
    """Uniform numbers in [0, 1) from SHA-256 in counter mode: stable across Python/numpy versions."""

    def __init__(self, material: str):
        self.digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
        self._counter = 0

    def uniform(self) -> float:
        block = hashlib.sha256(f"{self.digest}:{self._counter}".encode()).digest()
        self._counter += 1
        return int.from_bytes(block[:7], "big") / 2**56  # 56 bits: exact in a float64

    def below(self, n: int) -> int:
        """An integer uniform in [0, n) (bias below 2**-40 for n < 2**16)."""
        return min(n - 1, int(self.uniform() * n))

    def permutation(self, n: int) -> list[int]:
        """Fisher-Yates shuffle of range(n)."""
        items = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items


def validate_args(
    kind: str, mask_fraction: float | Sequence[float] = DEFAULT_MASK_FRACTION, window: int = DEFAULT_WINDOW
) -> tuple[float, float]:
    """Check perturbation arguments; return the mask fraction as a (lo, hi) range. Raises PerturbError."""
    if kind not in PERTURBATIONS:
        raise PerturbError(f"unknown perturbation {kind!r}; valid kinds: {', '.join(PERTURBATIONS)}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 2:
        raise PerturbError(f"local-shuffle window must be an integer >= 2, got {window!r}")
    if isinstance(mask_fraction, int | float | np.floating) and not isinstance(mask_fraction, bool):
        lo = hi = float(mask_fraction)
    else:
        try:
            lo, hi = (float(x) for x in mask_fraction)
        except (TypeError, ValueError):
            raise PerturbError(
                f"mask_fraction must be a number or a (low, high) pair, got {mask_fraction!r}"
            ) from None
    for value in (lo, hi):
        if not 0.0 < value < 1.0:
            raise PerturbError(f"mask fraction must lie strictly between 0 and 1, got {mask_fraction!r}")
    if lo > hi:
        raise PerturbError(f"mask fraction range is reversed: {lo} > {hi}")
    return lo, hi


def plan_perturbation(
    num_frames: int,
    kind: str = DEFAULT_PERTURBATION,
    *,
    seed: int,
    key: str,
    mask_fraction: float | Sequence[float] = DEFAULT_MASK_FRACTION,
    window: int = DEFAULT_WINDOW,
    variant: int = 0,
) -> PerturbInfo:
    """Decide a perturbation of a `num_frames`-frame clip without touching pixels.

    Deterministic in (seed, key, kind, variant, num_frames, mask_fraction, window); `variant` 0, 1, ...
    gives a record several different perturbations. Apply it with `apply_perturbation`.
    """
    lo, hi = validate_args(kind, mask_fraction, window)
    if num_frames < 1:
        raise PerturbError(f"cannot perturb a clip of {num_frames} frames")
    if isinstance(variant, bool) or not isinstance(variant, int | np.integer) or variant < 0:
        raise PerturbError(f"variant must be a non-negative integer, got {variant!r}")
    rng = _HashStream(f"rrpo-perturb:{seed}:{key}:{kind}:{variant}")
    parts = kind.split("+")

    order = list(range(num_frames))
    if "global_shuffle" in parts:
        order = _non_identity(num_frames, rng.permutation)
    elif "local_shuffle" in parts:
        order = _non_identity(num_frames, lambda n: _local_permutation(n, window, rng))

    masked: list[int] = []
    fraction = None
    if "mask" in parts:
        fraction = lo if lo == hi else lo + (hi - lo) * rng.uniform()
        count = min(num_frames, round(fraction * num_frames))
        masked = sorted(rng.permutation(num_frames)[:count])

    return PerturbInfo(
        kind=kind,
        num_frames=num_frames,
        order=[int(i) for i in order],
        masked=[int(i) for i in masked],
        seed=int(seed),
        key=str(key),
        variant=int(variant),
        mask_fraction=fraction,
        window=int(window) if "local_shuffle" in parts else None,
        rng_seed=rng.digest,
    )


def _local_permutation(n: int, window: int, rng: _HashStream) -> list[int]:
    """Shuffle range(n) within consecutive windows [0, w), [w, 2w), ...; the last may be shorter."""
    order: list[int] = []
    for start in range(0, n, window):
        size = min(window, n - start)
        order.extend(start + i for i in rng.permutation(size))
    return order


def _non_identity(n: int, draw) -> list[int]:
    """Draw permutations of range(n) until one is not the identity (impossible for n == 1)."""
    order = draw(n)
    for _ in range(_MAX_REDRAWS):
        if n < 2 or order != list(range(n)):
            return order
        order = draw(n)
    raise RuntimeError(
        f"drew the identity permutation of {n} frames {_MAX_REDRAWS} times"
    )  # pragma: no cover


def apply_perturbation(frames: np.ndarray, info: PerturbInfo) -> np.ndarray:
    """Frames reordered by ``info.order`` with ``info.masked`` positions black. [T, H, W, 3] -> same shape."""
    frames = _check_frames(frames)
    if len(frames) != info.num_frames:
        raise PerturbError(f"perturbation was planned for {info.num_frames} frames, got {len(frames)}")
    out = frames[np.asarray(info.order, dtype=np.int64)]  # fancy indexing copies
    if info.masked:
        out[np.asarray(info.masked, dtype=np.int64)] = 0
    return out


def perturb_frames(
    frames: np.ndarray,
    kind: str = DEFAULT_PERTURBATION,
    *,
    seed: int,
    key: str,
    mask_fraction: float | Sequence[float] = DEFAULT_MASK_FRACTION,
    window: int = DEFAULT_WINDOW,
    variant: int = 0,
) -> tuple[np.ndarray, PerturbInfo]:
    """Perturb uint8 frames [T, H, W, 3]; returns (new frames of the same shape, PerturbInfo).

    `key` is the record id; the result depends only on (seed, key, kind, variant) and the arguments,
    never on the process. Output frame j is input frame ``info.order[j]``, or black if j is in
    ``info.masked``. The input array is not modified.
    """
    frames = _check_frames(frames)
    info = plan_perturbation(
        len(frames), kind, seed=seed, key=key, mask_fraction=mask_fraction, window=window, variant=variant
    )
    return apply_perturbation(frames, info), info


def perturbations_for(
    key: str,
    kind: str,
    n: int,
    seed: int,
    *,
    num_frames: int,
    mask_fraction: float | Sequence[float] = DEFAULT_MASK_FRACTION,
    window: int = DEFAULT_WINDOW,
) -> list[PerturbInfo]:
    """Plans for variants 0..n-1 of one record (``num_perturbations`` in the pipeline's config).

    Variants are drawn independently, so very short clips can repeat a plan (T = 2 has a single
    non-identity shuffle); for 16 frames a repeat is astronomically unlikely.
    """
    if n < 1:
        raise PerturbError(f"number of perturbations must be >= 1, got {n}")
    return [
        plan_perturbation(
            num_frames, kind, seed=seed, key=key, mask_fraction=mask_fraction, window=window, variant=v
        )
        for v in range(n)
    ]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise PerturbError(f"frames must be non-empty uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames
