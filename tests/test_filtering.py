"""The LAION-Pose keep/reject rule: more than half of the 17 keypoints visible on some person."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.keypoints import empty_keypoints
from pose_extraction.estimator import Poses
from pose_extraction.filtering import VisibilityConfig, VisibilityFilter


def _poses(*visible_counts: int, score: float = 0.9, hidden: float = 0.1) -> Poses:
    keypoints = empty_keypoints(len(visible_counts))
    keypoints[..., :2] = 50.0
    keypoints[..., 2] = hidden
    for person, count in enumerate(visible_counts):
        keypoints[person, :count, 2] = score
    boxes = np.tile(np.float32([0, 0, 100, 100]), (len(visible_counts), 1))
    return Poses(keypoints, boxes, np.ones(len(visible_counts), np.float32))


DEFAULT = VisibilityFilter(VisibilityConfig())


def test_more_than_half_is_the_default_rule():
    assert VisibilityConfig().min_visible == 9
    assert DEFAULT(_poses(8)).status == "too_few_keypoints"
    assert DEFAULT(_poses(9)).status == "kept"
    assert DEFAULT(_poses(17)).status == "kept"
    assert DEFAULT(_poses(0)).status == "too_few_keypoints"


def test_no_person():
    verdict = DEFAULT(Poses.empty())
    assert verdict.status == "no_person" and verdict.max_visible == 0 and len(verdict.visible_per_person) == 0


def test_any_one_person_is_enough_and_counts_are_reported():
    verdict = DEFAULT(_poses(3, 9, 8))
    assert verdict.status == "kept"
    assert verdict.visible_per_person.tolist() == [3, 9, 8] and verdict.max_visible == 9
    assert DEFAULT(_poses(8, 8, 8)).status == "too_few_keypoints"  # many half-seen people do not add up


def test_score_must_be_above_the_threshold():
    assert DEFAULT(_poses(17, score=0.3)).status == "too_few_keypoints"  # at the threshold: not visible
    assert DEFAULT(_poses(17, score=0.3001)).status == "kept"


def test_thresholds_are_configurable():
    strict = VisibilityFilter(VisibilityConfig(keypoint_threshold=0.5, min_visible_fraction=0.7))
    assert strict.config.min_visible == 12  # more than 0.7 * 17 = 11.9
    assert strict(_poses(12, score=0.6)).status == "kept"
    assert strict(_poses(11, score=0.6)).status == "too_few_keypoints"
    assert strict(_poses(17, score=0.45)).status == "too_few_keypoints"
    lenient = VisibilityFilter(VisibilityConfig(keypoint_threshold=0.05, min_visible_fraction=0.0))
    assert lenient.config.min_visible == 1
    assert lenient(_poses(0)).status == "kept"  # every keypoint scores 0.1 > 0.05
    assert lenient(_poses(0, hidden=0.0)).status == "too_few_keypoints"


@pytest.mark.parametrize("field, value", [("keypoint_threshold", 1.0), ("keypoint_threshold", -0.1), ("min_visible_fraction", 1.0)])
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        VisibilityConfig(**{field: value})
