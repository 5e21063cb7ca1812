"""MediaPipe BlazePose backend on real photos that ship with installed packages.

The face regions below were read off the photos by eye (pixel boxes
``x1, y1, x2, y2`` in the photos as the fixtures load them).
"""

from __future__ import annotations

import numpy as np
import pytest

from datasets.keypoints import COCO17_NAMES
from pose_extraction.backends import PoseConfig, build_estimator
from pose_extraction.estimator import Poses
from pose_extraction.filtering import VisibilityConfig, VisibilityFilter

K = {name: index for index, name in enumerate(COCO17_NAMES)}
HEAD = [K["nose"], K["left_eye"], K["right_eye"], K["left_ear"], K["right_ear"]]
FACES = {
    "astronaut": (170, 60, 285, 180),
    "camera": (175, 95, 270, 205),
    "grace_hopper": (190, 140, 360, 330),
}


@pytest.fixture(scope="module")
def estimator():
    with build_estimator(PoseConfig(backend="mediapipe")) as built:
        yield built


@pytest.fixture(scope="module")
def found(estimator, people_photos) -> dict[str, Poses]:
    names = sorted(people_photos)
    return dict(zip(names, estimator([people_photos[name] for name in names])))


def test_one_person_per_photo_in_image_pixels(estimator, found, people_photos):
    assert estimator.name == "mediapipe/blazepose-full"
    for name, poses in found.items():
        height, width = people_photos[name].shape[:2]
        assert len(poses) == 1, name
        assert poses.keypoints.shape == (1, 17, 3) and poses.keypoints.dtype == np.float32
        xy = poses.keypoints[0, :, :2]
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= width - 1).all(), name
        assert (xy[:, 1] >= 0).all() and (xy[:, 1] <= height - 1).all(), name
        scores = poses.keypoints[0, :, 2]
        assert ((scores >= 0) & (scores <= 1)).all()
        assert 0 < poses.box_scores[0] <= 1


def test_head_and_shoulders_found_where_the_face_is(found):
    for name, (x1, y1, x2, y2) in FACES.items():
        person = found[name].keypoints[0]
        assert (person[HEAD, 2] > 0.5).all(), (name, person[HEAD, 2])
        assert (person[[K["left_shoulder"], K["right_shoulder"]], 2] > 0.5).all(), name
        for index in [K["nose"], K["left_eye"], K["right_eye"]]:
            x, y = person[index, :2]
            assert x1 <= x <= x2 and y1 <= y <= y2, (name, COCO17_NAMES[index], x, y)


def test_body_order_top_to_bottom(found):
    for name in ("astronaut", "grace_hopper"):  # upright, facing the camera
        person = found[name].keypoints[0]
        eyes_y = person[[K["left_eye"], K["right_eye"]], 1].max()
        shoulders_y = person[[K["left_shoulder"], K["right_shoulder"]], 1].min()
        assert eyes_y < person[K["nose"], 1] < shoulders_y, name
    person = found["camera"].keypoints[0]  # bent over his camera: hips visible, far below the head
    hips = person[[K["left_hip"], K["right_hip"]]]
    assert (hips[:, 2] > 0.5).all()
    assert person[K["nose"], 1] < person[K["right_shoulder"], 1] < hips[:, 1].min()
    assert hips[:, 1].min() - person[K["nose"], 1] > 100


def test_left_and_right_not_swapped(found):
    # Facing the camera, the person's left side is on the image's right.
    for name in ("astronaut", "grace_hopper"):
        person = found[name].keypoints[0]
        for left, right in [("left_eye", "right_eye"), ("left_ear", "right_ear"), ("left_shoulder", "right_shoulder")]:
            assert person[K[left], 0] > person[K[right], 0] + 5, (name, left)


def test_points_outside_the_frame_score_zero(found, people_photos):
    # Both portraits end above the knees: BlazePose still predicts ankles below the frame.
    for name in ("astronaut", "grace_hopper"):
        person = found[name].keypoints[0]
        height = people_photos[name].shape[0]
        for part in ("left_knee", "right_knee", "left_ankle", "right_ankle"):
            assert person[K[part], 2] == 0.0, (name, part)
            assert person[K[part], 1] == height - 1, (name, part)  # clipped to the border


