"""``fvd``: Fréchet Video Distance between generated videos and a folder of real ones (lower is better).

FVD (Unterthiner et al. 2019) is the Fréchet distance between Gaussians fitted to
I3D features of two sets of videos. **It cannot be computed without I3D weights**:
nothing here downloads them. Pass a local TorchScript I3D (``--fvd-i3d PATH``,
loaded with ``torch.jit.load``; a ``.pt2`` file goes through ``torch.export.load``) that takes float ``(B, 3, T, H, W)`` clips in
[-1, 1] and returns ``(B, D)`` features (``--fvd-i3d-kwargs`` gives the keyword
arguments your export expects), and real videos as the reference
(``--fvd-reference DIR``). FVD is a property of the whole set, not of one video:
per-video values are empty, and its interval resamples the generated videos
against the fixed reference. It is biased for small sets (papers use 2048 clips);
compare runs of equal size only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample
from evaluation.video_io import VideoError, read_video
from pose_extraction.estimator import resolve_device


@register
class FrechetVideoDistance(Metric):
    name = "fvd"
    figures = ("fvd",)
    higher_is_better = False
    description = "Fréchet distance of I3D features, generated vs reference videos (needs local I3D weights)."

    def __init__(self, context):
        super().__init__(context)
        if not self.config.fvd_i3d:
            raise ValueError("fvd cannot be computed without I3D weights: pass --fvd-i3d PATH (a local TorchScript I3D)")
        if not Path(self.config.fvd_i3d).is_file():
            raise ValueError(f"fvd: I3D weights {self.config.fvd_i3d} do not exist")
        if not self.config.fvd_reference or not Path(self.config.fvd_reference).is_dir():
            raise ValueError("fvd needs a folder of real reference videos: pass --fvd-reference DIR")
        self._model = None
        self._reference: np.ndarray | None = None

    def settings(self) -> dict:
        c = self.config
        return {"i3d": str(Path(c.fvd_i3d).resolve()), "i3d_kwargs": c.fvd_i3d_kwargs,
                "reference": str(Path(c.fvd_reference).resolve()), "frames": c.fvd_frames, "size": c.fvd_size}

    def prepare(self) -> None:
        import torch

        if self._model is None:
            with self.context.timed("load/i3d"):
                self._device = torch.device(resolve_device(self.config.device))
                self._model = load_i3d(self.config.fvd_i3d, self._device)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """I3D features ``(D,)`` of the first ``fvd_frames`` frames, resized to ``fvd_size`` and scaled to [-1, 1]."""
        import torch

        if len(frames) < self.config.fvd_frames:
            raise SampleError(f"fvd needs {self.config.fvd_frames} frames, the video has {len(frames)}")
        self.prepare()
        with self.context.timed("preprocess/i3d"):
            clip = torch.from_numpy(np.ascontiguousarray(frames[: self.config.fvd_frames])).to(self._device)
            clip = clip.permute(0, 3, 1, 2).float()
            size = (self.config.fvd_size, self.config.fvd_size)
            clip = torch.nn.functional.interpolate(clip, size=size, mode="bilinear", align_corners=False)
            clip = (clip / 127.5 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)
        with self.context.timed("forward/i3d"), torch.inference_mode():
            output = self._model(clip, **self.config.fvd_i3d_kwargs)
            return output.reshape(-1).float().cpu().numpy()

    def update(self, sample: VideoSample) -> dict:
        return {"values": {"fvd": None}, "features": self.features(sample.frames).round(6).tolist()}

    def reference(self) -> np.ndarray:
        """``(N, D)`` features of the reference videos (computed once per run)."""
        if self._reference is None:
            paths = sorted(p for p in Path(self.config.fvd_reference).glob("*.mp4") if not p.name.endswith(".pose.mp4"))
            features = []
            for path in paths:
                try:
                    features.append(self.features(read_video(path)))
                except (VideoError, SampleError):
                    continue
            if len(features) < 2:
                raise ValueError(f"fvd: fewer than 2 usable reference videos in {self.config.fvd_reference}")
            self._reference = np.stack(features)
        return self._reference

    def compute(self, states: Sequence[dict]) -> dict[str, float | None]:
        generated = np.array([s["features"] for s in states], dtype=np.float64)
        return {"fvd": frechet_distance(generated, self.reference()) if len(generated) >= 2 else None}

    def bootstrap(self, states: Sequence[dict], resamples: np.ndarray) -> dict[str, np.ndarray]:
        generated = np.array([s["features"] for s in states], dtype=np.float64)
        reference = self.reference()
        if len(generated) < 2:
            return {"fvd": np.full(len(resamples), np.nan)}
        return {"fvd": np.array([frechet_distance(generated[rows], reference) for rows in resamples])}


def load_i3d(path: str, device):
    """A TorchScript I3D (``torch.jit.load``; what FVD code bases ship) or a ``torch.export`` program (``.pt2``)."""
    import torch

    if str(path).endswith(".pt2"):
        return torch.export.load(path).module().to(device)
    return torch.jit.load(path, map_location=device).eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to the rows of ``a`` and ``b``.

    ``tr(sqrt(S_a S_b))`` is the sum of the square roots of the eigenvalues of ``S_a S_b`` (real and
    non-negative up to rounding: the product is similar to a PSD matrix), so no matrix square root is needed.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mean = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum()
    return float(mean @ mean + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
