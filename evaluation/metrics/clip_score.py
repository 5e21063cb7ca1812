"""``clip``: CLIP score, text-video alignment as in the paper's Table 1.

Per frame, 100 x the cosine of the L2-normalised image embedding and the
L2-normalised prompt embedding; averaged over the frames of a video, then over
videos. No clamping at zero. The number depends on the backbone (ViT-B/32 and
ViT-L/14 differ by several points), so the backbone is part of the settings.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import VideoSample


@register
class ClipScore(Metric):
    name = "clip"
    figures = ("clip_score",)
    description = "100 x cosine of CLIP image and prompt embeddings, per frame, averaged over frames then videos."

    def settings(self) -> dict:
        return {"clip_model": self.config.clip_model}

    def prepare(self) -> None:
        self.context.clip

    def update(self, sample: VideoSample) -> dict:
        images = self.context.image_embeddings(sample)
        text = self.context.clip.text_embeddings([sample.prompt])[0]
        per_frame = 100.0 * (images @ text)
        return {"values": {"clip_score": float(per_frame.mean())}, "per_frame": np.round(per_frame, 4).tolist()}
