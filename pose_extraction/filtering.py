"""The LAION-Pose keep/reject rule: enough visible keypoints on at least one person."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.keypoints import NUM_KEYPOINTS, visible_counts
from pose_extraction.estimator import Poses


@dataclass(frozen=True, kw_only=True)
class VisibilityConfig:
    """When an image is kept."""

    keypoint_threshold: float = 0.3
    """A keypoint is visible when its score is above this."""
    min_visible_fraction: float = 0.5
    """Keep when some person has *more than* this fraction of the 17 keypoints visible (the paper: more than half)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.keypoint_threshold < 1.0:
            raise ValueError("keypoint_threshold must be in [0, 1)")
        if not 0.0 <= self.min_visible_fraction < 1.0:
            raise ValueError("min_visible_fraction must be in [0, 1)")

    @property
    def min_visible(self) -> int:
        """Smallest visible-keypoint count that passes: more than ``fraction * 17`` (9 for one half)."""
        return int(np.floor(self.min_visible_fraction * NUM_KEYPOINTS)) + 1


@dataclass(frozen=True)
class Verdict:
    status: str
    """``kept``, ``no_person`` or ``too_few_keypoints``."""
    visible_per_person: np.ndarray
    """Visible keypoints of each person, ``(P,)`` int32."""

    @property
    def max_visible(self) -> int:
        return int(self.visible_per_person.max()) if len(self.visible_per_person) else 0


class VisibilityFilter:
    """Decides whether an image's poses qualify it for LAION-Pose."""

    def __init__(self, config: VisibilityConfig) -> None:
        self.config = config

    def __call__(self, poses: Poses) -> Verdict:
        visible = visible_counts(poses.keypoints, self.config.keypoint_threshold)
        if len(poses) == 0:
            return Verdict("no_person", visible)
        if visible.max() >= self.config.min_visible:
            return Verdict("kept", visible)
        return Verdict("too_few_keypoints", visible)
