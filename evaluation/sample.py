"""One generated video to evaluate: its frames, its record and its input pose.

The layout is :mod:`datasets.generated` (``OUT.mp4`` + ``OUT.pose.mp4`` +
``OUT.json``). :func:`load_sample` checks everything a metric relies on and
raises :class:`SampleError` with a reason a person can act on; the evaluator
turns that into a rejection row and goes on with the other videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.generated import POSE_VIDEO_SUFFIX, VIDEO_SUFFIX, read_record, record_keypoints, sidecar_paths
from evaluation.video_io import VideoError, count_frames, read_video


class SampleError(ValueError):
    """A generated video cannot be evaluated; the message says why."""


@dataclass(frozen=True)
class VideoSample:
    """A decoded generated video with what it was generated from."""

    key: str
    """The video's file stem: unique within a folder, used to name cached states and report media."""
    path: Path
    """The generated ``OUT.mp4``."""
    pose_path: Path | None
    """The skeleton video ``OUT.pose.mp4`` it was conditioned on, when present."""
    record: dict
    """The ``OUT.json`` record (prompt, keypoints, settings, model id)."""
    frames: np.ndarray
    """RGB uint8 ``(T, H, W, 3)`` generated frames."""

    @property
    def prompt(self) -> str:
        return self.record["prompt"]

    @property
    def keypoints(self) -> list[np.ndarray] | None:
        """Per-frame ``(P, 17, 3)`` input keypoints in generated-frame pixels, or None if the record has none."""
        return record_keypoints(self.record)


def video_key(path: str | Path) -> str:
    """The key of a generated video: its file name without ``.mp4``."""
    return Path(path).name.removesuffix(".mp4")


def scan_videos(root: str | Path) -> list[Path]:
    """Every ``OUT.mp4`` of ``root`` (pose videos aside), with or without its record: one without is rejected with
    that reason by :func:`load_sample`, never skipped silently. A folder with no such mp4 is an error that says what
    was expected."""
    root = Path(root)
    if not root.is_dir():
        raise SampleError(f"--videos {root} is not a folder")
    videos = sorted(p for p in root.glob(f"*{VIDEO_SUFFIX}") if not p.name.endswith(POSE_VIDEO_SUFFIX))
    if not videos:
        raise SampleError(
            f"no generated videos in {root}: expected OUT.mp4 files with OUT.json records "
            f"(and OUT.pose.mp4) as training.generate writes them"
        )
    return videos


def load_sample(path: str | Path) -> VideoSample:
    """Decode ``path`` and check it against its record and pose video; :class:`SampleError` on any mismatch."""
    path = Path(path)
    _, record_path = sidecar_paths(path)
    if not record_path.exists():
        raise SampleError(f"no record {record_path.name} beside it (training.generate writes OUT.mp4 with OUT.json and OUT.pose.mp4)")
    try:
        record = read_record(path)
    except (OSError, ValueError) as error:
        raise SampleError(f"unreadable record: {error}") from error
    if not isinstance(record.get("prompt"), str):
        raise SampleError("record has no prompt")
    try:
        frames = read_video(path)
    except VideoError as error:
        raise SampleError(str(error)) from error
    expected = int(record.get("frames") or 0)
    if len(frames) != expected:
        raise SampleError(f"video has {len(frames)} decodable frames but its record says {expected} (missing frames?)")
    height, width = frames.shape[1:3]
    if (width, height) != (record.get("width"), record.get("height")):
        raise SampleError(f"video is {width}x{height} but its record says {record.get('width')}x{record.get('height')}")
    keypoints = record_keypoints(record)
    if keypoints is not None and len(keypoints) != len(frames):
        raise SampleError(f"record has keypoints for {len(keypoints)} frames but the video has {len(frames)}")
    pose_path, _ = sidecar_paths(path)
    if pose_path.exists():
        try:
            pose_frames = count_frames(pose_path)
        except VideoError as error:
            raise SampleError(f"pose video: {error}") from error
        if pose_frames != len(frames):
            raise SampleError(f"pose video has {pose_frames} frames but the generated video has {len(frames)}")
    else:
        pose_path = None
    return VideoSample(key=video_key(path), path=path, pose_path=pose_path, record=record, frames=frames)
