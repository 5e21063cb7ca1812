"""Pose sequences from a driving video: keypoints per frame and a skeleton video, at the model's fps and size.

    python -m pose_extraction.video DANCE.mp4 --out poses/dance [--pose-backend mmpose|mediapipe]
        [--fps 8] [--size 512] [--every 1] [--max-frames 32] [--smoothing none|ema|one_euro]

Frames are resampled to ``--fps`` (the frame on screen at ``start + i / fps``,
the same rule as the clip builder, :func:`datasets.clips.displayed_frames`),
then every ``--every``-th of them is kept; the output runs at ``fps / every``.
The estimator (:func:`pose_extraction.backends.build_estimator`) sees each kept
frame at full resolution; its keypoints are then mapped through the resize +
center-crop to ``--size`` (:class:`datasets.clips.CropGeometry`, the transform
the clip reader applies to training frames). Points falling outside the crop
get score 0 and are clipped to the border, as every backend does.

Output folder layout: the pose-sequence record, :mod:`datasets.pose_sequence` (read it with
:func:`datasets.pose_sequence.read_pose_sequence`).

Smoothing (off by default) filters each tracked person's visible keypoints
over time (EMA or One-Euro); a point that disappears restarts its filter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from datasets.clips import CropGeometry, square_geometry
from datasets.keypoints import COCO17_NAMES, as_keypoints, boxes_from_keypoints
from datasets.pose_sequence import KIND, SCHEMA_VERSION, VIDEO_NAME, PoseSequence, write_keypoints
from datasets.video_io import VideoWriter, open_video
from pose_extraction.backends import PoseConfig, build_estimator
from pose_extraction.estimator import Poses, confine_to_image
from pose_extraction.mediapipe_backend import box_iou
from pose_extraction.skeleton import SkeletonStyle, render_skeleton

logger = logging.getLogger(__name__)



@dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    """How the driving-video tool samples, tracks, smooths and writes frames: everything but the pose estimator."""

    fps: float | None = None
    """Resample the video to this rate before taking every ``every``-th frame; None keeps the source's average rate."""
    every: int = 1
    """Keep every k-th resampled frame (the release's inference read every 5th); the output runs at ``fps / every``."""
    size: int | None = 512
    """Output frames are ``size`` x ``size`` (resize to cover, center crop); None (0 on the command line) keeps the
    source size (made even)."""
    start: float = 0.0
    """Seconds into the video where the sequence starts."""
    max_frames: int | None = None
    """Stop after this many output frames (None: to the end)."""
    frames_per_call: int = 8
    """Frames given to the estimator per call."""
    smoothing: Literal["none", "ema", "one_euro"] = "none"
    """Temporal filter of each tracked person's keypoints."""
    ema_alpha: float = 0.5
    """EMA weight of the new observation (1: no smoothing)."""
    one_euro_min_cutoff: float = 1.0
    """One-Euro minimum cutoff frequency (Hz): lower is smoother when still."""
    one_euro_beta: float = 0.05
    """One-Euro speed coefficient (per pixel/s): higher follows fast motion sooner."""
    track_iou: float = 0.3
    """A person continues the track whose box in the previous frame overlaps theirs by at least this IoU."""
    formats: Literal["json", "parquet", "both"] = "both"
    """Which keypoint files to write."""
    crf: int = 12
    """x264 quality of the skeleton video (low keeps the colours exact)."""
    style: SkeletonStyle = field(default_factory=SkeletonStyle)
    """Skeleton drawing; its threshold is also the visibility threshold of the smoothing."""

    def __post_init__(self) -> None:
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ValueError("fps must be in (0, 240]")
        if self.every < 1 or self.frames_per_call < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError("every, frames_per_call and max_frames must be at least 1")
        if self.size is not None and (self.size < 16 or self.size % 2):
            raise ValueError("size must be even and at least 16")
        if self.start < 0:
            raise ValueError("start must be non-negative")
        if self.smoothing not in ("none", "ema", "one_euro"):
            raise ValueError(f"smoothing must be 'none', 'ema' or 'one_euro', got {self.smoothing!r}")
        if not 0 < self.ema_alpha <= 1 or self.one_euro_min_cutoff <= 0 or self.one_euro_beta < 0:
            raise ValueError("need 0 < ema_alpha <= 1, one_euro_min_cutoff > 0, one_euro_beta >= 0")
        if self.formats not in ("json", "parquet", "both"):
            raise ValueError(f"formats must be 'json', 'parquet' or 'both', got {self.formats!r}")


