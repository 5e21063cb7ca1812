"""The pose estimator interface shared by every backend.

An estimator takes a batch of RGB uint8 images and returns, per image, the
people it found as :class:`Poses` in the COCO-17 layout of
:mod:`datasets.keypoints`. Backends are built from a :class:`PoseConfig` by
:func:`build_estimator`; the model is loaded once, in ``__init__``, so a Ray
actor or a DataLoader worker builds one estimator and reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import numpy as np

from datasets.keypoints import as_keypoints, empty_keypoints

Backend = Literal["mmpose", "mediapipe"]


@dataclass(frozen=True)
class Poses:
    """The people found in one image."""

    keypoints: np.ndarray
    """``(P, 17, 3)`` float32: x, y, score in pixels of the input image."""
    boxes: np.ndarray
    """``(P, 4)`` float32 person boxes ``x1, y1, x2, y2``."""
    box_scores: np.ndarray
    """``(P,)`` float32 detection scores of the boxes."""

    def __post_init__(self) -> None:
        keypoints = as_keypoints(self.keypoints)
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        box_scores = np.asarray(self.box_scores, dtype=np.float32).reshape(-1)
        if not len(keypoints) == len(boxes) == len(box_scores):
            raise ValueError(
                f"persons disagree: {len(keypoints)} keypoint sets, {len(boxes)} boxes, {len(box_scores)} scores"
            )
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "box_scores", box_scores)

    @classmethod
    def empty(cls) -> "Poses":
        return cls(empty_keypoints(), np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.keypoints)


class PoseEstimator(Protocol):
    """What every backend offers."""

    name: str
    """Identifies the backend and model, recorded with every sample (e.g. ``mmpose/td-hm_hrnet-w32``)."""

    def __call__(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Estimate poses on RGB uint8 ``(H, W, 3)`` images; one :class:`Poses` per image, in order."""
        ...


@dataclass(frozen=True, kw_only=True)
class PoseConfig:
    """Which pose model to run and how."""

    backend: Backend = "mediapipe"
    """``mmpose`` (person detector + top-down HRNet, the paper's choice) or ``mediapipe`` (BlazePose, bundled weights)."""
    device: str = "auto"
    """Torch device for MMPose: ``auto`` picks ``cuda`` when there is one, else ``cpu``."""
    batch_size: int = 16
    """MMPose: person crops per forward pass of the pose model (and images per pass of the detector)."""
    pose_config: str = "td-hm_hrnet-w32_8xb64-210e_coco-256x192"
    """MMPose model config: a name from mmpose's model zoo or a path to a config file."""
    pose_checkpoint: str | None = None
    """MMPose weights: local path or URL. None leaves random weights (tests only; the builder refuses it unless allowed)."""
    det_config: str = "rtmdet_tiny_8xb32-300e_coco"
    """MMDet person detector config: a name from mmdet's model zoo or a path."""
    det_checkpoint: str | None = None
    """MMDet detector weights: local path or URL. None leaves random weights (tests only)."""
    det_score_threshold: float = 0.5
    """Person boxes scoring at or below this are dropped before pose estimation."""
    det_max_persons: int = 20
    """At most this many person boxes per image (highest scores first)."""
    nms_iou_threshold: float = 0.65
    """IoU above which overlapping person boxes are merged."""
    whole_image_when_no_detector: bool = False
    """MMPose only: skip detection and treat the whole image as one person box."""
    mediapipe_min_detection_confidence: float = 0.5
    """MediaPipe: minimum person-detection confidence."""
    mediapipe_max_persons: int = 1
    """MediaPipe BlazePose finds one person per pass; more than 1 re-runs it with found people masked out."""
    mediapipe_model_complexity: int = 1
    """MediaPipe landmark model: 0 lite, 1 full (bundled with the wheel), 2 heavy (0 and 2 must already be on disk)."""
    allow_random_weights: bool = False
    """Allow MMPose without checkpoints (random weights). For tests and benchmarks of the plumbing only."""
    extra: dict = field(default_factory=dict)
    """Backend-specific options passed through unchanged."""

    def __post_init__(self) -> None:
        if self.backend not in ("mmpose", "mediapipe"):
            raise ValueError(f"unknown pose backend {self.backend!r}; choose 'mmpose' or 'mediapipe'")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0.0 <= self.det_score_threshold < 1.0:
            raise ValueError("det_score_threshold must be in [0, 1)")
        if self.mediapipe_max_persons < 1 or self.det_max_persons < 1:
            raise ValueError("max persons must be at least 1")
        if self.mediapipe_model_complexity not in (0, 1, 2):
            raise ValueError(f"mediapipe_model_complexity must be 0, 1 or 2, got {self.mediapipe_model_complexity}")
        if not 0.0 <= self.mediapipe_min_detection_confidence <= 1.0:
            raise ValueError("mediapipe_min_detection_confidence must be in [0, 1]")
        if not 0.0 < self.nms_iou_threshold <= 1.0:
            raise ValueError("nms_iou_threshold must be in (0, 1]")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_rgb_image(image, index: int = 0) -> np.ndarray:
    """The RGB uint8 ``(H, W, 3)`` image every backend takes, C-contiguous; a clear ValueError otherwise."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index}: empty image {image.shape}")
    return np.ascontiguousarray(image)


def inside_image(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which points ``(x, y)`` lie on the image: finite and within ``[0, W-1] x [0, H-1]``."""
    return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def confine_to_image(keypoints, height: int, width: int) -> np.ndarray:
    """The rule every backend applies to its keypoints ``(P, 17, 3)`` before returning them.

    A keypoint outside the image is not visible in it: its score becomes 0 and
    its coordinates are clipped to the border, so stored coordinates always lie
    in the stored image. Scores are clipped to ``[0, 1]``.
    """
    keypoints = as_keypoints(keypoints).copy()
    x, y = keypoints[..., 0], keypoints[..., 1]
    outside = ~inside_image(x, y, height, width)
    keypoints[..., 2] = np.clip(np.nan_to_num(keypoints[..., 2]), 0.0, 1.0)
    keypoints[..., 2][outside] = 0.0
    keypoints[..., 0] = np.clip(np.nan_to_num(x), 0, width - 1)
    keypoints[..., 1] = np.clip(np.nan_to_num(y), 0, height - 1)
    return keypoints


def build_estimator(config: PoseConfig) -> PoseEstimator:
    """Load the backend named by ``config`` (imports its heavy libraries only now)."""
    if config.backend == "mediapipe":
        from pose_extraction.mediapipe_backend import MediaPipePoseEstimator

        return MediaPipePoseEstimator(config)
    from pose_extraction.mmpose_backend import MMPoseEstimator

    return MMPoseEstimator(config)
