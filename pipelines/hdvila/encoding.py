"""H.264 encoders of clip frames into in-memory mp4 files: PyAV's libx264 (the project's
:class:`datasets.video_io.VideoWriter`), or the ffmpeg binary of imageio-ffmpeg.

Both take PyAV video frames of a fixed size one at a time (the cutter hands
them ``yuv444p`` frames, see :class:`pipelines.hdvila.cutting.FrameShaper`) and
return the mp4 bytes (``yuv420p``, constant frame rate, ``+faststart`` so
readers can stream it, no audio).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from fractions import Fraction
from typing import Protocol

import numpy as np

from datasets.video_io import VideoWriter
from pipelines.hdvila.config import CutConfig


class ClipEncoder(Protocol):
    frames: int

    def write(self, frame) -> None:
        """Encode one ``av.VideoFrame`` of the clip's size (any pixel format)."""

    def finish(self) -> bytes: ...

    def abort(self) -> None: ...


def _x264_options(config: CutConfig, fps: Fraction) -> dict[str, str]:
    keyint = max(1, round(float(fps) * config.keyframe_interval))
    return {"crf": str(config.crf), "preset": config.x264_preset, "g": str(keyint), "keyint_min": str(min(keyint, 25))}


def writer_options(config: CutConfig, fps: Fraction) -> dict:
    """The :class:`~datasets.video_io.VideoWriter` arguments of a clip: x264 crf, preset and keyframe spacing, faststart, threads."""
    x264 = _x264_options(config, fps)
    crf, preset = int(x264.pop("crf")), x264.pop("preset")
    return {"crf": crf, "preset": preset, "options": x264, "faststart": True, "threads": config.threads}


def temporary_mp4() -> str:
    """A new empty temporary ``.mp4`` path (the mp4 muxer's faststart pass needs a real file, not a buffer)."""
    handle, path = tempfile.mkstemp(suffix=".mp4", prefix="clip-")
    os.close(handle)
    return path


def read_and_remove(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


class FfmpegEncoder:
    """The ffmpeg binary shipped by imageio-ffmpeg, fed raw ``yuv444p`` frames on stdin, writing a temporary mp4."""

    def __init__(self, width: int, height: int, fps: Fraction, config: CutConfig) -> None:
        import imageio_ffmpeg

        self.width, self.height, self.frames = width, height, 0
        self._path = temporary_mp4()
        self._log = tempfile.TemporaryFile()
        x264 = _x264_options(config, fps)
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", f"{width}x{height}",
            "-r", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0",
            "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", x264["crf"], "-preset", x264["preset"],
            "-g", x264["g"], "-keyint_min", x264["keyint_min"], "-threads", str(config.threads),
            "-movflags", "+faststart", "-f", "mp4", self._path,
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def write(self, frame) -> None:
        if (frame.width, frame.height) != (self.width, self.height):
            raise ValueError(f"frame is {frame.width}x{frame.height}, encoder expects {self.width}x{self.height}")
        planes = frame.reformat(format="yuv444p").to_ndarray()  # (3, height, width): the rawvideo layout
        try:
            self._process.stdin.write(np.ascontiguousarray(planes).tobytes())
        except BrokenPipeError as error:
            raise RuntimeError(f"ffmpeg exited while encoding: {self._errors()}") from error
        self.frames += 1

    def _errors(self) -> str:
        self._process.wait()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace").strip()[-500:]

    def finish(self) -> bytes:
        try:
            self._process.stdin.close()
            if self._process.wait() != 0:
                raise RuntimeError(f"ffmpeg failed (exit {self._process.returncode}): {self._errors()}")
            return read_and_remove(self._path)
        finally:
            self._cleanup()

    def abort(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
        self._log.close()
        if os.path.exists(self._path):
            os.unlink(self._path)


def make_encoder(width: int, height: int, fps: Fraction, config: CutConfig) -> ClipEncoder:
    if config.encoder == "ffmpeg":
        return FfmpegEncoder(width, height, fps, config)
    return VideoWriter(None, fps, size=(width, height), **writer_options(config, fps))
