"""Encode and decode the project's videos: H.264 mp4 (yuv420p, so browsers play it) and GIF, through PyAV.

Every writer, reader and builder goes through this module:

- :class:`VideoWriter` streams RGB uint8 frames into an mp4, either at a path
  (written under a hidden temporary name beside it and renamed only when
  complete, so a stopped run never leaves a truncated video) or into bytes in
  memory (for shard writers); :func:`encode_mp4` and :func:`write_video` are
  its one-call forms.
- :func:`iter_frames`, :func:`read_video`, :func:`count_frames` and
  :func:`decode_frames` decode a path or mp4 bytes into RGB uint8 frames. A
  source that cannot be opened or holds no video stream raises
  :class:`VideoError` (a ``ValueError``) naming it with FFmpeg's reason, so a
  caller can turn it into a rejection row instead of a crash.

PyAV is imported inside the functions: importing this module loads nothing.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from datasets.atomic import atomic_path, temporary_path

if TYPE_CHECKING:
    import av

Source = str | Path | bytes


class VideoError(ValueError):
    """A video could not be decoded."""


def frame_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as the exact rational rate of the stream: a Fraction as given, a number within 1/1001."""
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Streams RGB uint8 ``(H, W, 3)`` frames into an H.264 mp4 (yuv420p, constant frame rate).

    ``target`` is a path (written atomically: under :func:`datasets.atomic.temporary_path`, renamed when finished) or None (the mp4 bytes, returned by
    :meth:`finish`). Width and height come from ``size`` or the first frame and
    must be even. ``crf`` and ``preset`` are x264's; ``options`` adds x264
    options (``{"g": "60"}``); ``faststart`` moves the index to the front so
    readers can stream the file; ``threads`` caps the encoder's threads.
    As a context manager it finishes on success and aborts (nothing left at
    ``target``) on an exception.
    """

    def __init__(
        self, target: str | Path | None, fps: float | Fraction, *, size: tuple[int, int] | None = None, crf: int = 18,
        preset: str = "veryfast", options: dict[str, str] | None = None, faststart: bool = False, threads: int | None = None,
    ) -> None:
        import av

        self.path = None if target is None else Path(target)
        self.rate, self.frames = frame_rate(fps), 0
        self.options = {"crf": str(crf), "preset": preset, **(options or {})}
        self.threads, self._stream, self._size = threads, None, None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._temp = temporary_path(self.path)
        elif faststart:  # the faststart pass re-reads the file by name: it needs a real file, not a buffer
            handle, name = tempfile.mkstemp(suffix=".mp4", prefix="video-")
            os.close(handle)
            self._temp = Path(name)
        else:
            self._temp = io.BytesIO()
        sink = self._temp if isinstance(self._temp, io.BytesIO) else str(self._temp)
        self._container = av.open(sink, mode="w", format="mp4", options={"movflags": "+faststart"} if faststart else {})
        if size is not None:
            try:
                self._open_stream(*size)
            except BaseException:
                self.abort()
                raise

    def _open_stream(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        self._size = (width, height)
        self._stream = self._container.add_stream("libx264", rate=self.rate, options=self.options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        if self.threads is not None:
            self._stream.codec_context.thread_count = self.threads

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Encode one RGB uint8 ``(H, W, 3)`` frame, or an ``av.VideoFrame`` of any pixel format (no RGB round trip)."""
        import av

        if isinstance(frame, av.VideoFrame):
            video_frame, shape = frame, (frame.height, frame.width)
        else:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"a frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            video_frame, shape = None, frame.shape[:2]
        if self._stream is None:
            self._open_stream(shape[1], shape[0])
        if shape != self._size[::-1]:
            raise ValueError(f"frame is {shape} (H x W), the video is {self._size[1]}x{self._size[0]} (H x W)")
        if video_frame is None:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames
        self._container.mux(self._stream.encode(video_frame))
        self.frames += 1

    def finish(self) -> Path | bytes:
        """Flush the encoder and close: the final path (now complete), or the mp4 bytes."""
        if self.frames == 0:
            self.abort()
            raise ValueError("no frames to write")
        try:
            self._container.mux(self._stream.encode())
            self._container.close()
            if isinstance(self._temp, io.BytesIO):
                return self._temp.getvalue()
            if self.path is not None:
                self._temp.replace(self.path)
                return self.path
            return self._temp.read_bytes()
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without completing: nothing appears at the target; safe to call twice."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - best effort on an encoder being thrown away
            pass
        if isinstance(self._temp, Path):
            self._temp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def encode_mp4(frames: np.ndarray, fps: float | Fraction, **options) -> bytes:
    """``(T, H, W, 3)`` uint8 RGB frames as H.264 mp4 bytes; ``options`` as :class:`VideoWriter`'s."""
    writer = VideoWriter(None, fps, **options)
    try:
        for frame in frames:
            writer.write(frame)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def write_video(
    frames: np.ndarray, path: str | Path, fps: float | Fraction, *, crf: int = 18, preset: str = "veryfast",
    options: dict[str, str] | None = None,
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as H.264 mp4 or, for a ``.gif`` path, a looping GIF, atomically.

    ``crf``, ``preset`` and ``options`` are the mp4's (see :class:`VideoWriter`); a GIF has none of them.
    """
    path = Path(path)
    if path.suffix.lower() == ".gif":
        return write_gif(frames, path, fps)
    if len(frames) == 0:
        raise ValueError("no frames to write")
    with VideoWriter(path, fps, crf=crf, preset=preset, options=options) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: float, *, optimize: bool = True, min_frame_ms: int = 0) -> Path:
    """A looping animated GIF of RGB uint8 frames (each shown ``max(min_frame_ms, 1000 / fps)`` ms), atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    duration = max(min_frame_ms, round(1000 / max(fps, 1e-3)))
    with atomic_path(path) as temp:
        images[0].save(temp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=optimize)
    return path


def _name(source: Source) -> str:
    return "the video bytes" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def rgb_converter():
    """``frame -> (H, W, 3) uint8 RGB array`` through one swscale context, on the calling thread. Make one per video:
    PyAV's ``frame.to_ndarray(format="rgb24")`` sets up a new context, with a pool of threads, for every frame, which
    costs more than decoding a small frame (the pixels are the same)."""
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def iter_frames(source: Source, *, threads: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a path or mp4 bytes one by one as RGB uint8 ``(H, W, 3)`` arrays."""
    to_rgb = rgb_converter()
    for frame in _decoded(source, threads):
        yield to_rgb(frame)


def open_video(source: Source, threads: int | None = None):
    """``(container, stream)``: an open PyAV container (close it) and its first video stream, decoding on
    ``threads`` threads (FFmpeg's choice if None)."""
    import av

    name, in_memory = _name(source), isinstance(source, (bytes, bytearray, memoryview))
    if not in_memory and not Path(source).is_file():
        raise VideoError(f"{source} does not exist")
    try:
        container = av.open(io.BytesIO(source) if in_memory else str(source))
    except av.error.FFmpegError as error:
        raise VideoError(f"{name} could not be decoded: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if threads is not None:
        stream.codec_context.thread_count = threads
    return container, stream


def _decoded(source: Source, threads: int | None = None, info: dict | None = None) -> Iterator:
    """PyAV frames of ``source``'s first video stream; fills ``info["fps"]`` (average rate or None) first."""
    import av

    container, stream = open_video(source, threads)
    if info is not None:
        info["fps"] = float(stream.average_rate) if stream.average_rate else None
    try:
        with container:
            yield from container.decode(stream)
    except av.error.FFmpegError as error:
        raise VideoError(f"{_name(source)} could not be decoded: {error}") from error


def read_video(source: Source, stride: int = 1, limit: int | None = None) -> tuple[np.ndarray, float | None]:
    """``(frames, fps)``: every ``stride``-th frame (at most ``limit``) as RGB uint8 ``(T, H, W, 3)``, and the
    stream's average frame rate (None if unknown). A video without a decodable frame raises :class:`VideoError`."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    frames, info, to_rgb = [], {}, rgb_converter()
    if limit is None or limit > 0:
        for index, frame in enumerate(_decoded(source, info=info)):
            if index % stride == 0:
                frames.append(to_rgb(frame))
            if limit is not None and len(frames) >= limit:
                break
    if not frames:
        raise VideoError(f"{_name(source)} holds no decodable frame")
    return np.stack(frames), info.get("fps")


def count_frames(source: Source) -> int:
    """Number of decodable frames (decodes the video: container headers are often wrong)."""
    return sum(1 for _ in _decoded(source))


def decode_frames(data: bytes, indices: np.ndarray, *, decoder: str = "decord", threads: int = 1) -> np.ndarray:
    """Frames ``indices`` (sorted) of mp4 bytes as ``(N, H, W, 3)`` uint8 RGB, by decord or PyAV."""
    if decoder == "decord":
        import cv2  # noqa: F401  # before decord: decord loaded first breaks cv2's PNG decoding in this process
        import decord

        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=threads)
        return reader.get_batch([int(i) for i in indices]).asnumpy()
    wanted = {int(i): n for n, i in enumerate(indices)}
    frames: list[np.ndarray | None] = [None] * len(indices)
    to_rgb = rgb_converter()
    for number, frame in enumerate(_decoded(data, threads)):
        if number in wanted:
            frames[wanted[number]] = to_rgb(frame)
        if number >= indices[-1]:
            break
    if any(f is None for f in frames):
        raise ValueError(f"the clip has fewer frames than frame {int(indices[-1])}")
    return np.stack(frames)
