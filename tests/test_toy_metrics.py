"""Toy-world metrics on constructed cases whose answers are known, and on real toy figures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation import toy_metrics as tm
from datasets.toy_world import PALETTE
from pipelines.toy_world.config import ToyWorldConfig
from pose_extraction.figure import paint
from pipelines.toy_world.samples import draw_sample

TOLERANCE = tm.palette_tolerance(PALETTE)


@pytest.fixture(scope="module")
def figures() -> list:
    config = ToyWorldConfig(output="unused", size=64, seed=11)
    return [draw_sample(config, "image", i) for i in range(12)]


def test_tolerance_is_half_the_closest_palette_gap():
    assert TOLERANCE == pytest.approx(127.5)
    assert tm.palette_tolerance({"a": (0, 0, 0), "b": (30, 40, 0), "c": (255, 255, 255)}) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        tm.palette_tolerance({"a": (0, 0, 0)})
    red, blue = np.array(PALETTE["red"]), np.array(PALETTE["blue"])
    pixels = np.array([[red * 0 + blue, (blue * 0.8 + red * 0.2).round(), (blue * 0.2 + red * 0.8).round()]], np.uint8)
    assert tm.figure_mask(pixels, PALETTE["blue"], TOLERANCE).tolist() == [[False, False, True]]


def test_pose_iou_perfect_disjoint_and_partial():
    mask = np.zeros((32, 32), bool)
    mask[4:20, 4:12] = True
    image = paint(mask, PALETTE["red"], PALETTE["blue"])
    assert tm.pose_iou(image, mask, PALETTE["blue"], TOLERANCE) == 1.0
    assert tm.pose_iou(image, np.roll(mask, 16, axis=1), PALETTE["blue"], TOLERANCE) == 0.0
    half = np.zeros_like(mask)
    half[4:20, 4:8] = True
    assert tm.pose_iou(image, half, PALETTE["blue"], TOLERANCE) == pytest.approx(0.5)
    wrong_background = paint(np.zeros_like(mask), PALETTE["red"], PALETTE["green"])  # the prompt said blue
    assert tm.pose_iou(wrong_background, mask, PALETTE["blue"], TOLERANCE) == pytest.approx(mask.sum() / mask.size)
    assert tm.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(ValueError):
        tm.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_border_colour_is_the_background_even_where_the_figure_touches_the_edge():
    mask = np.zeros((32, 32), bool)
    mask[10:32, 12:20] = True  # legs through the bottom edge: 8 of the border's 124 pixels
    frames = np.stack([paint(mask, PALETTE["red"], PALETTE["blue"]), paint(mask, PALETTE["white"], (30, 200, 90))])
    assert tm.border_colour(frames).tolist() == [list(PALETTE["blue"]), [30, 200, 90]]
    assert tm.border_colour(frames[0]).tolist() == list(PALETTE["blue"])
    own = tm.figure_mask(frames, tm.border_colour(frames)[:, None, None, :], TOLERANCE)
    assert all(tm.mask_iou(m, mask) == 1.0 for m in own), "a figure on an unnamed background is still found"
    with pytest.raises(ValueError, match="no border"):
        tm.border_colour(np.zeros((2, 5, 3)))


def test_pose_iou_survives_coding_noise_and_the_shuffled_control_is_lower(figures):
    rng = np.random.default_rng(0)
    own, noisy, jpeg = [], [], []
    for sample in figures:
        image, mask, background = sample.frames[0], sample.masks[0], PALETTE[sample.background]
        own.append(tm.pose_iou(image, mask, background, TOLERANCE))
        noise = np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
        noisy.append(tm.pose_iou(noise, mask, background, TOLERANCE))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=75)
        jpeg.append(tm.pose_iou(np.asarray(Image.open(buffer)), mask, background, TOLERANCE))
    assert own == [1.0] * len(figures)
    assert min(noisy) > 0.97 and min(jpeg) > 0.8
    control = tm.shuffled_control([s.masks[0] for s in figures], seed=1)
    shuffled = [tm.pose_iou(s.frames[0], c, PALETTE[s.background], TOLERANCE) for s, c in zip(figures, control)]
    assert np.mean(shuffled) < 0.5 and max(shuffled) < 1.0
    frames = np.stack([s.frames[0] for s in figures[:3]])
    masks = np.stack([s.masks[0] for s in figures[:3]])
    with pytest.raises(ValueError):
        tm.video_pose_iou(frames, masks[:2], PALETTE["blue"], TOLERANCE)


def test_derangement_moves_everything_and_is_seeded():
    for n in (2, 3, 10):
        permutation = tm.derangement(n, seed=4)
        assert sorted(permutation) == list(range(n)) and not np.any(permutation == np.arange(n))
    assert np.array_equal(tm.derangement(10, 1), tm.derangement(10, 1))
    assert tm.shuffled_control(["a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError):
        tm.derangement(1, 0)


def test_colour_fidelity_matches_and_mismatches(figures):
    for sample in figures:
        image, figure, background = sample.frames[0], sample.figure, sample.background
        assert tm.colour_fidelity(image, figure, background, PALETTE)["both_ok"]
        assert tm.colour_fidelity(image, figure, background, PALETTE, mask=sample.masks[0])["both_ok"]
        swapped = tm.colour_fidelity(image, background, figure, PALETTE)
        assert not swapped["figure_ok"] and not swapped["background_ok"] and not swapped["both_ok"]
        other = next(name for name in PALETTE if name not in (figure, background))
        result = tm.colour_fidelity(image, other, background, PALETTE)
        assert result["background_ok"] and not result["figure_ok"] and result["figure_found"] == figure
    empty = np.zeros((32, 32, 3), np.uint8)
    result = tm.colour_fidelity(empty, "red", "black", PALETTE)
    assert result["background_ok"] and result["figure_found"] is None and not result["both_ok"]
    off_palette = np.full((8, 8, 3), 128, np.uint8)
    assert tm.colour_fidelity(off_palette, "red", "black", PALETTE)["background_found"] is None
    with pytest.raises(ValueError):
        tm.colour_fidelity(empty, "purple", "black", PALETTE)


def test_consecutive_cosines_of_known_frames():
    red = np.broadcast_to(np.array(PALETTE["red"], np.uint8), (2, 8, 8, 3))
    blue = np.broadcast_to(np.array(PALETTE["blue"], np.uint8), (1, 8, 8, 3))
    assert tm.consecutive_cosines(red).tolist() == pytest.approx([1.0])
    assert tm.consecutive_cosines(np.concatenate([red, blue]))[-1] == pytest.approx(-1 / 3)
    grey = np.full((2, 4, 4, 3), 127.5)
    assert tm.consecutive_cosines(grey).tolist() == [1.0]
    assert tm.frame_consistency(red) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tm.frame_consistency(red[:1])


def test_background_stability_is_maximal_for_still_frames_and_drops_with_drift_and_flicker(figures):
    sample = figures[0]
    still = np.repeat(sample.frames, 6, axis=0)
    result = tm.background_stability(still)
    assert result["stability"] == 1.0 and result["colour_drift"] == 0.0 and result["pixel_std"] == 0.0
    drifting = still.astype(np.int16).copy()
    drifting[3:] = np.where(sample.masks[0][..., None], drifting[3:], 128)
    drifted = tm.background_stability(drifting.astype(np.uint8))
    assert drifted["stability"] < 0.9 and drifted["max_colour_drift"] > 100
    grey = np.repeat(paint(sample.masks[0], PALETTE["red"], (128, 128, 128))[None], 6, axis=0)  # no clipping of the noise
    flicker = np.clip(grey + np.random.default_rng(0).normal(0, 10, grey.shape), 0, 255).astype(np.uint8)
    flickered = tm.background_stability(flicker, masks=tm.static_background(np.repeat(sample.masks, 6, axis=0), margin=1))
    assert flickered["stability"] > 0.98 and 7 < flickered["pixel_std"] < 11  # std of 6 samples of N(0, 10)
    assert tm.static_background(sample.masks, margin=0).sum() == (~sample.masks[0]).sum()
    with pytest.raises(ValueError):
        tm.background_colours(still, masks=np.zeros(still.shape[:3], bool))


def test_window_boundaries_follow_the_long_video_plan():
    from follow_your_pose.long_video import plan_windows

    for frames, window, overlap in [(32, 8, 4), (30, 8, 4), (24, 8, 2), (8, 8, 4), (9, 8, 4), (40, 16, 8), (24, 8, 0), (20, 8, 0)]:
        planned = plan_windows(frames, window, overlap)
        expected = [w.start + w.prior for w in planned[1:] if w.start + w.prior < frames]
        assert tm.window_boundaries(frames, window, overlap) == expected
    assert tm.window_boundaries(24, 8, 0) == [8, 16]
    assert all(w.prior == 0 for w in plan_windows(24, 8, 0)), "overlap 0: independent windows, no prior"
    with pytest.raises(ValueError):
        tm.window_boundaries(24, 8, 8)


def test_boundary_consistency_sees_jumps_only_at_boundaries(figures):
    sample = figures[1]
    frames = np.repeat(sample.frames, 24, axis=0)
    boundaries = tm.window_boundaries(24, 8, 4)
    smooth = tm.boundary_consistency(frames, boundaries)
    assert smooth["cosine_gap"] == pytest.approx(0.0) and smooth["boundary_colour_jump"] == 0.0
    jumpy = frames.copy()
    for index, start in enumerate(boundaries):  # each window gets another background
        colour = list(PALETTE.values())[index % len(PALETTE)]
        jumpy[start:] = paint(sample.masks[0], PALETTE[sample.figure], colour)
    result = tm.boundary_consistency(jumpy, boundaries)
    assert result["boundaries"] == len(boundaries) == 4
    assert result["interior_cosine"] == pytest.approx(1.0) and result["cosine_gap"] > 0.3
    assert result["boundary_colour_jump"] > 200 and result["interior_colour_jump"] == 0.0
    with pytest.raises(ValueError):
        tm.boundary_consistency(frames, [0])
