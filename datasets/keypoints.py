"""The COCO-17 keypoint layout used by every record, model and metric.

Keypoints are stored as float32 arrays of shape ``(persons, 17, 3)`` holding
``x, y, score`` in pixels of the stored image (origin top-left, x to the
right). A keypoint is *visible* when its score is above a threshold chosen by
whoever reads it (the builder records the one it used).
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 17

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Per-keypoint OKS sigmas of the COCO keypoint benchmark (same order as the names).
COCO17_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
    dtype=np.float32,
) / 10.0

# Left/right pairs, for horizontal flips.
COCO17_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)


MAX_COORDINATE = float(2**20)
"""Keypoint coordinates beyond +-this many pixels (about a million) are corrupt data: no image is that large."""


def coordinate_problem(values: np.ndarray) -> str | None:
    """Why ``(..., 3)`` keypoint values cannot be used (a value not finite, a coordinate absurdly far), or None."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values).all(axis=-1)][0]
        return f"a keypoint is not finite ({bad.tolist()})"
    far = np.abs(values[..., :2]).max(initial=0.0)
    if far > MAX_COORDINATE:
        return f"a keypoint coordinate is {far:.4g} px, beyond the +-{MAX_COORDINATE:.0f} px any image can have"
    return None


def checked_keypoints(value) -> np.ndarray:
    """:func:`as_keypoints`, raising ``ValueError`` for non-finite values or absurd coordinates."""
    keypoints = as_keypoints(value)
    problem = coordinate_problem(keypoints)
    if problem:
        raise ValueError(problem)
    return keypoints


def empty_keypoints(persons: int = 0) -> np.ndarray:
    """An all-zero keypoint array for ``persons`` people."""
    return np.zeros((persons, NUM_KEYPOINTS, 3), dtype=np.float32)


def as_keypoints(value) -> np.ndarray:
    """Coerce nested lists or an array into the canonical ``(P, 17, 3)`` float32 layout."""
    array = np.asarray(value, dtype=np.float32)
    if array.size == 0:
        return empty_keypoints()
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape (persons, 17, 3), got {array.shape}")
    return array


def visible_counts(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """Number of keypoints with score above ``threshold``, per person: shape ``(P,)``."""
    keypoints = as_keypoints(keypoints)
    return (keypoints[..., 2] > threshold).sum(axis=1).astype(np.int32)


def boxes_from_keypoints(keypoints: np.ndarray, threshold: float = 0.0, pad: float = 0.0) -> np.ndarray:
    """Tight ``x1, y1, x2, y2`` boxes around the visible keypoints of each person.

    People with no visible keypoint get an all-zero box. ``pad`` grows each
    side by that fraction of the box size.
    """
    keypoints = as_keypoints(keypoints)
    boxes = np.zeros((len(keypoints), 4), dtype=np.float32)
    for index, person in enumerate(keypoints):
        visible = person[person[:, 2] > threshold, :2]
        if len(visible) == 0:
            continue
        x1, y1 = visible.min(axis=0)
        x2, y2 = visible.max(axis=0)
        dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
        boxes[index] = (x1 - dx, y1 - dy, x2 + dx, y2 + dy)
    return boxes
