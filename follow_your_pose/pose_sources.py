"""What ``training.generate --pose`` does with what it read: check the frames are our skeletons, extract poses from
videos and photos of people, resample to a frame rate.

- :func:`extract_poses`: poses of a video (:func:`pose_extraction.video.extract_pose_sequence`) or of a folder of
  photos (the estimator per image) written as a pose-sequence folder (:mod:`datasets.pose_sequence`:
  ``keypoints.json`` + ``pose.mp4``, at the source's size) that ``--pose`` takes again.
- :func:`resampled`: the frames on screen at ``i / fps``, the clip builder's rule (:func:`datasets.clips.displayed_frames`).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def resample_indices(count: int, source_fps: float, fps: float) -> np.ndarray:
    """Indices of the ``count`` source frames (at ``source_fps``, constant) on screen at ``i / fps``, over the same span."""
    from datasets.clips import displayed_frames, output_times

    source = Fraction(str(source_fps)).limit_denominator(1001)
    target = Fraction(str(fps)).limit_denominator(1001)
    times = output_times(Fraction(0), count / source, target)
    return displayed_frames([Fraction(i) / source for i in range(count)], times)


def resampled(pose, fps: float, stride: int, limit: int | None):
    """``pose`` (a :class:`follow_your_pose.generate.PoseInput` read unstrided) at ``fps``, then every ``stride``-th frame."""
    if pose.fps is None:
        raise ValueError(f"--pose-fps needs the frame rate of the pose input, and {pose.source} has none (an image folder)")
    picks = resample_indices(len(pose), pose.fps, fps)[::stride][:limit]
    if pose.frames is not None:
        pose.frames = pose.frames[picks]
    else:
        pose.keypoints = [pose.keypoints[i] for i in picks]
    pose.fps = fps / stride
    return pose


def extract_poses(source: str, frames: np.ndarray | None, out: Path, *, pose_config, fps: float | None, stride: int,
                  limit: int | None, folder_fps: float):
    """Extract the poses of a video (``frames`` None: decoded again, at ``fps`` then every ``stride``-th) or of the
    photos ``frames`` (an image folder, already strided) into the pose-sequence folder ``out``; return it read back."""
    from datasets.pose_sequence import read_pose_sequence

    if frames is None:
        from pose_extraction.video import PoseVideoConfig, extract_pose_sequence

        config = PoseVideoConfig(pose=pose_config, fps=fps, every=stride, size=None, max_frames=limit, formats="json")
        extract_pose_sequence(source, out, config)
    else:
        if fps is not None:
            raise ValueError(f"--pose-fps needs the frame rate of the pose input, and {source} has none (an image folder)")
        _extract_photos(source, frames, out, pose_config, folder_fps)
    sequence = read_pose_sequence(out)
    if not any((k[..., 2] > 0.3).any() for k in sequence.keypoints):
        raise ValueError(f"no person found in {source} by the {pose_config.backend} pose backend (its poses: {out})")
    return sequence


def _extract_photos(source: str, frames: np.ndarray, out: Path, pose_config, fps: float) -> None:
    """Run the estimator on each photo; write the sequence (keypoints.json) and its skeleton video into ``out``."""
    from datasets.clips import square_geometry
    from datasets.keypoints import COCO17_NAMES
    from datasets.pose_sequence import KIND, SCHEMA_VERSION, VIDEO_NAME, PoseSequence, write_keypoints
    from datasets.video_io import write_video
    from pose_extraction.backends import build_estimator
    from pose_extraction.skeleton import DEFAULT_STYLE, render_sequence
    from pose_extraction.video import SampledFrame, map_poses

    height, width = frames.shape[1:3]
    geometry = square_geometry(width, height, None)  # the source size, made even for H.264
    estimator = build_estimator(pose_config)
    sequence = PoseSequence({}, [], [], [], [], [], [])
    try:
        for start in range(0, len(frames), 8):
            batch = frames[start : start + 8]
            for index, poses in enumerate(estimator(list(batch)), start):
                keypoints, boxes, scores = map_poses(poses, geometry)
                sampled = SampledFrame(index, index / fps, index, batch[index - start])
                sequence.append(sampled, keypoints, boxes, scores, list(range(len(keypoints))))
    finally:
        if hasattr(estimator, "close"):
            estimator.close()
    sequence.header = {
        "schema": KIND, "schema_version": SCHEMA_VERSION, "fps": float(fps), "width": geometry.width,
        "height": geometry.height, "frames": len(frames), "keypoint_layout": "coco17", "keypoint_names": list(COCO17_NAMES),
        "keypoint_threshold": DEFAULT_STYLE.threshold, "estimator": getattr(estimator, "name", type(estimator).__name__),
        "smoothing": {"method": "none"}, "source": {"path": source, "fps": None, "width": width, "height": height},
        "every": 1, "start": 0.0, "video": VIDEO_NAME,
        "transform": {"scale_x": geometry.resized[0] / width, "scale_y": geometry.resized[1] / height,
                      "offset_x": geometry.offset[0], "offset_y": geometry.offset[1]},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    skeletons = render_sequence(sequence.keypoints, geometry.height, geometry.width)
    write_video(skeletons, out / VIDEO_NAME, fps, crf=12, preset="medium")
    write_keypoints(out, sequence, "json")