@dataclass(frozen=True, kw_only=True)
class PoseVideoConfig(SequenceConfig):
    """What the driving-video tool reads, runs and writes."""

    pose: PoseConfig = field(default_factory=PoseConfig)
    """The pose estimator (backend, weights, device, persons)."""


@dataclass
class SampledFrame:
    index: int
    time: float
    source_frame: int
    image: np.ndarray


def sample_frames(path: str, config: PoseVideoConfig) -> tuple[dict, Iterator[SampledFrame]]:
    """``(source info, frames)``: the frames on screen at ``start + i * every / fps`` (decoded once, in order)."""
    container, stream = open_video(path)
    rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
    fps = Fraction(str(config.fps)).limit_denominator(1001) if config.fps is not None else rate
    info = {"path": str(path), "fps": float(rate), "width": stream.codec_context.width, "height": stream.codec_context.height}
    step, time_base = Fraction(config.every) / fps, Fraction(stream.time_base)

    def frames() -> Iterator[SampledFrame]:
        wanted, emitted, limit = Fraction(str(config.start)), 0, config.max_frames or math.inf
        held, held_time, held_number, image, origin = None, None, -1, None, None

        def emit():
            nonlocal image
            if image is None:
                image = held.to_ndarray(format="rgb24", width=info["width"], height=info["height"])
            return SampledFrame(emitted, float(wanted), held_number, image)

        try:
            for number, frame in enumerate(container.decode(stream)):
                if frame.pts is None:
                    continue
                origin = frame.pts if origin is None else origin
                time = (frame.pts - origin) * time_base
                while held is not None and wanted < time and emitted < limit:  # ``held`` is on screen at ``wanted``
                    yield emit()
                    emitted, wanted = emitted + 1, wanted + step
                if emitted >= limit:
                    return
                held, held_time, held_number, image = frame, time, number, None
            while held is not None and wanted < held_time + 1 / rate and emitted < limit:  # the last frame's display time
                yield emit()
                emitted, wanted = emitted + 1, wanted + step
        finally:
            container.close()

    return {**info, "output_fps": float(fps / config.every), "output_fps_fraction": fps / config.every}, frames()


class PersonTracker:
    """Gives each person a track id, matching boxes greedily (highest IoU first) with the previous frame."""

    def __init__(self, min_iou: float) -> None:
        self.min_iou = min_iou
        self.next_id = 0
        self.previous: tuple[list[int], np.ndarray] = ([], np.zeros((0, 4), np.float32))

    def __call__(self, boxes: np.ndarray) -> list[int]:
        previous_ids, previous_boxes = self.previous
        pairs = sorted(
            ((float(iou), i, j) for i, box in enumerate(boxes) for j, iou in enumerate(box_iou(box, previous_boxes)) if iou >= self.min_iou),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, i, j in pairs:
            if ids[i] is None and j not in taken:
                ids[i] = previous_ids[j]
                taken.add(j)
        for i in range(len(ids)):
            if ids[i] is None:
                ids[i], self.next_id = self.next_id, self.next_id + 1
        self.previous = (list(ids), np.asarray(boxes, np.float32).reshape(-1, 4))
        return list(ids)


class KeypointSmoother:
    """EMA or One-Euro filtering of each track's visible keypoints; absent tracks and hidden points restart."""

    def __init__(self, config: PoseVideoConfig, fps: float) -> None:
        self.config, self.dt = config, 1.0 / fps
        self.state: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # id -> (xy, velocity, valid)

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, track_ids: list[int], keypoints: np.ndarray) -> np.ndarray:
        if self.config.smoothing == "none":
            return keypoints
        out, state = keypoints.copy(), {}
        for person, track in enumerate(track_ids):
            xy = keypoints[person, :, :2].astype(np.float64)
            visible = keypoints[person, :, 2] > self.config.style.threshold
            previous = self.state.get(track)
            if previous is None:
                velocity, smoothed = np.zeros_like(xy), xy
            else:
                old, old_velocity, valid = previous
                use = (visible & valid)[:, None]
                if self.config.smoothing == "ema":
                    smoothed, velocity = self.config.ema_alpha * xy + (1 - self.config.ema_alpha) * old, old_velocity
                else:
                    raw_velocity = (xy - old) / self.dt
                    velocity = old_velocity + self._alpha(1.0) * (raw_velocity - old_velocity)
                    speed = np.linalg.norm(velocity, axis=1, keepdims=True)
                    alpha = self._alpha(self.config.one_euro_min_cutoff + self.config.one_euro_beta * speed)
                    smoothed = old + alpha * (xy - old)
                smoothed, velocity = np.where(use, smoothed, xy), np.where(use, velocity, 0.0)
            out[person, :, :2] = smoothed
            state[track] = (smoothed, velocity, visible)
        self.state = state
        return out


