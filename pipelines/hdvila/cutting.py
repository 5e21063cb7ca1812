"""Cutting one span of an open source video into an mp4 clip: frame-exact re-encode, or keyframe-aligned stream copy.

Exact mode: the span ``[start, end)`` becomes the output times
``start + i / fps`` (``ceil((end - start) * fps)`` frames, see
:func:`datasets.clips.output_times`); each output frame is the source frame on
screen at that time (the last one starting at or before it), so resampling to
a lower, equal or higher rate and variable-frame-rate sources all follow one
rule. Frames are decoded from the keyframe before ``start`` (frames the clip
does not show and no other frame references are skipped by the decoder) and
streamed through resize + center-crop (:class:`datasets.clips.CropGeometry`,
done in libswscale on the decoder's YUV, see :class:`FrameShaper`) into the
encoder; a clip never holds more than two decoded frames in memory. Decoder and
encoder use ``CutConfig.threads`` threads.

Copy mode: packets are copied unchanged from the keyframe at or before
``start`` up to (not including) the first keyframe at or after ``end``, so the
clip covers ``[keyframe, next keyframe)``, recorded as ``cut`` in the annotation.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from datasets.clips import CropGeometry, displayed_frames, output_times, square_geometry
from datasets.video_io import rgb_converter
from pipelines.hdvila.config import CutConfig
from pipelines.hdvila.encoding import make_encoder, read_and_remove, temporary_mp4
from pipelines.hdvila.probe import ClipError, SourceInfo, check_span


@dataclass(frozen=True)
class CutClip:
    """An encoded clip and what it covers."""

    data: bytes
    frames: int
    fps: Fraction
    width: int
    height: int
    cut_start: Fraction
    cut_end: Fraction
    scene_distance: float | None = None
    """Largest histogram distance between consecutive frames (when the scene check ran)."""


def color_histogram(frame: np.ndarray) -> np.ndarray:
    """Normalised 16x4x4 HSV histogram of an RGB frame (on a 64x64 thumbnail)."""
    import cv2

    small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: 0 same colours, 1 disjoint."""
    return 0.5 * float(np.abs(a - b).sum())


def _seek(container, stream, info: SourceInfo, start: Fraction) -> None:
    container.seek(math.floor((info.origin + start) / info.time_base), stream=stream, backward=True, any_frame=False)


def shown_pts(info: SourceInfo, times: list[Fraction]) -> frozenset[int]:
    """The pts (stream ticks) of the source frames shown at ``times`` (see :func:`datasets.clips.displayed_frames`)."""
    indices = set(displayed_frames(list(info.frame_times), times).tolist())
    return frozenset(round((info.origin + info.frame_times[i]) / info.time_base) for i in indices)


def _frames(container, stream, shown: frozenset[int] | None) -> Iterator:
    """Decoded frames from the current position. With ``shown`` (the pts of the frames the clip shows), the packet of
    any other frame is decoded with ``skip_frame`` ``NONREF``: a frame nothing references (most B-frames) is then not
    decoded at all, which changes no other frame; reference frames are always decoded."""
    if shown is None:
        yield from container.decode(stream)
        return
    context = stream.codec_context
    try:
        for packet in container.demux(stream):
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in shown else "NONREF"
            yield from packet.decode()
    finally:
        context.skip_frame = "DEFAULT"  # the container serves the video's next clip


def _decoded(
    container, stream, info: SourceInfo, start: Fraction, shown: frozenset[int] | None = None
) -> Iterator[tuple[Fraction, object]]:
    """``(time, frame)`` from the keyframe at or before ``start`` on, in presentation order (see :func:`_frames` for ``shown``).

    Should a seek land after ``start`` (a container with a poor index), decoding restarts from the beginning.
    """
    import av

    previous = None
    try:
        for origin in (start, Fraction(0)):
            _seek(container, stream, info, origin)
            for frame in _frames(container, stream, shown):
                if frame.pts is None:
                    continue
                time = frame.pts * info.time_base - info.origin
                if previous is None and time > start and origin > 0:
                    break  # overshot: the frame on screen at ``start`` is earlier
                if previous is not None and time <= previous:
                    continue
                previous = time
                yield time, frame
            if previous is not None or origin == 0:
                return
    except av.error.FFmpegError as error:
        raise ClipError("undecodable_video", f"decoding failed after {float(previous or 0):.3f} s: {error}") from error


class FrameShaper:
    """Decoded frame -> the clip's frame: resize to cover and center-crop (:class:`datasets.clips.CropGeometry`).

    The resize happens in libswscale on the decoder's YUV (area averaging when shrinking, like the OpenCV
    ``INTER_AREA`` of :meth:`CropGeometry.apply`), into full-resolution chroma (``yuv444p``) so a crop at any offset,
    odd ones included, is exact; the crop is a numpy slice. No RGB frame is made: the encoder takes the ``yuv444p``
    frame and subsamples its chroma to ``yuv420p``. One reformatter serves the whole clip.
    """

    def __init__(self, geometry: CropGeometry) -> None:
        from av.video.reformatter import VideoReformatter

        self.geometry = geometry
        self._reformatter = VideoReformatter()

    def __call__(self, frame):
        import av

        width, height = self.geometry.resized
        shrinking = width < self.geometry.source_width
        resized = self._reformatter.reformat(
            frame, format="yuv444p", width=width, height=height, interpolation="AREA" if shrinking else "BILINEAR"
        )
        x, y = self.geometry.offset
        clip_width, clip_height = self.geometry.width, self.geometry.height
        shaped = av.VideoFrame(clip_width, clip_height, "yuv444p")
        for source, target in zip(resized.planes, shaped.planes):  # plane rows are padded to line_size bytes
            rows = np.frombuffer(source, np.uint8).reshape(-1, source.line_size)
            into = np.frombuffer(target, np.uint8).reshape(-1, target.line_size)
            into[:clip_height, :clip_width] = rows[y : y + clip_height, x : x + clip_width]
        return shaped


