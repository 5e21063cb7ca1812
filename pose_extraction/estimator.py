"""The pose estimator interface shared by every backend.

An estimator takes a batch of RGB uint8 images and returns, per image, the
people it found as :class:`Poses` in the COCO-17 layout of
:mod:`datasets.keypoints`. Each backend's options are a :class:`BackendConfig`
subclass; backends are registered by name in :mod:`pose_extraction.backends`,
which builds them (:func:`~pose_extraction.backends.build_estimator`). The
model is loaded once, in ``__init__``, so a Ray actor or a DataLoader worker
builds one estimator and reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from datasets.keypoints import as_keypoints, empty_keypoints


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
class BackendConfig:
    """Base of every backend's own config: a frozen keyword-only dataclass, a docstring per field, checked in
    ``__post_init__``, registered with its estimator in :data:`pose_extraction.backends.BACKENDS`."""

    def unset_weights(self) -> str | None:
        """The option that must name trained weights before a job may start, while it is unset; None if runnable."""
        return None


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
