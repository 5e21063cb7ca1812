"""Read and write the mp4 files of generated videos, and make their previews.

Encoding and decoding are :mod:`datasets.video_io`'s (every frame comes back as
RGB uint8 ``(T, H, W, 3)``, converted through one swscale context per video; a
file that cannot be opened or holds no video stream raises :class:`VideoError`
with the file name and FFmpeg's reason, so a caller can turn it into a rejection
row instead of a crash); this module keeps evaluation's settings: mp4 at crf 18
preset veryfast, GIF previews.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from datasets import video_io
from datasets.atomic import atomic_path
from datasets.video_io import VideoError, count_frames, iter_frames

__all__ = ["VideoError", "count_frames", "iter_frames", "read_video", "thumbnail_frames", "write_gif", "write_png", "write_video"]


def read_video(path: str | Path) -> np.ndarray:
    """All frames of ``path``: RGB uint8 ``(T, H, W, 3)``. An empty video raises :class:`VideoError`."""
    return video_io.read_video(path)[0]


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Encode RGB uint8 ``(T, H, W, 3)`` frames as H.264 mp4 (yuv420p, x264 preset veryfast), atomically.

    Width and height must be even (yuv420p).
    """
    return video_io.write_video(frames, path, Fraction(fps).limit_denominator(1000), crf=crf, preset="veryfast")


def thumbnail_frames(frames: np.ndarray, max_side: int, max_frames: int) -> np.ndarray:
    """Frames shrunk so their longer side is at most ``max_side``, evenly subsampled to ``max_frames``."""
    from PIL import Image

    frames = np.asarray(frames)
    if len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """An animated GIF of RGB uint8 frames (looping, at least 20 ms a frame), atomically."""
    return video_io.write_gif(frames, path, fps, optimize=False, min_frame_ms=20)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """A PNG of one RGB uint8 image, written through a temporary name."""
    from PIL import Image

    with atomic_path(path) as temp:
        Image.fromarray(np.ascontiguousarray(image)).save(temp, format="PNG")
    return Path(path)
