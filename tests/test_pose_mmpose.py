"""MMPose top-down backend built from the configs shipped in mmpose/mmdet, with random weights.

No trained checkpoint is reachable here, so the tests build the shipped
HRNet-w32 and RTMDet-tiny configs with random weights, nudge two biases so
the random models give usable outputs (positive heatmaps, some person boxes),
save them as checkpoints and load them back through the path a user's real
checkpoint takes. Config overrides keep the tests cheap (see FAST).
"""

from __future__ import annotations

import numpy as np
import pytest

from pose_extraction.backends import PoseConfig, build_estimator
from pose_extraction.mmpose_backend import load_weights

# No flip test (half the pose cost); fewer pre-NMS candidates (the random detector scores thousands of anchors).
FAST = {"pose_cfg_options": {"model.test_cfg.flip_test": False}, "det_cfg_options": {"model.test_cfg.nms_pre": 500}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """HRNet on 1 thread: on a 2-core machine shared with other jobs, 2 OpenMP threads run several times slower."""


def _config(**changes) -> PoseConfig:
    return PoseConfig.of("mmpose", det_score_threshold=0.0, det_max_persons=3, **FAST, **changes)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The random models of an estimator made usable, saved as checkpoints; also returns that estimator (batch 16)."""
    import torch

    folder = tmp_path_factory.mktemp("mmpose")
    torch.manual_seed(0)  # the same random models on every run
    estimator = build_estimator(_config(allow_random_weights=True, batch_size=16))
    assert estimator.random_weights
    with torch.no_grad():
        estimator.pose_model.head.final_layer.bias += 0.4  # heatmap maxima in (0, 1): real locations and scores
        for layer in estimator.detector.bbox_head.rtm_cls:
            layer.bias[estimator.person_label] += 4.0  # the random detector now proposes people...
        for layer in estimator.detector.bbox_head.rtm_reg:
            layer.bias += 2.0  # ...in boxes a few strides wide instead of sub-pixel ones
    pose, det = folder / "pose.pth", folder / "det.pth"
    torch.save({"state_dict": estimator.pose_model.state_dict(), "meta": {}}, pose)
    torch.save({"state_dict": estimator.detector.state_dict()}, det)
    return str(pose), str(det), estimator


@pytest.fixture(scope="module")
def batch16(checkpoints):
    return checkpoints[2]


@pytest.fixture(scope="module")
def batch1(checkpoints):
    pose, det, _ = checkpoints
    with build_estimator(_config(pose_checkpoint=pose, det_checkpoint=det, batch_size=1)) as estimator:
        yield estimator


def _images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(240, 320, 3), (300, 200, 3), (480, 640, 3)]]


BOXES = [
    np.array([[20, 30, 140, 220], [150, 10, 300, 120]], np.float32),
    np.zeros((0, 4), np.float32),
    np.array([[300, 100, 420, 400], [10, 10, 630, 470], [500, 300, 600, 460]], np.float32),
]


def test_batch_size_does_not_change_results(batch1, batch16):
    images = _images()
    one = batch1.estimate_in_boxes(images, BOXES)
    many = batch16.estimate_in_boxes(images, BOXES)
    assert [len(poses) for poses in one] == [2, 0, 3]
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.keypoints[..., :2], b.keypoints[..., :2], atol=1e-2)
        np.testing.assert_allclose(a.keypoints[..., 2], b.keypoints[..., 2], atol=1e-4)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    scores = np.concatenate([poses.keypoints[..., 2].ravel() for poses in many])
    assert (scores > 0).mean() > 0.4 and len(np.unique(scores)) > 10  # real heatmap maxima (0 only off the image)


def test_output_layout_and_empty_cases(batch16):
    images = _images()
    poses = batch16.estimate_in_boxes(images, BOXES, [np.array([0.9, 0.5]), np.zeros(0), np.array([1.0, 0.2, 0.7])])
    for found, boxes in zip(poses, BOXES):
        assert found.keypoints.dtype == np.float32 and found.keypoints.shape == (len(boxes), 17, 3)
        assert found.boxes.dtype == np.float32 and found.boxes.shape == (len(boxes), 4)
        assert found.box_scores.dtype == np.float32
    np.testing.assert_array_equal(poses[0].box_scores, np.float32([0.9, 0.5]))
    assert len(poses[1]) == 0 and poses[1].keypoints.shape == (0, 17, 3)
    assert batch16.estimate_in_boxes([], []) == []
    assert all(len(p) == 0 for p in batch16.estimate_in_boxes(images, [np.zeros((0, 4))] * 3))


def _crop_region(box: np.ndarray) -> np.ndarray:
    """The image region HRNet's test pipeline crops for ``box``: 1.25x padding, widened to 192:256."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = (box[2] - box[0]) * 1.25, (box[3] - box[1]) * 1.25
    w, h = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_keypoints_land_in_their_box_in_image_pixels(batch16):
    images = _images()
    for image, boxes, poses in zip(images, BOXES, batch16.estimate_in_boxes(images, BOXES)):
        height, width = image.shape[:2]
        for box, person in zip(boxes, poses.keypoints):
            x1, y1, x2, y2 = _crop_region(box)
            x, y = person[:, 0], person[:, 1]
            assert ((x >= max(x1, 0) - 1) & (x <= min(x2, width - 1) + 1)).all(), (box, x)
            assert ((y >= max(y1, 0) - 1) & (y <= min(y2, height - 1) + 1)).all(), (box, y)


def test_same_person_elsewhere_in_another_image_moves_by_the_offset(batch16):
    # One patch, placed at different spots of two images of different sizes, with its surroundings equal
    # over the whole crop region: the keypoints must differ exactly by the placement offset.
    patch = np.random.default_rng(3).integers(0, 256, (160, 120, 3), dtype=np.uint8)
    small, large = np.zeros((260, 220, 3), np.uint8), np.zeros((700, 900, 3), np.uint8)
    small[50:210, 50:170] = patch
    large[400:560, 610:730] = patch
    boxes = [np.array([[50, 50, 170, 210]], np.float32), np.array([[610, 400, 730, 560]], np.float32)]
    first, second = batch16.estimate_in_boxes([small, large], boxes)
    assert (first.keypoints[0, :, 2] > 0).all()
    np.testing.assert_allclose(second.keypoints[0, :, :2] - first.keypoints[0, :, :2], [[560, 350]] * 17, atol=0.05)
    np.testing.assert_allclose(second.keypoints[0, :, 2], first.keypoints[0, :, 2], atol=1e-4)


def test_detection_path_batched_with_nms(batch1, batch16):
    images = _images()[:2]  # two sizes; RTMDet pads each to 640x640
    one, many = batch1(images), batch16(images)
    for image, a, b in zip(images, one, many):
        height, width = image.shape[:2]
        assert 1 <= len(a) <= 3 and len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.keypoints[..., :2], b.keypoints[..., :2], atol=1e-2)
        assert (a.boxes[:, [0, 2]] >= 0).all() and (a.boxes[:, [0, 2]] <= width).all()
        assert (a.boxes[:, [1, 3]] >= 0).all() and (a.boxes[:, [1, 3]] <= height).all()
        assert (np.diff(a.box_scores) <= 0).all() and (a.box_scores > 0).all()
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                assert _iou(a.boxes[i], a.boxes[j]) <= 0.65 + 1e-6


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_bad_boxes_and_images(batch16):
    image = _images()[0]
    with pytest.raises(ValueError, match="no area"):
        batch16.estimate_in_boxes([image], [np.array([[500, 500, 600, 600]])])  # entirely off the image
    with pytest.raises(ValueError, match="as many box arrays"):
        batch16.estimate_in_boxes([image, image], [BOXES[0]])
    with pytest.raises(ValueError, match="RGB uint8"):
        batch16([image.astype(np.float32)])