def _picked(decoded: Iterator[tuple[Fraction, object]], times: list[Fraction], info: SourceInfo, shape) -> Iterator:
    """For each output time, ``shape(frame)`` of the source frame on screen then (see :func:`datasets.clips.displayed_frames`).

    Only frames that are shown are shaped, each once (a frame shown twice when upsampling is shaped once).
    """
    index, held, held_time, held_shaped = 0, None, None, None
    for time, frame in decoded:
        while index < len(times) and times[index] < time:
            if held is None:  # the span starts before the first frame: show the first frame
                held, held_time = frame, time
            if held_shaped is None:
                held_shaped = shape(held)
            yield held_shaped
            index += 1
        if index >= len(times):
            return
        held, held_time, held_shaped = frame, time, None
    if held is None:
        raise ClipError("truncated_video", "no frame could be decoded in the span")
    following = bisect.bisect_right(info.frame_times, held_time)  # the next frame, decoded or skipped (see _frames)
    last = following >= len(info.frame_times)
    shown_until = held_time + info.frame_interval if last else info.frame_times[following]
    while index < len(times):
        if times[index] >= shown_until:
            raise ClipError(
                "truncated_video", f"frames stop at {float(shown_until):.3f} s, before the span's frame at {float(times[index]):.3f} s"
            )
        if held_shaped is None:
            held_shaped = shape(held)
        yield held_shaped
        index += 1


def exact_cut(container, stream, info: SourceInfo, start: Fraction, end: Fraction, config: CutConfig) -> CutClip:
    """Decode ``[start, end)``, resample to the configured rate, resize + crop, and encode to H.264 mp4."""
    end = check_span(info, start, end, config.end_tolerance_frames)
    fps = config.fps_fraction or info.average_rate
    times = output_times(start, end, fps)
    geometry = square_geometry(info.width, info.height, config.size)
    shown = shown_pts(info, times)
    if not stream.codec_context.is_open:  # decoder threads: set before the first decode of this container
        stream.codec_context.thread_count = config.threads
    encoder = make_encoder(geometry.width, geometry.height, fps, config)
    previous_hist, worst, to_rgb = None, 0.0, rgb_converter()
    try:
        frames = _picked(_decoded(container, stream, info, start, shown), times, info, FrameShaper(geometry))
        for number, frame in enumerate(frames):
            if config.scene_check:
                hist = color_histogram(to_rgb(frame))
                if previous_hist is not None:
                    distance = histogram_distance(previous_hist, hist)
                    worst = max(worst, distance)
                    if distance > config.scene_threshold:
                        raise ClipError(
                            "scene_cut",
                            f"histogram distance {distance:.2f} between clip frames {number - 1} and {number} "
                            f"(threshold {config.scene_threshold})",
                        )
                previous_hist = hist
            encoder.write(frame)
        data = encoder.finish()
    except BaseException:
        encoder.abort()
        raise
    return CutClip(
        data=data,
        frames=encoder.frames,
        fps=fps,
        width=geometry.width,
        height=geometry.height,
        cut_start=start,
        cut_end=start + Fraction(len(times)) / fps,
        scene_distance=worst if config.scene_check else None,
    )


def copy_cut(container, stream, info: SourceInfo, start: Fraction, end: Fraction, config: CutConfig) -> CutClip:
    """Copy the packets of ``[keyframe <= start, keyframe >= end)`` into a new mp4 (no decoding, no re-encoding)."""
    import av

    end = check_span(info, start, end, config.end_tolerance_frames)
    keyframes = info.keyframe_times
    first = keyframes[max(int(displayed_frames(list(keyframes), [start])[0]), 0)]
    following = [k for k in keyframes if k >= end]
    stop = following[0] if following else None
    to_ticks = lambda t: round((info.origin + t) / info.time_base)  # noqa: E731
    first_ticks, stop_ticks = to_ticks(first), None if stop is None else to_ticks(stop)
    path = temporary_mp4()
    output = av.open(path, "w", format="mp4", options={"movflags": "+faststart"})
    count, last_end = 0, first_ticks
    try:
        out_stream = output.add_stream_from_template(stream)
        _seek(container, stream, info, first)
        for packet in container.demux(stream):
            if packet.pts is None or packet.dts is None:
                continue
            if stop_ticks is not None and packet.is_keyframe and packet.pts >= stop_ticks:
                break
            if packet.pts < first_ticks:
                continue  # leading pictures of an open GOP reference the previous GOP
            last_end = max(last_end, packet.pts + (packet.duration or round(info.frame_interval / info.time_base)))
            packet.pts -= first_ticks
            packet.dts -= first_ticks
            packet.stream = out_stream
            output.mux(packet)
            count += 1
        output.close()
    except av.error.FFmpegError as error:
        raise ClipError("cut_failed", f"stream copy failed: {error}") from error
    finally:
        output.close()
        data = read_and_remove(path)
    if count == 0:
        raise ClipError("truncated_video", "no packets could be copied for the span")
    return CutClip(
        data=data,
        frames=count,
        fps=info.average_rate,
        width=info.width,
        height=info.height,
        cut_start=first,
        cut_end=last_end * info.time_base - info.origin,
    )
