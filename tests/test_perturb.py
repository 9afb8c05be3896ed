"""rrpo.video.perturb, rrpo.video.sheet and `rrpo perturb`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import rrpo.video as video_pkg
from rrpo.cli import main
from rrpo.errors import RRPOError
from rrpo.video import commands
from rrpo.video.perturb import (
    DEFAULT_PERTURBATION,
    PERTURBATIONS,
    PerturbError,
    PerturbInfo,
    apply_perturbation,
    perturb_frames,
    perturbations_for,
    plan_perturbation,
)
from rrpo.video.sheet import CAPTION_H, LABEL_H, PAD, contact_sheet

SHUFFLES = {"global_shuffle", "mask+global_shuffle", "local_shuffle", "mask+local_shuffle"}
MASKS = {"mask", "mask+global_shuffle", "mask+local_shuffle"}


def numbered_clip(t: int, h: int = 6, w: int = 8) -> np.ndarray:
    """[t, h, w, 3] uint8 clip whose frame i is filled with i + 1 (never 0) plus a fixed pattern."""
    pattern = np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3) % 7
    frames = (np.arange(t)[:, None, None, None] * 8 + 8 + pattern[None]).astype(np.uint8)
    assert len({f.tobytes() for f in frames}) == t and frames.min() > 0
    return frames


def source_of(frame: np.ndarray, clip: np.ndarray) -> int | None:
    """Which frame of `clip` `frame` is (None for an all-black frame); found by comparing pixels."""
    if not frame.any():
        return None
    matches = [i for i, f in enumerate(clip) if np.array_equal(f, frame)]
    assert len(matches) == 1
    return matches[0]


def test_constants():
    assert PERTURBATIONS == (
        "mask",
        "global_shuffle",
        "local_shuffle",
        "mask+global_shuffle",
        "mask+local_shuffle",
    )
    assert DEFAULT_PERTURBATION == "mask+local_shuffle"
    assert commands._KINDS == PERTURBATIONS  # the CLI keeps its own copy for a fast `rrpo --help`
    assert sorted(video_pkg.__all__) == sorted(video_pkg._EXPORTS)
    for name in video_pkg.__all__:
        assert getattr(video_pkg, name) is not None


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("t", [1, 2, 5, 16])
def test_output_frames_follow_order_and_mask(kind, t):
    clip = numbered_clip(t)
    before = clip.copy()
    out, info = perturb_frames(clip, kind, seed=3, key=f"rec-{t}")
    np.testing.assert_array_equal(clip, before)  # input untouched
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert info.kind == kind and info.num_frames == t
    assert sorted(info.order) == list(range(t))
    assert info.masked == sorted(set(info.masked)) and all(0 <= j < t for j in info.masked)

    # Recover what each output frame is from its pixels alone and compare with the info.
    sources = [source_of(f, clip) for f in out]
    black = [j for j, s in enumerate(sources) if s is None]
    assert black == info.masked
    for j, s in enumerate(sources):
        if s is not None:
            assert s == info.order[j]
    # Visible frames are distinct inputs (a permutation with holes).
    visible = [s for s in sources if s is not None]
    assert len(set(visible)) == len(visible)

    if kind not in SHUFFLES:
        assert info.order == list(range(t))
    elif t > 1:
        assert info.order != list(range(t)), "a shuffle must move something"
    if kind not in MASKS:
        assert info.masked == [] and info.mask_fraction is None
    else:
        assert 0.25 <= info.mask_fraction <= 0.5
        assert len(info.masked) == round(info.mask_fraction * t)


@pytest.mark.parametrize("t, window", [(16, 4), (10, 4), (9, 3), (7, 2), (5, 8)])
def test_local_shuffle_stays_inside_windows(t, window):
    for k in range(20):
        out, info = perturb_frames(numbered_clip(t), "local_shuffle", seed=0, key=f"k{k}", window=window)
        assert info.window == window
        assert info.order != list(range(t))
        for j, src in enumerate(info.order):
            assert j // window == src // window, f"frame {src} left its window for position {j}"


def test_two_frames_have_one_non_identity_shuffle():
    for kind in ("global_shuffle", "local_shuffle"):
        for k in range(10):
            assert plan_perturbation(2, kind, seed=1, key=str(k)).order == [1, 0]


def test_fixed_mask_fraction():
    for t, fraction in [(16, 0.3), (10, 0.25), (8, 0.5), (3, 0.1)]:
        info = plan_perturbation(t, "mask", seed=0, key="x", mask_fraction=fraction)
        assert info.mask_fraction == fraction
        assert len(info.masked) == round(fraction * t)


def test_mask_fraction_drawn_uniformly_within_bounds():
    fractions, counts = [], []
    for k in range(300):
        info = plan_perturbation(16, "mask", seed=0, key=f"r{k}", mask_fraction=(0.2, 0.6))
        fractions.append(info.mask_fraction)
        counts.append(len(info.masked))
    fractions = np.array(fractions)
    assert fractions.min() >= 0.2 and fractions.max() <= 0.6
    # Uniform on [0.2, 0.6]: mean 0.4, sd 0.115; each quarter of the range gets ~75 of 300.
    assert abs(fractions.mean() - 0.4) < 0.02
    quarters = np.histogram(fractions, bins=4, range=(0.2, 0.6))[0]
    assert quarters.min() > 45
    assert min(counts) >= round(0.2 * 16) and max(counts) <= round(0.6 * 16)
    assert len(set(counts)) >= 5  # 3..10 frames: the count really varies


def test_masked_positions_cover_all_frames():
    """Every output position gets masked sometimes (no position is favoured or skipped)."""
    hits = np.zeros(16, int)
    for k in range(200):
        hits[plan_perturbation(16, "mask", seed=0, key=str(k), mask_fraction=0.25).masked] += 1
    # 200 * 4 / 16 = 50 expected per position.
    assert hits.sum() == 800 and hits.min() > 25 and hits.max() < 80


def test_global_shuffle_moves_each_frame_everywhere():
    first = [plan_perturbation(6, "global_shuffle", seed=0, key=str(k)).order[0] for k in range(300)]
    assert set(first) == set(range(6))


def test_combination_masks_positions_of_the_shuffled_sequence():
    clip = numbered_clip(16)
    out, info = perturb_frames(clip, "mask+global_shuffle", seed=5, key="combo")
    # Shuffle first, then black out positions: the naive two-step computation.
    expected = clip[info.order].copy()
    expected[info.masked] = 0
    np.testing.assert_array_equal(out, expected)
    # Masking before shuffling would black out input frames instead: some masked slot holds a frame
    # whose own index is not in `masked`, so the two orders really differ for this draw.
    assert any(info.order[j] not in info.masked for j in info.masked)


def test_deterministic_and_keyed():
    clip = numbered_clip(16)
    for kind in PERTURBATIONS:
        a, ia = perturb_frames(clip, kind, seed=0, key="video-1")
        b, ib = perturb_frames(clip, kind, seed=0, key="video-1")
        np.testing.assert_array_equal(a, b)
        assert ia == ib
        others = [
            plan_perturbation(16, kind, seed=0, key="video-2"),
            plan_perturbation(16, kind, seed=1, key="video-1"),
            plan_perturbation(16, kind, seed=0, key="video-1", variant=1),
        ]
        for other in others:
            assert (other.order, other.masked) != (ia.order, ia.masked), (kind, other)


def test_same_across_fresh_processes():
    """No salted hash(): a new interpreter with another hash seed draws the same plans."""
    code = (
        "import json; from rrpo.video.perturb import plan_perturbation, PERTURBATIONS;"
        "print(json.dumps([plan_perturbation(16, k, seed=7, key='vid/α 1', variant=2).to_dict() "
        "for k in PERTURBATIONS]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    theirs = json.loads(result.stdout)
    ours = [plan_perturbation(16, k, seed=7, key="vid/α 1", variant=2).to_dict() for k in PERTURBATIONS]
    assert theirs == ours


def test_perturbations_for_gives_distinct_variants():
    plans = perturbations_for("rec-9", "mask+local_shuffle", 4, 0, num_frames=16)
    assert [p.variant for p in plans] == [0, 1, 2, 3]
    assert len({(tuple(p.order), tuple(p.masked)) for p in plans}) == 4
    clip = numbered_clip(16)
    for plan in plans:
        out, info = perturb_frames(clip, "mask+local_shuffle", seed=0, key="rec-9", variant=plan.variant)
        assert info == plan
        np.testing.assert_array_equal(apply_perturbation(clip, plan), out)
    with pytest.raises(PerturbError, match=">= 1"):
        perturbations_for("rec-9", "mask", 0, 0, num_frames=16)


def test_info_json_round_trip():
    info = plan_perturbation(12, "mask+local_shuffle", seed=2, key="r", variant=1, window=3)
    data = json.loads(json.dumps(info.to_dict()))
    assert PerturbInfo.from_dict(data) == info
    assert {"kind", "order", "masked", "seed", "key", "variant", "mask_fraction", "window"} <= set(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "blur"}, "unknown perturbation 'blur'; valid kinds: mask, global_shuffle, local_shuffle"),
        ({"kind": "local_shuffle", "window": 1}, "window must be an integer >= 2, got 1"),
        ({"kind": "local_shuffle", "window": 2.5}, "window must be an integer >= 2"),
        ({"kind": "mask", "mask_fraction": 0.0}, "strictly between 0 and 1"),
        ({"kind": "mask", "mask_fraction": 1.0}, "strictly between 0 and 1"),
        ({"kind": "mask", "mask_fraction": (0.1, 1.5)}, "strictly between 0 and 1"),
        ({"kind": "mask", "mask_fraction": (0.5, 0.2)}, "reversed"),
        ({"kind": "mask", "mask_fraction": "half"}, "number or a \\(low, high\\) pair"),
        ({"kind": "mask", "variant": -1}, "variant must be a non-negative integer"),
    ],
)
def test_bad_arguments(kwargs, message):
    kind = kwargs.pop("kind")
    with pytest.raises(PerturbError, match=message) as err:
        perturb_frames(numbered_clip(4), kind, seed=0, key="k", **kwargs)
    assert isinstance(err.value, RRPOError) and isinstance(err.value, ValueError)


def test_bad_frames():
    for frames in (
        np.zeros((4, 6, 8, 3), np.float32),
        np.zeros((6, 8, 3), np.uint8),
        np.zeros((0, 6, 8, 3), np.uint8),
    ):
        with pytest.raises(PerturbError, match="uint8 \\[T, H, W, 3\\]"):
            perturb_frames(frames, "mask", seed=0, key="k")
    plan = plan_perturbation(8, "mask", seed=0, key="k")
    with pytest.raises(PerturbError, match="planned for 8 frames, got 4"):
        apply_perturbation(numbered_clip(4), plan)


# --- contact sheet --------------------------------------------------------------------------------

COLOURS = np.array(
    [[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200]]
)


def colour_clip(h: int = 24, w: int = 32) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(COLOURS[:, None, None, :], (6, h, w, 3))).astype(np.uint8)


def test_contact_sheet_layout_and_marks():
    clip = colour_clip()
    out, info = perturb_frames(clip, "mask+global_shuffle", seed=0, key="sheet", mask_fraction=0.34)
    cell = 40
    sheet = contact_sheet(clip, out, info=info, cell=cell)
    cell_h = round(cell * 24 / 32)  # 30
    assert isinstance(sheet, Image.Image) and sheet.mode == "RGB"
    assert sheet.size == (6 * cell + 7 * PAD, 2 * PAD + 2 * (CAPTION_H + cell_h + LABEL_H))
    px = np.asarray(sheet).astype(int)
    row_top = [PAD + CAPTION_H, PAD + CAPTION_H + cell_h + LABEL_H + CAPTION_H]

    def cell_pixel(row: int, j: int, dx: int, dy: int) -> np.ndarray:
        return px[row_top[row] + dy, PAD + j * (cell + PAD) + dx]

    assert len(info.masked) == 2
    for j in range(6):
        # Off the diagonals and away from the border: the thumbnail's own colour.
        np.testing.assert_allclose(cell_pixel(0, j, cell // 2, 5), COLOURS[j], atol=2)
        if j in info.masked:
            assert not cell_pixel(1, j, cell // 2, 5).any(), "masked cell should be black"
            red = cell_pixel(1, j, 0, 0)
            assert red[0] > 150 and red[1] < 80  # red frame marks the masked cell
        else:
            np.testing.assert_allclose(cell_pixel(1, j, cell // 2, 5), COLOURS[info.order[j]], atol=2)
            if info.order[j] != j:
                border = cell_pixel(1, j, 0, cell_h // 2)
                assert border[0] > 200 and 100 < border[1] < 200 and border[2] < 60  # orange


def test_contact_sheet_without_info_and_errors(tmp_path):
    clip = colour_clip()
    sheet = contact_sheet(clip, clip[::-1], cell=16)
    path = tmp_path / "s.png"
    sheet.save(path, format="PNG")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (
            6 * 16 + 7 * PAD,
            2 * PAD + 2 * (CAPTION_H + 12 + LABEL_H),
        )
    with pytest.raises(PerturbError, match="6 frames but perturbed has 5"):
        contact_sheet(clip, clip[:5])
    with pytest.raises(PerturbError, match="describes 8 frames"):
        contact_sheet(clip, clip, info=plan_perturbation(8, "mask", seed=0, key="k"))


# --- rrpo perturb -----------------------------------------------------------------------------------


def test_cli_perturb_end_to_end(sample_video, tmp_path, capsys):
    out = tmp_path / "sheets" / "sheet.png"
    clip_out = tmp_path / "perturbed.mp4"
    args = ["perturb", str(sample_video), "--kind", "mask+local_shuffle", "--frames", "8", "--out", str(out)]
    args += ["--seed", "4", "--key", "vid-1", "--mask-fraction", "0.25-0.5", "--window", "3", "--size", "64"]
    args += ["--cell", "32", "--video-out", str(clip_out)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = plan_perturbation(
        8, "mask+local_shuffle", seed=4, key="vid-1", mask_fraction=(0.25, 0.5), window=3
    )
    assert printed == expected.to_dict()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (8 * 32 + 9 * PAD, 2 * PAD + 2 * (CAPTION_H + 32 + LABEL_H))

    # The written clip is the perturbed one: masked frames come back black, the others not.
    from rrpo.video.io import read_frames

    back = read_frames(clip_out, 8)
    assert back.shape == (8, 64, 64, 3)
    for j in range(8):
        if j in printed["masked"]:
            assert back[j].mean() < 3
        else:
            assert back[j].mean() > 50


def test_cli_perturb_fixed_fraction_and_default_key(sample_video, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["perturb", str(sample_video), "--kind", "mask", "--frames", "4", "--mask-fraction", "0.5"] + [
        "--size", "32x48", "--out", str(out)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["key"] == sample_video.name
        and printed["mask_fraction"] == 0.5
        and len(printed["masked"]) == 2
    )
    with Image.open(out) as image:
        assert image.size == (4 * 96 + 5 * PAD, 2 * PAD + 2 * (CAPTION_H + 64 + LABEL_H))


def test_cli_perturb_errors(sample_video, tmp_path, capsys):
    out = str(tmp_path / "s.png")
    assert main(["perturb", str(sample_video), "--window", "1", "--out", out]) == 1
    assert "window must be an integer >= 2, got 1" in capsys.readouterr().err
    missing = tmp_path / "missing.mp4"
    assert main(["perturb", str(missing), "--out", out]) == 1
    assert f"{missing}: video file not found" in capsys.readouterr().err
    assert main(["perturb", str(sample_video), "--mask-fraction", "0.6-0.2", "--out", out]) == 1
    assert "reversed" in capsys.readouterr().err
    for bad in (["--mask-fraction", "lots"], ["--size", "0"], ["--kind", "blur"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["perturb", str(sample_video), "--out", out, *bad])
        assert exit_info.value.code == 2
    assert not (tmp_path / "s.png").exists()