def test_random_weights_need_permission(tmp_path):
    with pytest.raises(ValueError, match="pose_checkpoint.*det_checkpoint.*allow_random_weights"):
        build_estimator(PoseConfig(backend="mmpose"))
    with pytest.raises(ValueError, match="no pose_checkpoint") as error:
        build_estimator(PoseConfig.of("mmpose", whole_image_when_no_detector=True))
    assert "det_checkpoint" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="pose_checkpoint"):
        build_estimator(PoseConfig.of("mmpose", pose_checkpoint=str(tmp_path / "absent.pth"), det_checkpoint="x"))


def test_checkpoint_must_fit_the_config(checkpoints, tmp_path):
    import torch

    _, det, estimator = checkpoints
    with pytest.raises(ValueError, match="does not fit the model config"):
        load_weights(estimator.pose_model, det)  # detector weights into the pose model
    (tmp_path / "odd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        load_weights(estimator.pose_model, str(tmp_path / "odd.pth"))
    torch.save({"state_dict": {}, "meta": {"oops": np.float64(1.0)}}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="trust_checkpoint"):
        load_weights(estimator.pose_model, str(tmp_path / "pickled.pth"))


def test_whole_image_mode_and_name(checkpoints):
    pose, _, _ = checkpoints
    with build_estimator(_config(pose_checkpoint=pose, whole_image_when_no_detector=True)) as estimator:
        assert estimator.detector is None
        assert estimator.name == "mmpose/td-hm_hrnet-w32_8xb64-210e_coco-256x192+whole-image"
        image = _images()[1]
        (poses,) = estimator([image])
    np.testing.assert_array_equal(poses.boxes, [[0, 0, 200, 300]])
    with pytest.raises(RuntimeError, match="closed"):
        estimator([image])


def test_unknown_config_name():
    with pytest.raises(FileNotFoundError, match="no config named 'hrnet-w99'"):
        build_estimator(PoseConfig.of("mmpose", pose_config="hrnet-w99", allow_random_weights=True))


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, offset: int) -> list[int]:
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        best, order = order[0], order[1:]
        keep.append(int(best))
        a = boxes[best]
        survivors = []
        for other in order:
            b = boxes[other]
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
            area = lambda box: (box[2] - box[0] + offset) * (box[3] - box[1] + offset)  # noqa: E731
            if w * h / (area(a) + area(b) - w * h) <= threshold:
                survivors.append(other)
        order = survivors
    return keep


