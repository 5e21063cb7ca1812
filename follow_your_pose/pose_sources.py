"""What ``training.generate --pose`` does with what it read: check the frames are our skeletons, extract poses from
videos and photos of people, resample to a frame rate.

- :func:`extract_poses`: poses of a video (:func:`pose_extraction.video.extract_pose_sequence`) or of a folder of
  photos (the estimator per image) written as a pose-sequence folder (:mod:`datasets.pose_sequence`:
  ``keypoints.json`` + ``pose.mp4``, at the source's size) that ``--pose`` takes again.
- :func:`resampled`: the frames on screen at ``i / fps``, the clip builder's rule (:func:`datasets.clips.displayed_frames`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from datasets.video_io import read_video

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


@dataclass
class PoseInput:
    """A pose sequence as read from disk: skeleton frames, or keypoints with their frame size."""

    frames: np.ndarray | None = None
    keypoints: list[np.ndarray] | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.frames) if self.frames is not None else len(self.keypoints)


def read_pose_input(path: str | Path, *, stride: int = 1, limit: int | None = None) -> PoseInput:
    """Read ``--pose`` (see the module docstring).

    Keypoint files people already have are read too (:mod:`datasets.keypoint_formats` says which points map
    where): a folder of OpenPose JSON frames (BODY_25 or COCO-18, one file per frame, sorted by name), or one
    JSON file of DWPose/controlnet_aux dicts or a ComfyUI POSE_KEYPOINT list. They become COCO-17 keypoints with
    their frame size, drawn and recorded as a pose sequence's are; a folder holding both .json files and images
    is read as OpenPose frames when its .json files are, else as skeleton images.
    """
    from datasets.keypoint_formats import is_keypoint_source, read_keypoint_source
    from datasets.pose_sequence import JSON_NAME, PARQUET_NAME, read_pose_sequence

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pose input {path} does not exist")
    if path.is_file() and path.name in (JSON_NAME, PARQUET_NAME):
        path = path.parent
    if path.is_dir() and ((path / JSON_NAME).exists() or (path / PARQUET_NAME).exists()):
        sequence = read_pose_sequence(path)
        keypoints = sequence.keypoints[::stride][:limit]
        size = (int(sequence.header["width"]), int(sequence.header["height"]))
        return PoseInput(keypoints=keypoints, size=size, fps=sequence.fps / stride, source=str(path))
    if is_keypoint_source(path):
        try:
            keypoints, size, rate = read_keypoint_source(path)
            fps = None if rate is None else rate / stride
            return PoseInput(keypoints=keypoints[::stride][:limit], size=size, fps=fps, source=str(path))
        except ValueError:
            if path.is_file() or not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
                raise
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[::stride][:limit]
        if not files:
            raise ValueError(f"{path} holds no skeleton images ({', '.join(IMAGE_EXTENSIONS)}) nor keypoints")
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"the skeleton images in {path} differ in size")
        return PoseInput(frames=np.stack(frames), source=str(path))
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        frames, rate = read_video(path, stride, limit)
        return PoseInput(frames=frames, fps=None if rate is None else rate / stride, source=str(path))
    raise ValueError(f"cannot read a pose sequence from {path}: expected a video, an image folder or keypoints")
