"""MediaPipe BlazePose as a COCO-17 pose estimator.

BlazePose predicts 33 landmarks for one person per image. This backend keeps
the 17 that COCO defines (:data:`BLAZEPOSE_TO_COCO17`) and reports them in
pixels of the input image:

- **score** is the landmark's ``visibility`` (the model's probability that the
  point is in the frame and not occluded), multiplied by ``presence`` when the
  landmark carries one (the legacy solution of mediapipe 0.10.14 leaves it unset).
- **points outside the image** get a score of 0 and their coordinates are
  clipped to the image border (:func:`pose_extraction.estimator.confine_to_image`,
  the rule of every backend). BlazePose extrapolates the whole body even for
  a head-and-shoulders portrait (ankles far below the frame, sometimes with
  visibility near 0.3); a keypoint that is not in the picture must not count as
  visible for the LAION-Pose filter nor be drawn, and clipping keeps every stored
  coordinate inside the stored image.
- **box** is the box around those of the 33 landmarks that lie inside the image
  (occluded ones included), padded by :data:`BOX_PAD` of its size and clipped
  to the image (the landmarks stop at the eyes and ears, not at
  the top of the head). **box score**: the legacy solution does not expose its
  detector's score, so it is the mean score of the 17 COCO keypoints.

Several people: BlazePose finds one person per pass. With
``max_persons > 1`` the image is run again with every person found so
far painted over (their box filled with the image's mean colour), until nobody
new is found or the limit is reached. This is a heuristic: overlapping people
get masked together, and a person partly covered by another's box may be missed
or found with a wrong pose. Use the MMPose backend (a real person detector)
for crowded images.

The model (a MediaPipe graph) is built once in ``__init__``; the estimator is
then called many times, so a Ray actor or a worker builds one and reuses it.
Call :meth:`MediaPipePoseEstimator.close` (or use it as a context manager) to
free the graph; calls are serialised by a lock, since one graph runs one
image at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pose_extraction.estimator import BackendConfig, Poses, check_rgb_image, confine_to_image, inside_image

# BlazePose landmark index of each COCO-17 keypoint, in COCO order.
BLAZEPOSE_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
NUM_BLAZEPOSE_LANDMARKS = 33

BOX_PAD = 0.05
"""Each side of a person box grows by this fraction of the box's width (x) or height (y)."""

MASK_IOU_LIMIT = 0.5
"""A masked re-run whose person overlaps an earlier one by more than this IoU found the same person: stop."""

_LANDMARK_MODELS = {0: "lite", 1: "full", 2: "heavy"}


@dataclass(frozen=True, kw_only=True)
class MediaPipeConfig(BackendConfig):
    """BlazePose (MediaPipe), its weights bundled with the wheel: one person per pass, CPU only."""

    min_detection_confidence: float = 0.5
    """Minimum person-detection confidence."""
    max_persons: int = 1
    """BlazePose finds one person per pass; more than 1 re-runs it with found people masked out."""
    model_complexity: int = 1
    """Landmark model: 0 lite, 1 full (bundled with the wheel), 2 heavy (0 and 2 must already be on disk)."""

    def __post_init__(self) -> None:
        if self.max_persons < 1:
            raise ValueError("max persons must be at least 1")
        if self.model_complexity not in (0, 1, 2):
            raise ValueError(f"model_complexity must be 0, 1 or 2, got {self.model_complexity}")
        if not 0.0 <= self.min_detection_confidence <= 1.0:
            raise ValueError("min_detection_confidence must be in [0, 1]")


def _landmark_model_path(complexity: int) -> Path:
    import mediapipe

    package = Path(mediapipe.__file__).parent
    return package / "modules" / "pose_landmark" / f"pose_landmark_{_LANDMARK_MODELS[complexity]}.tflite"


def landmarks_to_array(landmarks, height: int, width: int) -> np.ndarray:
    """MediaPipe normalised landmarks -> ``(33, 3)`` float32 x, y in pixels and score (visibility x presence)."""
    out = np.zeros((NUM_BLAZEPOSE_LANDMARKS, 3), dtype=np.float32)
    for index, landmark in enumerate(landmarks.landmark[:NUM_BLAZEPOSE_LANDMARKS]):
        score = landmark.visibility if landmark.HasField("visibility") else 1.0
        if landmark.HasField("presence"):
            score *= landmark.presence
        out[index] = (landmark.x * width, landmark.y * height, score)
    return out


