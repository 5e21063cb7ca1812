"""``warping_error``: flow-warping error between consecutive frames (Lai et al. 2018), lower is better.

For each consecutive pair, frame t is warped onto frame t+1 with the backward
optical flow, pixels failing a forward-backward consistency check (occlusions,
after Sundaram et al. 2010) are masked out, and the error is the mean squared
RGB difference in [0, 1] over the kept pixels, reported x1000. The flow is
OpenCV's Farneback flow, which needs no weights and runs anywhere; papers that
use RAFT or PWC-Net flow report different absolute numbers, so compare runs
measured here with each other.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample

_FARNEBACK = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


@register
class WarpingError(Metric):
    name = "warping_error"
    figures = ("warping_error",)
    higher_is_better = False
    description = "1000 x masked mean squared error after warping frame t onto t+1 with Farneback flow (lower is better)."

    def settings(self) -> dict:
        return {"flow": "opencv-farneback", **_FARNEBACK}

    def update(self, sample: VideoSample) -> dict:
        frames = sample.frames
        if len(frames) < 2:
            raise SampleError("warping error needs at least 2 frames")
        with self.context.timed("pixels/flow"):
            errors = np.array([pair_warping_error(a, b) for a, b in zip(frames[:-1], frames[1:])])
        if np.isnan(errors).all():
            raise SampleError("warping error: no pixel passed the flow consistency check in any frame pair")
        per_pair = [None if np.isnan(e) else round(float(e), 5) for e in errors]
        return {"values": {"warping_error": float(np.nanmean(errors))}, "per_pair": per_pair}


def pair_warping_error(previous: np.ndarray, current: np.ndarray) -> float:
    """1000 x the occlusion-masked MSE between ``current`` and ``previous`` warped onto it (RGB uint8 inputs);
    NaN when every pixel is occluded."""
    import cv2

    gray_prev = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
    gray_cur = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    backward = cv2.calcOpticalFlowFarneback(gray_cur, gray_prev, None, **_FARNEBACK)
    forward = cv2.calcOpticalFlowFarneback(gray_prev, gray_cur, None, **_FARNEBACK)
    height, width = gray_cur.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + backward[..., 0], grid_y + backward[..., 1]
    warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    forward_at = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    round_trip = np.sum((backward + forward_at) ** 2, axis=-1)
    magnitude = np.sum(backward**2, axis=-1) + np.sum(forward_at**2, axis=-1)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    valid = inside & (round_trip < 0.01 * magnitude + 0.5)
    if not valid.any():
        return float("nan")
    difference = (warped.astype(np.float32) - current.astype(np.float32)) / 255.0
    return float(1000.0 * np.mean(np.sum(difference**2, axis=-1)[valid]) / 3.0)
