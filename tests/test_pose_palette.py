"""Telling our skeletons from OpenPose-rainbow skeletons and from photos (pose_extraction.palette)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from datasets import video_io
from pose_extraction.palette import classify_frames, measure_frames
from pose_extraction.skeleton import render_sequence

# The OpenPose/ControlNet (controlnet_aux draw_bodypose) convention: 18 RGB colours, 17 limbs of OpenPose-18, limbs
# drawn as filled ellipses at 0.6 of their colour, joints as full-colour dots.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255),
    (255, 0, 170), (255, 0, 85),
)  # fmt: skip
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0),
    (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COCO_FOR_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)  # None: the neck, mean of the shoulders


def draw_rainbow(person: np.ndarray, height: int, width: int) -> np.ndarray:
    """One COCO-17 person ``(17, 3)`` drawn as ControlNet's OpenPose-18 skeleton on black."""
    points = [person[[5, 6], :2].mean(axis=0) if i is None else person[i, :2] for i in COCO_FOR_OPENPOSE]
    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(1, round(4 * min(height, width) / 512))
    for colour, (a, b) in zip(OPENPOSE_COLORS, OPENPOSE_LIMBS):
        (xa, ya), (xb, yb) = points[a], points[b]
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre, axes = (int((xa + xb) / 2), int((ya + yb) / 2)), (int(math.hypot(xa - xb, ya - yb) / 2), stick)
        cv2.fillConvexPoly(canvas, cv2.ellipse2Poly(centre, axes, int(angle), 0, 360, 1), [int(c * 0.6) for c in colour])
    for colour, (x, y) in zip(OPENPOSE_COLORS, points):
        cv2.circle(canvas, (int(x), int(y)), stick, colour, -1)
    return canvas


def walking(frames: int, size: int) -> list[np.ndarray]:
    from tests.test_generation import walking_keypoints

    return walking_keypoints(frames, size)


def through_mp4(frames: np.ndarray, path) -> np.ndarray:
    video_io.write_video(frames, path, 8, crf=16, preset="medium")
    return video_io.read_video(path)[0]


@pytest.mark.parametrize("size", [64, 128, 512])
def test_our_skeletons_and_rainbow_skeletons_raw_and_encoded(size, tmp_path):
    people = walking(6, size)
    ours = render_sequence(people, size, size)
    rainbow = np.stack([draw_rainbow(person[0], size, size) for person in people])
    for frames in (ours, through_mp4(ours, tmp_path / "ours.mp4")):
        figures = measure_frames(frames)
        assert figures.kind == "ours" and figures.palette_share >= 0.85, figures
    for frames in (rainbow, through_mp4(rainbow, tmp_path / "rainbow.mp4")):
        figures = measure_frames(frames)
        assert figures.kind == "rainbow" and figures.palette_share <= 0.55 and figures.hue_sectors >= 9, figures
    assert classify_frames(ours[0]) == "ours" and classify_frames(rainbow[0]) == "rainbow"  # one (H, W, 3) frame
    assert classify_frames(np.zeros((2, size, size, 3), np.uint8)) == "ours"  # nobody seen: our renderer's empty frames


def test_photos_are_photos(people_photos, scenery_photo, tmp_path):
    for name, photo in {**people_photos, "coffee": scenery_photo}.items():
        figures = measure_frames(photo)
        assert figures.kind == "photo" and figures.dark_share < 0.45, (name, figures)
        stage = np.zeros_like(photo)  # the person on a black stage: mostly black, but not in our vivid colours
        stage[: photo.shape[0] // 2, : photo.shape[1] // 2] = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2))
        figures = measure_frames(stage)
        assert figures.kind == "photo" and figures.dark_share > 0.6, (name, figures)
    # a panning photo through H.264 is still a photo; so is our skeleton drawn over a photo
    astronaut = people_photos["astronaut"][:256, :256]
    frames = np.stack([np.roll(astronaut, 8 * i, axis=1) for i in range(4)])
    assert classify_frames(through_mp4(frames, tmp_path / "pan.mp4")) == "photo"
    from pose_extraction.skeleton import render_skeleton

    over = render_skeleton(walking(1, 256)[0], 256, 256, canvas=astronaut)
    assert classify_frames(over) == "photo"


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="RGB"):
        classify_frames(np.zeros((4, 4), np.uint8))
