"""Opening a source video and reading its timing: frame times, keyframes, end, frame-rate regularity.

One demux pass over the video's packets (no decoding) gives every frame's
presentation time, so spans can be checked against the real end of the
video, truncated files told apart from short ones, keyframes found for the
stream-copy mode, and variable frame rates detected.

Times are exact fractions of a second measured from the video's first frame
(the span origin: HD-VILA spans are player times, which start at the first
frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from statistics import median


class ClipError(Exception):
    """A clip (or a whole video) that cannot be cut; ``status`` is one of :data:`datasets.clips.STATUSES`."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SourceInfo:
    """Timing and format of a source video's first video stream."""

    width: int
    height: int
    codec: str
    time_base: Fraction
    origin: Fraction
    """Stream time of the first frame; span time ``t`` is stream time ``origin + t``."""
    frame_times: tuple[Fraction, ...]
    """Sorted presentation times of every frame, relative to ``origin`` (the first is 0)."""
    keyframe_times: tuple[Fraction, ...]
    """Sorted presentation times of the keyframes, relative to ``origin``."""
    end: Fraction
    """End of the last frame (its time plus its duration), relative to ``origin``."""
    declared_duration: Fraction | None
    """What the container says the duration is (None when it does not say)."""
    average_rate: Fraction
    """Frames per second: the stream's average rate, else one over the median frame interval."""
    frame_interval: Fraction
    """Median interval between consecutive frames."""
    variable_frame_rate: bool
    vfr_detail: str

    def describe(self, path: str, url: str = "") -> dict:
        """The ``source`` object of a clip annotation."""
        return {
            "path": path,
            "url": url,
            "codec": self.codec,
            "fps": round(float(self.average_rate), 6),
            "width": self.width,
            "height": self.height,
            "duration": round(float(self.end), 6),
            "variable_frame_rate": self.variable_frame_rate,
        }


def open_video(path: str):
    """``(container, stream)`` of the first video stream of ``path``; :class:`ClipError` ``undecodable_video`` when impossible."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise ClipError("undecodable_video", f"cannot open {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise ClipError("undecodable_video", f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _vfr(intervals: list[int], tolerance: float) -> tuple[bool, str]:
    if len(intervals) < 2:
        return False, ""
    typical = median(intervals)
    allowed = max(1.0, tolerance * typical)  # one tick of rounding is never VFR (29.97 fps in 1/1000 ticks: 33, 34, 33)
    odd = [d for d in intervals if abs(d - typical) > allowed]
    if not odd:
        return False, ""
    return True, f"{len(odd)} of {len(intervals)} frame intervals differ from the median {typical} ticks (range {min(intervals)}..{max(intervals)})"


def probe_video(container, stream, *, vfr_tolerance: float) -> SourceInfo:
    """Demux every packet of ``stream`` (no decoding) and summarise the timing."""
    import av

    time_base = Fraction(stream.time_base)
    times: list[int] = []
    keyframes: list[int] = []
    ends: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            times.append(packet.pts)
            ends.append(packet.pts + (packet.duration or 0))
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.error.FFmpegError:
        pass  # a damaged tail: keep what was readable; spans beyond it become truncated_video
    if not times:
        raise ClipError("undecodable_video", "no video frames could be read")
    times.sort()
    keyframes.sort()
    intervals = [b - a for a, b in zip(times, times[1:]) if b > a]
    typical = Fraction(median(intervals)) if intervals else Fraction(1)
    rate = Fraction(stream.average_rate) if stream.average_rate else 1 / (typical * time_base)
    first = times[0]
    end_ticks = max(max(ends), times[-1] + typical)
    variable, detail = _vfr(intervals, vfr_tolerance)
    declared = None
    if stream.duration:
        declared = stream.duration * time_base
    elif container.duration:
        declared = Fraction(container.duration, 1_000_000)
    codec_context = stream.codec_context
    return SourceInfo(
        width=codec_context.width,
        height=codec_context.height,
        codec=codec_context.name,
        time_base=time_base,
        origin=first * time_base,
        frame_times=tuple((t - first) * time_base for t in times),
        keyframe_times=tuple((t - first) * time_base for t in keyframes),
        end=(end_ticks - first) * time_base,
        declared_duration=declared,
        average_rate=rate,
        frame_interval=typical * time_base,
        variable_frame_rate=variable,
        vfr_detail=detail,
    )


def check_span(info: SourceInfo, start: Fraction, end: Fraction, end_tolerance_frames: float) -> Fraction:
    """The span's end clipped to the video's end; :class:`ClipError` when the span lies past the readable video."""
    tolerance = info.frame_interval * Fraction(end_tolerance_frames).limit_denominator(1000)
    if end <= info.end + tolerance and start < info.end:
        return min(end, info.end)
    readable = f"the readable video ends at {float(info.end):.3f} s"
    if info.declared_duration is not None and info.declared_duration >= end - tolerance:
        status, message = "truncated_video", (
            f"span ends at {float(end):.3f} s and the container declares {float(info.declared_duration):.3f} s, "
            f"but {readable}: the file is truncated or damaged"
        )
    else:
        status, message = "span_past_end", f"span [{float(start):.3f}, {float(end):.3f}) s: {readable}"
    raise ClipError(status, message)
