"""The generated-video record: what ``training.generate`` writes and ``evaluation.run`` reads.

A generation ``OUT.mp4`` has two sidecars next to it, sharing its stem:

- ``OUT.pose.mp4``: the skeleton frames the model was conditioned on, at the
  generated size and frame count;
- ``OUT.json``: :func:`make_record` (prompt, pose keypoints per frame in
  generated-frame pixels, settings, model id).

A folder of such triples is what ``evaluation.run --videos DIR`` scans.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets.atomic import write_json
from datasets.keypoints import as_keypoints

SCHEMA_VERSION = 1
KIND = "generated_video"
VIDEO_SUFFIX = ".mp4"
POSE_VIDEO_SUFFIX = ".pose.mp4"
RECORD_SUFFIX = ".json"


def sidecar_paths(video_path: str | Path) -> tuple[Path, Path]:
    """``(pose video, record)`` paths belonging to a generated ``video_path``."""
    video_path = Path(video_path)
    stem = video_path.name.removesuffix(VIDEO_SUFFIX)
    return video_path.with_name(stem + POSE_VIDEO_SUFFIX), video_path.with_name(stem + RECORD_SUFFIX)


def make_record(
    *,
    prompt: str,
    keypoints_per_frame: list | None,
    width: int,
    height: int,
    frames: int,
    fps: float,
    model: str,
    settings: dict,
    negative_prompt: str = "",
    source: str | None = None,
    key: str | None = None,
) -> dict:
    """The ``OUT.json`` sidecar. ``keypoints_per_frame`` is one ``(P, 17, 3)`` array per frame, or None when the
    pose was given only as skeleton images (then pose metrics cannot use it as ground truth)."""
    keypoints = None
    if keypoints_per_frame is not None:
        if len(keypoints_per_frame) != frames:
            raise ValueError(f"{len(keypoints_per_frame)} pose frames for {frames} video frames")
        keypoints = [as_keypoints(k).round(3).tolist() for k in keypoints_per_frame]
    return {
        "schema": KIND,
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "width": int(width),
        "height": int(height),
        "frames": int(frames),
        "fps": float(fps),
        "model": model,
        "pose_source": source,
        "keypoint_layout": "coco17",
        "keypoints": keypoints,
        "settings": settings,
    }


def write_record(video_path: str | Path, record: dict) -> Path:
    _, record_path = sidecar_paths(video_path)
    return write_json(record_path, record, indent=1)


def read_record(video_path: str | Path) -> dict:
    _, record_path = sidecar_paths(video_path)
    if not record_path.exists():
        raise FileNotFoundError(f"{video_path} has no record {record_path.name} beside it")
    record = json.loads(record_path.read_text())
    if record.get("schema") != KIND or record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{record_path} is not a generated-video record of version {SCHEMA_VERSION}")
    return record


def record_keypoints(record: dict) -> list[np.ndarray] | None:
    """The per-frame ``(P, 17, 3)`` keypoints of a record, or None when it has none."""
    if record.get("keypoints") is None:
        return None
    return [as_keypoints(k) for k in record["keypoints"]]


def find_generated(root: str | Path) -> list[Path]:
    """Generated videos in ``root`` (``*.mp4`` with a record beside them, pose videos excluded), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    videos = [
        p for p in root.glob(f"*{VIDEO_SUFFIX}")
        if not p.name.endswith(POSE_VIDEO_SUFFIX) and sidecar_paths(p)[1].exists()
    ]
    return sorted(videos)
