"""The skeleton renderer against known pixels: palette, threshold, stroke width."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.keypoints import COCO17_NAMES, empty_keypoints
from pose_extraction.skeleton import (
    BLUE,
    COCO17_LINKS,
    GREEN,
    ORANGE,
    SkeletonStyle,
    render_sequence,
    render_skeleton,
    scale_keypoints,
)

K = {name: index for index, name in enumerate(COCO17_NAMES)}
LINES_ONLY = SkeletonStyle(draw_keypoints=False)


def _person(points: dict[str, tuple[float, float]], score: float = 0.9) -> np.ndarray:
    person = empty_keypoints(1)
    for name, (x, y) in points.items():
        person[0, K[name]] = (x, y, score)
    return person


def _standing(scale: float = 1.0, dx: float = 0.0) -> np.ndarray:
    """A front-facing person (their left on the image's right) on a 200x200 grid."""
    layout = {
        "nose": (100, 30), "left_eye": (108, 22), "right_eye": (92, 22), "left_ear": (118, 26), "right_ear": (82, 26),
        "left_shoulder": (130, 60), "right_shoulder": (70, 60), "left_elbow": (150, 95), "right_elbow": (50, 95),
        "left_wrist": (160, 130), "right_wrist": (40, 130), "left_hip": (120, 120), "right_hip": (80, 120),
        "left_knee": (122, 155), "right_knee": (78, 155), "left_ankle": (124, 190), "right_ankle": (76, 190),
    }
    return _person({name: (x * scale + dx, y * scale) for name, (x, y) in layout.items()})


def _colour_at(image: np.ndarray, x: float, y: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in image[int(round(y)), int(round(x))])


def test_links_have_the_release_palette_in_rgb():
    person = _standing()
    image = render_skeleton(person, 200, 200, style=LINES_ONLY)
    assert image.dtype == np.uint8 and image.shape == (200, 200, 3)
    expect = {
        ("left_shoulder", "left_elbow"): GREEN, ("left_knee", "left_ankle"): GREEN,
        ("right_shoulder", "right_elbow"): BLUE, ("right_knee", "right_ankle"): BLUE,
        ("left_shoulder", "right_shoulder"): ORANGE, ("left_hip", "right_hip"): ORANGE,
        ("nose", "left_eye"): ORANGE, ("right_shoulder", "right_hip"): ORANGE,
    }
    for (a, b), colour in expect.items():
        xa, ya = person[0, K[a], :2]
        xb, yb = person[0, K[b], :2]
        assert _colour_at(image, (xa + xb) / 2, (ya + yb) / 2) == colour, (a, b)
    assert ORANGE == (255, 153, 51) and GREEN == (0, 255, 0) and BLUE == (0, 128, 255)
    assert _colour_at(image, 5, 195) == (0, 0, 0)  # black background
    assert len(COCO17_LINKS) == 19


def test_only_palette_colours_are_drawn():
    image = render_skeleton(_standing(), 200, 200)
    colours = {tuple(int(v) for v in c) for c in np.unique(image.reshape(-1, 3), axis=0)}
    assert colours == {(0, 0, 0), ORANGE, GREEN, BLUE}


def test_keypoint_dots_follow_left_right():
    person = _person({"left_wrist": (40, 40), "right_wrist": (160, 40), "nose": (100, 160)})
    image = render_skeleton(person, 200, 200, style=SkeletonStyle(stroke_per_1080=60))
    assert _colour_at(image, 40, 40) == GREEN
    assert _colour_at(image, 160, 40) == BLUE
    assert _colour_at(image, 100, 160) == ORANGE
    assert image[100, 100].tolist() == [0, 0, 0]  # no link between unconnected points


def test_keypoints_at_or_below_threshold_are_not_drawn():
    person = _standing()
    person[0, K["left_elbow"], 2] = 0.3  # exactly the threshold: hidden, and so are both its links
    image = render_skeleton(person, 200, 200)
    for other in ("left_shoulder", "left_wrist"):
        x = (person[0, K["left_elbow"], 0] + person[0, K[other], 0]) / 2
        y = (person[0, K["left_elbow"], 1] + person[0, K[other], 1]) / 2
        assert _colour_at(image, x, y) == (0, 0, 0)
    assert _colour_at(image, 150, 95) == (0, 0, 0)  # no dot where the elbow is
    nothing = render_skeleton(_standing() * np.float32([1, 1, 0]), 200, 200)
    assert not nothing.any()
    custom = render_skeleton(_standing(), 200, 200, style=SkeletonStyle(threshold=0.95))
    assert not custom.any()  # every score is 0.9


def _band_width(image: np.ndarray, column: int) -> int:
    return int((image[:, column].any(axis=1)).sum())


@pytest.mark.parametrize("short_side, expected", [(1080, 12), (540, 6), (270, 3), (50, 1)])
def test_stroke_scales_with_the_short_side(short_side, expected):
    style = SkeletonStyle(draw_keypoints=False)
    assert style.stroke(short_side, short_side * 2) == expected
    assert style.stroke(short_side * 2, short_side) == expected
    person = _person({"left_shoulder": (0.2 * short_side, short_side / 2), "right_shoulder": (1.8 * short_side, short_side / 2)})
    image = render_skeleton(person, short_side, short_side * 2, style=style)
    width = _band_width(image, short_side)  # a horizontal orange line, measured across
    assert expected <= width <= expected + 2, (short_side, width)


def test_two_people_and_canvas():
    people = np.concatenate([_standing(scale=0.5), _standing(scale=0.5, dx=100)])
    image = render_skeleton(people, 200, 200, style=LINES_ONLY)
    for dx in (0, 100):  # each person's shoulder line
        assert _colour_at(image, 50 + dx, 30) == ORANGE
    canvas = np.full((200, 200, 3), 77, np.uint8)
    drawn = render_skeleton(people, 200, 200, style=LINES_ONLY, canvas=canvas)
    assert (canvas == 77).all()  # the canvas is copied, not drawn on
    assert _colour_at(drawn, 50, 30) == ORANGE and _colour_at(drawn, 5, 195) == (77, 77, 77)
    with pytest.raises(ValueError, match="canvas"):
        render_skeleton(people, 100, 200, canvas=canvas)


def test_empty_and_sequences():
    assert not render_skeleton(empty_keypoints(), 32, 48).any()
    frames = render_sequence([_standing(), empty_keypoints(), _standing(scale=0.5)], 200, 200)
    assert frames.shape == (3, 200, 200, 3) and frames.dtype == np.uint8
    assert frames[0].any() and not frames[1].any() and frames[2].any()
    assert render_sequence([], 8, 8).shape == (0, 8, 8, 3)


def test_scale_keypoints_keeps_scores():
    person = _standing()
    scaled = scale_keypoints(person, 2.0, 0.5, offset_x=10, offset_y=3)
    np.testing.assert_allclose(scaled[..., 0], person[..., 0] * 2 - 10)
    np.testing.assert_allclose(scaled[..., 1], person[..., 1] * 0.5 - 3)
    np.testing.assert_array_equal(scaled[..., 2], person[..., 2])
    with pytest.raises(ValueError, match="stroke_per_1080"):
        SkeletonStyle(stroke_per_1080=0)


def test_non_finite_or_absurd_visible_keypoints_are_refused_cleanly():
    hidden = _standing()
    hidden[0, K["left_wrist"], 2] = 0.0
    for value, message in [(np.nan, "not finite"), (np.inf, "not finite"), (1e12, "1e\\+12 px, beyond")]:
        broken = _standing()
        broken[0, K["left_wrist"], 0] = value
        with pytest.raises(ValueError, match=f"cannot draw the skeleton: a keypoint.*{message}"):
            render_skeleton(broken, 64, 64)
        broken[0, K["left_wrist"], 2] = 0.0  # not visible: not drawn, so not refused
        assert np.array_equal(render_skeleton(broken, 64, 64), render_skeleton(hidden, 64, 64))
