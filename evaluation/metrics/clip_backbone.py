"""The CLIP model behind ``clip`` and ``frame_consistency``.

One code path for every backbone: ``CLIPModel.from_pretrained`` and
``CLIPProcessor.from_pretrained`` on ``config.clip_model``, a hub id (e.g.
``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``) or a local
folder (a downloaded copy, or a tiny model saved by a test). Embeddings come back
L2-normalised as float32 numpy arrays; forward passes are batched, on the
configured device and dtype, and timed under ``forward/clip``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from evaluation.config import resolve_dtype
from pose_extraction.estimator import resolve_device

CLIP_METRICS = ("clip", "frame_consistency")
"""The metrics that load this backbone (``evaluation.run`` checks a hub id for them before any work)."""


class ClipBackbone:
    """A loaded CLIP model and its processor."""

    def __init__(self, config, context):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.context = context
        self.batch_size = config.clip_batch_size
        self.device = torch.device(resolve_device(config.device))
        self.dtype = resolve_dtype(config.dtype, self.device.type)
        self.model_id = config.clip_model
        self.processor = CLIPProcessor.from_pretrained(config.clip_model)
        self.model = CLIPModel.from_pretrained(config.clip_model, dtype=self.dtype).to(self.device).eval()
        self._text_cache: dict[str, np.ndarray] = {}

    def describe(self) -> dict:
        """What results record about the backbone."""
        vision = self.model.config.vision_config
        return {
            "model": self.model_id,
            "image_size": int(vision.image_size),
            "patch_size": int(vision.patch_size),
            "projection_dim": int(self.model.config.projection_dim),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }

    def image_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """``(T, D)`` normalised embeddings of RGB uint8 ``(T, H, W, 3)`` frames."""
        import torch

        chunks = []
        for start in range(0, len(frames), self.batch_size):
            batch = list(frames[start : start + self.batch_size])
            with self.context.timed("preprocess/clip"):
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(self.device, self.dtype)
            with self.context.timed("forward/clip"), torch.inference_mode():
                features = _features(self.model.get_image_features(pixel_values=pixels))
                chunks.append(_normalise(features))
        return np.concatenate(chunks)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, D)`` normalised embeddings of ``texts`` (truncated to CLIP's 77 tokens), cached per text."""
        import torch

        missing = sorted({t for t in texts if t not in self._text_cache})
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            with self.context.timed("preprocess/clip"):
                tokens = self.processor(text=batch, return_tensors="pt", padding=True, truncation=True)
                tokens = {k: v.to(self.device) for k, v in tokens.items()}
            with self.context.timed("forward/clip"), torch.inference_mode():
                features = _normalise(_features(self.model.get_text_features(**tokens)))
            self._text_cache.update(zip(batch, features))
        return np.stack([self._text_cache[t] for t in texts])


def _features(output):
    """transformers 5 returns a model output whose ``pooler_output`` is the projection; older ones a tensor."""
    return output if hasattr(output, "float") else output.pooler_output


def _normalise(features) -> np.ndarray:
    import torch

    features = features.float()
    features = features / torch.linalg.vector_norm(features, dim=-1, keepdim=True).clamp_min(1e-12)
    if features.device.type == "cuda":
        torch.cuda.synchronize(features.device)
    return features.cpu().numpy()