def test_box_holds_the_visible_keypoints(found):
    for name, poses in found.items():
        x1, y1, x2, y2 = poses.boxes[0]
        visible = poses.keypoints[0][poses.keypoints[0, :, 2] > 0.3, :2]
        assert x1 < x2 and y1 < y2
        assert (visible[:, 0] >= x1).all() and (visible[:, 0] <= x2).all(), name
        assert (visible[:, 1] >= y1).all() and (visible[:, 1] <= y2).all(), name


def test_laion_pose_rule_on_real_photos(found):
    verdicts = {name: VisibilityFilter(VisibilityConfig())(poses).status for name, poses in found.items()}
    # The cameraman shows most of his body; Grace Hopper's portrait shows head and shoulders only.
    assert verdicts["camera"] == "kept"
    assert verdicts["grace_hopper"] == "too_few_keypoints"


def test_nobody_in_scenery(estimator, scenery_photo):
    (poses,) = estimator([scenery_photo])
    assert len(poses) == 0 and poses.keypoints.shape == (0, 17, 3) and poses.boxes.shape == (0, 4)


def test_keypoints_follow_image_scale(estimator, found, people_photos):
    big = np.repeat(np.repeat(people_photos["astronaut"], 2, axis=0), 2, axis=1)
    (poses,) = estimator([big])
    reference = found["astronaut"].keypoints[0]
    steady = reference[:, 2] > 0.9
    assert steady.sum() >= 5
    error = np.abs(poses.keypoints[0, steady, :2] / 2 - reference[steady, :2])
    assert error.max() < 8, error


def test_two_people_with_masked_reruns(people_photos):
    pair = np.concatenate([people_photos["astronaut"], people_photos["grace_hopper"][:512]], axis=1)
    with build_estimator(PoseConfig.of("mediapipe", max_persons=3)) as estimator:
        (poses,) = estimator([pair])
    assert len(poses) == 2
    noses_x = sorted(poses.keypoints[:, K["nose"], 0])
    assert noses_x[0] < 512 < noses_x[1]
    assert (poses.keypoints[:, K["nose"], 2] > 0.5).all()


def test_bad_inputs(estimator):
    with pytest.raises(ValueError, match="RGB uint8"):
        estimator([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="RGB uint8"):
        estimator([np.zeros((32, 32), np.uint8)])
    assert estimator([]) == []
    tiny, blank = estimator([np.zeros((1, 1, 3), np.uint8), np.full((64, 48, 3), 200, np.uint8)])
    assert len(tiny) == 0 and len(blank) == 0


@pytest.mark.parametrize("complexity", [0, 2])
def test_models_that_would_download_are_refused(complexity):
    with pytest.raises(FileNotFoundError, match="model_complexity=1"):
        build_estimator(PoseConfig.of("mediapipe", model_complexity=complexity))


def test_closed_estimator_refuses_calls(people_photos):
    estimator = build_estimator(PoseConfig(backend="mediapipe"))
    estimator.close()
    estimator.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        estimator([people_photos["astronaut"]])


class _PoseActor:
    """What a pipeline stage does in a Ray actor: build the estimator once, call it many times."""

    def __init__(self, config: PoseConfig) -> None:
        self.estimator = build_estimator(config)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [poses.keypoints for poses in self.estimator(images)]

    def close(self) -> bool:
        self.estimator.close()
        return True


@pytest.mark.slow
def test_inside_a_ray_actor(people_photos, found):
    import shutil
    import tempfile

    import ray
    started = not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="ray-pose-", dir="/tmp")
    if started:
        ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(_PoseActor).remote(PoseConfig(backend="mediapipe"))
        names = sorted(people_photos)
        for _ in range(2):  # one graph, several calls
            remote = ray.get(actor.__call__.remote([people_photos[name] for name in names]), timeout=300)
            for name, keypoints in zip(names, remote):
                np.testing.assert_allclose(keypoints, found[name].keypoints, atol=1e-3)
        assert ray.get(actor.close.remote(), timeout=60)
        ray.kill(actor)
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
