"""``frame_consistency``: temporal coherence as in the paper's Table 1 (after Esser et al. 2023).

100 x the mean cosine of the CLIP image embeddings of consecutive frames. It
reuses the embeddings ``clip`` computed for the same video (one forward pass per
frame for both). A one-frame video has no consecutive pair and is skipped.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample


@register
class FrameConsistency(Metric):
    name = "frame_consistency"
    figures = ("frame_consistency",)
    description = "100 x mean CLIP image-embedding cosine of consecutive frames."

    def settings(self) -> dict:
        return {"clip_model": self.config.clip_model}

    def prepare(self) -> None:
        self.context.clip

    def update(self, sample: VideoSample) -> dict:
        if len(sample.frames) < 2:
            raise SampleError("frame consistency needs at least 2 frames")
        images = self.context.image_embeddings(sample)
        per_pair = 100.0 * np.sum(images[1:] * images[:-1], axis=1)
        return {"values": {"frame_consistency": float(per_pair.mean())}, "per_pair": np.round(per_pair, 4).tolist()}