def test_mmcv_ops_stand_in_or_real():
    import torch

    from pose_extraction.mmcv_ops import ensure_mmcv_ops, is_standin

    ext = ensure_mmcv_ops()
    assert ensure_mmcv_ops() is ext
    import mmcv.ops  # imports because mmcv._ext resolves

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 80, (40, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(2, 30, (40, 2)).astype(np.float32)], axis=1)
    scores = rng.permutation(40).astype(np.float32) / 40
    for offset in (0, 1):
        kept = ext.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold=0.3, offset=offset)
        assert kept.tolist() == _reference_nms(boxes, scores, 0.3, offset)
    dets, kept = mmcv.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    assert kept.tolist() == _reference_nms(boxes, scores, 0.3, 0)
    if not is_standin(ext):
        return  # the real compiled ops are installed: nothing of ours is in the way
    with pytest.raises(NotImplementedError, match="'roi_align_forward'.*full mmcv"):
        ext.roi_align_forward(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="deform_conv"):
        mmcv.ops.DeformConv2d(4, 4, 3)(torch.zeros(1, 4, 8, 8), torch.zeros(1, 18, 6, 6))


def test_real_mmcv_ext_is_left_alone(tmp_path):
    # A process whose mmcv has an _ext of its own gets that one back, not the stand-in.
    import subprocess
    import sys

    (tmp_path / "_ext.py").write_text("def nms(*args, **kwargs):\n    return 'the real one'\n")
    code = (
        "import mmcv, sys\n"
        f"mmcv.__path__.append({str(tmp_path)!r})\n"
        "from pose_extraction.mmcv_ops import ensure_mmcv_ops, is_standin\n"
        "ext = ensure_mmcv_ops()\n"
        "assert not is_standin(ext) and ext.nms() == 'the real one' and sys.modules['mmcv._ext'] is ext\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
