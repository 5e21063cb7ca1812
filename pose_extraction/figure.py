"""Draw a humanoid figure (thick limbs, a torso, a head) from COCO-17 keypoints, and its silhouette.

The figure is a pure function of the keypoints and the image size: limb width and
head radius are fractions of the torso length (mid-shoulders to mid-hips), the head
is centred on the mean of the visible face keypoints. So the silhouette of any pose,
at any resolution, can be redrawn from its keypoints alone: the generator paints
images with it, and the toy metrics compare generated figures with it.

Drawing is binary (no anti-aliasing): every pixel is the figure colour or the
background colour. Coordinates are drawn with 1/16-pixel precision (cv2's
``shift``), pixel centres at integers, as in the keypoint layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from datasets.keypoints import as_keypoints

FACE = (0, 1, 2, 3, 4)
"""Nose, eyes and ears: the head is centred on their mean."""
LIMBS: tuple[tuple[int, int], ...] = (
    (5, 7), (7, 9), (6, 8), (8, 10),  # arms
    (11, 13), (13, 15), (12, 14), (14, 16),  # legs
    (5, 6), (11, 12), (5, 11), (6, 12),  # torso outline
)  # fmt: skip
TORSO = (5, 6, 12, 11)
"""Left shoulder, right shoulder, right hip, left hip: the filled torso quadrilateral."""
SHIFT = 4
_ONE = 1 << SHIFT


@dataclass(frozen=True, kw_only=True)
class FigureStyle:
    """Proportions of the drawn figure, relative to its torso length."""

    limb_width: float = 0.3
    """Width of limbs, neck and torso outline as a fraction of the torso length (at least one pixel)."""
    head_radius: float = 0.4
    """Radius of the head disc as a fraction of the torso length (at least one pixel)."""
    threshold: float = 0.0
    """Keypoints with a score at or below this are not drawn (nor the parts that need them)."""

    def __post_init__(self) -> None:
        if not 0 < self.limb_width <= 2 or not 0 < self.head_radius <= 2:
            raise ValueError(f"limb_width and head_radius must be in (0, 2], got {self.limb_width}, {self.head_radius}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_FIGURE_STYLE = FigureStyle()


def torso_length(person: np.ndarray) -> float:
    """Distance from the mid-shoulders to the mid-hips of one ``(17, 3)`` person (pixels)."""
    shoulders = (person[5, :2] + person[6, :2]) / 2
    hips = (person[11, :2] + person[12, :2]) / 2
    return float(np.linalg.norm(shoulders - hips))


def head_centre(person: np.ndarray, threshold: float = 0.0) -> np.ndarray | None:
    """Mean of the visible face keypoints of one person, or None when none is visible."""
    face = person[list(FACE)]
    visible = face[face[:, 2] > threshold]
    return None if len(visible) == 0 else visible[:, :2].mean(axis=0)


def part_sizes(person: np.ndarray, style: FigureStyle = DEFAULT_FIGURE_STYLE) -> tuple[float, float]:
    """``(limb width, head radius)`` in pixels for one person (at least one pixel each)."""
    torso = torso_length(person)
    return max(1.0, style.limb_width * torso), max(1.0, style.head_radius * torso)


def _fixed(point) -> tuple[int, int]:
    return int(round(float(point[0]) * _ONE)), int(round(float(point[1]) * _ONE))


def _capsule(mask: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """A segment of ``width`` with round ends (cv2's thick lines are wider than asked and only whole pixels)."""
    half = max(width - 1.0, 0.0) / 2  # filled shapes include their boundary pixels: about ``width`` pixels wide
    direction = b - a
    length = float(np.linalg.norm(direction))
    if length > 1e-6:
        normal = np.array([-direction[1], direction[0]]) / length * half
        corners = np.array([_fixed(a + normal), _fixed(b + normal), _fixed(b - normal), _fixed(a - normal)], dtype=np.int32)
        cv2.fillConvexPoly(mask, corners, 255, cv2.LINE_8, SHIFT)
    for end in (a, b):
        cv2.circle(mask, _fixed(end), int(round(half * _ONE)), 255, -1, cv2.LINE_8, SHIFT)


def _draw_person(mask: np.ndarray, person: np.ndarray, style: FigureStyle) -> None:
    visible = person[:, 2] > style.threshold
    width, radius = part_sizes(person, style)
    if visible[list(TORSO)].all():
        polygon = np.array([_fixed(person[i]) for i in TORSO], dtype=np.int32)
        cv2.fillPoly(mask, [polygon], 255, cv2.LINE_8, SHIFT)
    for a, b in LIMBS:
        if visible[a] and visible[b]:
            _capsule(mask, person[a, :2], person[b, :2], width)
    centre = head_centre(person, style.threshold)
    if centre is not None:
        if visible[5] and visible[6]:
            neck = (person[5, :2] + person[6, :2]) / 2
            _capsule(mask, neck, centre, width)
        cv2.circle(mask, _fixed(centre), int(round(radius * _ONE)), 255, -1, cv2.LINE_8, SHIFT)


def silhouette(keypoints, height: int, width: int, style: FigureStyle = DEFAULT_FIGURE_STYLE) -> np.ndarray:
    """``(H, W)`` bool mask of the figure(s) drawn from ``(P, 17, 3)`` keypoints in pixels of that image."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    mask = np.zeros((height, width), dtype=np.uint8)
    for person in as_keypoints(keypoints):
        if np.isfinite(person).all():
            _draw_person(mask, person, style)
    return mask > 0


def silhouettes(keypoints_per_frame, height: int, width: int, style: FigureStyle = DEFAULT_FIGURE_STYLE) -> np.ndarray:
    """``(T, H, W)`` bool masks, one per frame's ``(P, 17, 3)`` keypoints."""
    masks = [silhouette(k, height, width, style) for k in keypoints_per_frame]
    return np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)


def paint(mask: np.ndarray, figure_rgb, background_rgb) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``figure_rgb`` where ``mask``, ``background_rgb`` elsewhere."""
    figure = np.asarray(figure_rgb, dtype=np.uint8).reshape(1, 1, 3)
    background = np.asarray(background_rgb, dtype=np.uint8).reshape(1, 1, 3)
    return np.where(mask[..., None], figure, background)


def render_figure(keypoints, height: int, width: int, figure_rgb, background_rgb, style: FigureStyle = DEFAULT_FIGURE_STYLE):
    """``(image, mask)``: the figure of ``keypoints`` painted in ``figure_rgb`` over a uniform ``background_rgb``."""
    mask = silhouette(keypoints, height, width, style)
    return paint(mask, figure_rgb, background_rgb), mask


def extent_margins(style: FigureStyle = DEFAULT_FIGURE_STYLE) -> tuple[float, float]:
    """``(limb half-width, head radius)`` per unit of torso length: how far the drawing reaches past the keypoints."""
    return style.limb_width / 2, style.head_radius