def map_poses(poses: Poses, geometry: CropGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keypoints, boxes, box_scores)`` of ``poses`` in output-frame pixels."""
    keypoints = as_keypoints(poses.keypoints).copy()
    keypoints[..., :2] = geometry.map_points(keypoints[..., :2])
    keypoints = confine_to_image(keypoints, geometry.height, geometry.width)
    boxes = geometry.map_points(poses.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, geometry.width - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, geometry.height - 1)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    boxes[empty] = boxes_from_keypoints(keypoints[empty]) if empty.any() else boxes[empty]
    return keypoints, boxes.astype(np.float32), poses.box_scores.astype(np.float32)


def extract_pose_sequence(video: str | Path, out: str | Path, config: PoseVideoConfig, estimator=None) -> PoseSequence:
    """Run the estimator over the sampled frames of ``video`` and write the keypoint files and ``pose.mp4`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source, frames = sample_frames(str(video), config)
    geometry = square_geometry(source["width"], source["height"], config.size)
    fps = source.pop("output_fps_fraction")
    owned = estimator is None
    estimator = estimator or build_estimator(config.pose)
    tracker, smoother = PersonTracker(config.track_iou), KeypointSmoother(config, float(fps))
    sequence = PoseSequence({}, [], [], [], [], [], [])
    writer = VideoWriter(out / VIDEO_NAME, fps, size=(geometry.width, geometry.height), crf=config.crf, preset="medium")
    ok = False
    try:
        for batch in _batches(frames, config.frames_per_call):
            for sampled, poses in zip(batch, estimator([f.image for f in batch])):
                keypoints, boxes, scores = map_poses(poses, geometry)
                ids = tracker(boxes)
                keypoints = smoother(ids, keypoints)
                writer.write(render_skeleton(keypoints, geometry.height, geometry.width, style=config.style))
                sequence.append(sampled, keypoints, boxes, scores, ids)
            logger.info("%s: %d frames done", Path(video).name, len(sequence.times))
        ok = bool(sequence.times)
    finally:
        if ok:
            writer.finish()
        else:
            writer.abort()
        if owned and hasattr(estimator, "close"):
            estimator.close()  # free the model now, not at interpreter exit
    if not ok:
        raise ValueError(f"{video}: no frame to process (start {config.start} s is past the end?)")
    sequence.header = {
        "schema": KIND, "schema_version": SCHEMA_VERSION, "fps": float(fps), "width": geometry.width, "height": geometry.height,
        "frames": len(sequence.times), "keypoint_layout": "coco17", "keypoint_names": list(COCO17_NAMES),
        "keypoint_threshold": config.style.threshold, "estimator": getattr(estimator, "name", type(estimator).__name__),
        "smoothing": {"method": config.smoothing, "ema_alpha": config.ema_alpha, "one_euro_min_cutoff": config.one_euro_min_cutoff,
                      "one_euro_beta": config.one_euro_beta},
        "source": source, "every": config.every, "start": config.start, "video": VIDEO_NAME,
        "transform": {"scale_x": geometry.resized[0] / geometry.source_width, "scale_y": geometry.resized[1] / geometry.source_height,
                      "offset_x": geometry.offset[0], "offset_y": geometry.offset[1]},
    }  # fmt: skip
    write_keypoints(out, sequence, config.formats)
    return sequence


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    """The command line (:mod:`pose_extraction.video_cli`)."""
    from pose_extraction.video_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