def person_from_landmarks(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, float]:
    """COCO-17 keypoints ``(17, 3)``, box ``(4,)`` and box score of one person from its 33 pixel landmarks."""
    keypoints = confine_to_image(points[list(BLAZEPOSE_TO_COCO17)], height, width)[0]
    inside = points[inside_image(points[:, 0], points[:, 1], height, width), :2]
    extent = inside if len(inside) else np.nan_to_num(points[:, :2])
    x1, y1 = extent.min(axis=0)
    x2, y2 = extent.max(axis=0)
    dx, dy = (x2 - x1) * BOX_PAD, (y2 - y1) * BOX_PAD
    box = np.array(
        [
            np.clip(x1 - dx, 0, width - 1),
            np.clip(y1 - dy, 0, height - 1),
            np.clip(x2 + dx, 0, width - 1),
            np.clip(y2 + dy, 0, height - 1),
        ],
        dtype=np.float32,
    )
    return keypoints, box, float(keypoints[:, 2].mean())


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``x1, y1, x2, y2`` box against ``(N, 4)`` boxes."""
    others = np.asarray(others, dtype=np.float32).reshape(-1, 4)
    ix1 = np.maximum(box[0], others[:, 0])
    iy1 = np.maximum(box[1], others[:, 1])
    ix2 = np.minimum(box[2], others[:, 2])
    iy2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-6)


class MediaPipePoseEstimator:
    """BlazePose (MediaPipe legacy ``solutions.pose``) behind the :class:`PoseEstimator` interface."""

    def __init__(self, config: MediaPipeConfig) -> None:
        complexity = config.model_complexity
        model_path = _landmark_model_path(complexity)
        if not model_path.exists():
            raise FileNotFoundError(
                f"model_complexity={complexity} needs {model_path.name}, which the mediapipe wheel does not "
                f"bundle (only complexity 1, 'full', ships with it) and MediaPipe would try to download it at run "
                f"time. Use model_complexity=1, or place the file at {model_path}."
            )
        import mediapipe as mp

        self.config = config
        self.name = f"mediapipe/blazepose-{_LANDMARK_MODELS[complexity]}"
        self._lock = threading.Lock()
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=complexity,
            enable_segmentation=False,
            min_detection_confidence=config.min_detection_confidence,
        )

    def __call__(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Estimate poses on RGB uint8 ``(H, W, 3)`` images; one :class:`Poses` per image, in order."""
        if self._pose is None:
            raise RuntimeError("this MediaPipePoseEstimator was closed")
        checked = [check_rgb_image(image, index) for index, image in enumerate(images)]
        with self._lock:
            return [self._estimate(image) for image in checked]

    def _estimate(self, image: np.ndarray) -> Poses:
        height, width = image.shape[:2]
        keypoints, boxes, scores = [], [], []
        work = image
        for _ in range(self.config.max_persons):
            result = self._pose.process(work)
            if result.pose_landmarks is None:
                break
            points = landmarks_to_array(result.pose_landmarks, height, width)
            person, box, score = person_from_landmarks(points, height, width)
            if boxes and box_iou(box, np.stack(boxes)).max() > MASK_IOU_LIMIT:
                break
            keypoints.append(person)
            boxes.append(box)
            scores.append(score)
            if len(boxes) < self.config.max_persons:
                work = self._mask(work if work is not image else image.copy(), box, image)
        if not keypoints:
            return Poses.empty()
        return Poses(np.stack(keypoints), np.stack(boxes), np.asarray(scores, np.float32))

    @staticmethod
    def _mask(work: np.ndarray, box: np.ndarray, original: np.ndarray) -> np.ndarray:
        """Paint ``box`` over with the original image's mean colour (in place on ``work``, a copy)."""
        x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
        x2, y2 = int(np.ceil(box[2])) + 1, int(np.ceil(box[3])) + 1
        work[y1:y2, x1:x2] = original.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        return work

    def close(self) -> None:
        """Free the MediaPipe graph; the estimator cannot be called afterwards."""
        pose, self._pose = getattr(self, "_pose", None), None
        if pose is not None:
            pose.close()

    def __enter__(self) -> "MediaPipePoseEstimator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
