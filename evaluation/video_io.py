"""Read and write the mp4 files of generated videos, and make their previews.

Decoding goes through PyAV (FFmpeg); every frame comes back as RGB uint8
``(T, H, W, 3)``. A file that cannot be opened or holds no video stream raises
:class:`VideoError` with the file name and FFmpeg's reason, so a caller can turn
it into a rejection row instead of a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


class VideoError(ValueError):
    """A video file could not be decoded."""


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` one by one as RGB uint8 ``(H, W, 3)`` arrays."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as error:
        raise VideoError(f"{path} could not be decoded: {error}") from error


def read_video(path: str | Path) -> np.ndarray:
    """All frames of ``path``: RGB uint8 ``(T, H, W, 3)``. An empty video raises :class:`VideoError`."""
    frames = list(iter_frames(path))
    if not frames:
        raise VideoError(f"{path} holds no decodable frame")
    return np.stack(frames)


def count_frames(path: str | Path) -> int:
    """Number of decodable frames in ``path`` (decodes the file: container headers are often wrong)."""
    return sum(1 for _ in iter_frames(path))


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Encode RGB uint8 ``(T, H, W, 3)`` frames as H.264 mp4 (yuv420p, so browsers play it).

    The file is written under a temporary name and renamed, so a stopped run never
    leaves a truncated mp4 behind. Width and height must be even (yuv420p).
    """
    import av
    from fractions import Fraction

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("no frames to write")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {width}x{height}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


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
    """An animated GIF of RGB uint8 frames (looping), written through a temporary name."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    tmp = path.with_name(path.name + ".tmp.gif")
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
        duration=max(20, round(1000 / max(fps, 1e-3))), optimize=False,
    )
    tmp.replace(path)
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """A PNG of one RGB uint8 image, written through a temporary name."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    tmp.replace(path)
    return path
