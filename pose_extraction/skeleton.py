"""Draw COCO-17 skeletons the way the Follow-Your-Pose release did.

The release's pose videos were drawn by MMPose 0.x on a black background: 19
links, head and torso orange, the person's left limbs green and right limbs
blue. MMPose writes its palette in BGR and cv2 draws it as such, so the
colours below are the RGB values that end up in the file (an RGB reading of
the BGR palette would swap orange and blue). The same renderer serves data,
training, generation and evaluation, since the model learns these colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.keypoints import as_keypoints, coordinate_problem

ORANGE = (255, 153, 51)
GREEN = (0, 255, 0)
BLUE = (0, 128, 255)

# (keypoint a, keypoint b, RGB colour), in MMPose 0.x COCO order.
COCO17_LINKS: tuple[tuple[int, int, tuple[int, int, int]], ...] = (
    (15, 13, GREEN),   # left ankle - left knee
    (13, 11, GREEN),   # left knee - left hip
    (16, 14, BLUE),    # right ankle - right knee
    (14, 12, BLUE),    # right knee - right hip
    (11, 12, ORANGE),  # hips
    (5, 11, ORANGE),   # left shoulder - left hip
    (6, 12, ORANGE),   # right shoulder - right hip
    (5, 6, ORANGE),    # shoulders
    (5, 7, GREEN),     # left shoulder - left elbow
    (6, 8, BLUE),      # right shoulder - right elbow
    (7, 9, GREEN),     # left elbow - left wrist
    (8, 10, BLUE),     # right elbow - right wrist
    (1, 2, ORANGE),    # eyes
    (0, 1, ORANGE),    # nose - left eye
    (0, 2, ORANGE),    # nose - right eye
    (1, 3, ORANGE),    # left eye - left ear
    (2, 4, ORANGE),    # right eye - right ear
    (3, 5, ORANGE),    # left ear - left shoulder
    (4, 6, ORANGE),    # right ear - right shoulder
)

COCO17_KEYPOINT_COLORS: tuple[tuple[int, int, int], ...] = (
    (ORANGE,) * 5 + (GREEN, BLUE) * 6
)


@dataclass(frozen=True, kw_only=True)
class SkeletonStyle:
    """How skeletons are drawn."""

    threshold: float = 0.3
    """Keypoints with a score at or below this are not drawn, nor their links."""
    stroke_per_1080: float = 12.0
    """Link width in pixels for an image whose shorter side is 1080 pixels; scales linearly."""
    radius_factor: float = 0.6
    """Keypoint dot radius as a fraction of the link width."""
    draw_keypoints: bool = True
    """Draw a dot at each visible keypoint on top of the links."""

    def __post_init__(self) -> None:
        if self.stroke_per_1080 <= 0:
            raise ValueError("stroke_per_1080 must be positive")

    def stroke(self, height: int, width: int) -> int:
        return max(1, round(self.stroke_per_1080 * min(height, width) / 1080))


DEFAULT_STYLE = SkeletonStyle()


def render_skeleton(
    keypoints,
    height: int,
    width: int,
    *,
    style: SkeletonStyle = DEFAULT_STYLE,
    canvas: np.ndarray | None = None,
) -> np.ndarray:
    """Draw every person of ``keypoints`` ``(P, 17, 3)`` on a black ``(H, W, 3)`` uint8 RGB image.

    Pass ``canvas`` to draw over an existing RGB image instead (it is copied). A visible keypoint (score above the
    style's threshold) that is not finite or lies absurdly far away (:data:`datasets.keypoints.MAX_COORDINATE`) is a
    ``ValueError`` saying so, never an OpenCV error.
    """
    keypoints = as_keypoints(keypoints)
    if canvas is None:
        image = np.zeros((height, width, 3), dtype=np.uint8)
    else:
        if canvas.shape[:2] != (height, width):
            raise ValueError(f"canvas is {canvas.shape[:2]}, expected {(height, width)}")
        image = np.ascontiguousarray(canvas[..., :3], dtype=np.uint8).copy()
    stroke = style.stroke(height, width)
    radius = max(1, round(stroke * style.radius_factor))
    for person in keypoints:
        visible = person[:, 2] > style.threshold
        problem = coordinate_problem(person[visible])
        if problem:
            raise ValueError(f"cannot draw the skeleton: {problem}")
        points = np.round(person[:, :2]).astype(np.int64)
        for a, b, color in COCO17_LINKS:
            if visible[a] and visible[b]:
                cv2.line(image, tuple(map(int, points[a])), tuple(map(int, points[b])), color, stroke, cv2.LINE_8)
        if style.draw_keypoints:
            for index in np.flatnonzero(visible):
                cv2.circle(image, tuple(map(int, points[index])), radius, COCO17_KEYPOINT_COLORS[index], -1, cv2.LINE_8)
    return image


def render_sequence(
    keypoints_per_frame,
    height: int,
    width: int,
    *,
    style: SkeletonStyle = DEFAULT_STYLE,
) -> np.ndarray:
    """Render one skeleton image per frame: ``(T, H, W, 3)`` uint8 RGB.

    ``keypoints_per_frame`` is a sequence with one ``(P, 17, 3)`` array per frame
    (people may come and go between frames).
    """
    frames = [render_skeleton(kp, height, width, style=style) for kp in keypoints_per_frame]
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(frames)


def scale_keypoints(keypoints, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0) -> np.ndarray:
    """Map keypoints through ``x' = x * scale_x - offset_x`` (same for y); scores are kept."""
    keypoints = as_keypoints(keypoints).copy()
    keypoints[..., 0] = keypoints[..., 0] * scale_x - offset_x
    keypoints[..., 1] = keypoints[..., 1] * scale_y - offset_y
    return keypoints
