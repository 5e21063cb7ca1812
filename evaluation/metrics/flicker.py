"""``temporal_flickering``: VBench's temporal-flickering score, from pixels alone.

VBench (Huang et al. 2024) scores flicker as ``(255 - MAE) / 255`` where MAE is the
mean absolute difference of consecutive frames in 8-bit pixel values; we report
it x100 to sit beside the other columns. Higher is steadier. It needs no model,
so it can be computed anywhere; like VBench, it is meant to be read together
with a motion measure, since a frozen video scores 100.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample


@register
class TemporalFlickering(Metric):
    name = "temporal_flickering"
    figures = ("temporal_flickering",)
    description = "VBench temporal flickering: 100 x (255 - mean |frame t+1 - frame t|) / 255."

    def update(self, sample: VideoSample) -> dict:
        frames = sample.frames
        if len(frames) < 2:
            raise SampleError("temporal flickering needs at least 2 frames")
        with self.context.timed("pixels/flicker"):
            mae = [float(np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()) for a, b in zip(frames[:-1], frames[1:])]
        score = 100.0 * (255.0 - float(np.mean(mae))) / 255.0
        return {"values": {"temporal_flickering": score}, "per_pair_mae": np.round(mae, 4).tolist()}
