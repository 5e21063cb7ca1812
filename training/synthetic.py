"""Synthetic training data with known poses, for tests, benchmarks and smoke runs.

Figures are drawn from random COCO-17 poses (limbs as thick strokes, a head
disk, on a coloured background) and written in the real record formats: a
LAION-Pose folder (:mod:`datasets.laion_pose`: tar + parquet index +
stats) whose keypoints are exactly the pose the figure was drawn from, and a
clip folder (:mod:`datasets.clips`) of figures moving over time, both written
atomically through :class:`datasets.shards.ShardWriter`. Because the
pose is known exactly, a model trained on them can be checked for following
the pose.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np

from datasets.keypoints import empty_keypoints
from datasets.shards import ShardWriter
from datasets.video_io import encode_mp4
from pose_extraction.skeleton import COCO17_LINKS, render_skeleton

# Offsets of the 17 keypoints from the hip centre for an upright figure of height 1 (x right, y down).
_NEUTRAL = np.array(
    [
        (0.0, -0.86), (0.03, -0.89), (-0.03, -0.89), (0.07, -0.87), (-0.07, -0.87),
        (0.13, -0.68), (-0.13, -0.68), (0.16, -0.47), (-0.16, -0.47), (0.18, -0.27), (-0.18, -0.27),
        (0.09, 0.0), (-0.09, 0.0), (0.10, 0.25), (-0.10, 0.25), (0.10, 0.50), (-0.10, 0.50),
    ],
    dtype=np.float32,
)
_ARM_CHAINS = ((5, 7, 9), (6, 8, 10))
_LEG_CHAINS = ((11, 13, 15), (12, 14, 16))


def random_pose(rng: np.random.Generator, size: int, *, scale: tuple[float, float] = (0.55, 0.8)) -> np.ndarray:
    """A random full-body pose ``(1, 17, 3)`` (score 1) fitting in a ``size`` square: arms and legs at random angles."""
    points = _NEUTRAL.copy()
    for shoulder, elbow, wrist in _ARM_CHAINS:
        upper, lower = rng.uniform(-2.6, 2.6), rng.uniform(-1.2, 1.2)
        side = np.sign(points[shoulder, 0])
        points[elbow] = points[shoulder] + 0.21 * np.array([side * np.sin(abs(upper)), np.cos(upper)], dtype=np.float32)
        points[wrist] = points[elbow] + 0.20 * np.array([side * np.sin(abs(upper + lower)), np.cos(upper + lower)], dtype=np.float32)
    for hip, knee, ankle in _LEG_CHAINS:
        angle = rng.uniform(-0.5, 0.5)
        side = np.sign(points[hip, 0])
        points[knee] = points[hip] + 0.25 * np.array([side * np.sin(abs(angle)), np.cos(angle)], dtype=np.float32)
        points[ankle] = points[knee] + 0.25 * np.array([0.0, 1.0], dtype=np.float32)
    height = rng.uniform(*scale) * size
    top, bottom = points[:, 1].min(), points[:, 1].max()
    cx = rng.uniform(0.3, 0.7) * size
    cy = size / 2 - (top + bottom) / 2 * height + rng.uniform(-0.05, 0.05) * size
    keypoints = empty_keypoints(1)
    keypoints[0, :, 0] = cx + points[:, 0] * height
    keypoints[0, :, 1] = cy + points[:, 1] * height
    keypoints[0, :, 2] = 1.0
    return keypoints


def draw_figure(
    keypoints: np.ndarray, size: int, *, background=(40, 60, 90), body=(230, 190, 160), thickness: float = 1 / 12
) -> np.ndarray:
    """An RGB ``size`` square: the figure of ``keypoints`` as body-coloured limbs ``thickness * size`` wide and a head disk."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = background
    stroke = max(2, round(size * thickness))
    for person in keypoints:
        points = np.round(person[:, :2]).astype(int)
        for a, b, _ in COCO17_LINKS[:12]:  # body links; the face links are covered by the head
            cv2.line(image, tuple(map(int, points[a])), tuple(map(int, points[b])), body, stroke, cv2.LINE_AA)
        head = max(3, int(np.linalg.norm(person[5, :2] - person[6, :2]) * 0.45))
        cv2.circle(image, tuple(map(int, points[0])), head, body, -1, cv2.LINE_AA)
    return image


def _jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_laion_pose(
    folder: str | Path, count: int, *, size: int = 96, per_shard: int = 16, seed: int = 0, background: tuple | None = None
) -> Path:
    """A LAION-Pose folder of ``count`` synthetic figures (``size`` squares) in shards of ``per_shard``;
    ``background`` is one RGB colour for all, or None for a random colour per image."""
    from datasets import laion_pose as schema

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    captions = ("a person", "a figure standing", "someone waving", "a person dancing")
    for shard in range(-(-count // per_shard)):
        stem = schema.shard_name(shard)
        rows = []
        with ShardWriter(folder, stem, kind=schema) as writer:
            for index in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                key = f"{index:09d}"
                keypoints = random_pose(rng, size)
                colour = background or tuple(int(v) for v in rng.integers(0, 120, 3))
                image = draw_figure(keypoints, size, background=colour)
                caption = captions[index % len(captions)]
                annotation = schema.make_annotation(
                    key=key, width=size, height=size, keypoints=keypoints, boxes=np.zeros((1, 4)),
                    box_scores=np.ones(1), estimator="synthetic", keypoint_threshold=0.3, caption=caption,
                )
                writer.write({
                    "__key__": key, "jpg": _jpeg(image), "txt": caption.encode(),
                    "json": json.dumps(annotation).encode(), "pose.png": _png(render_skeleton(keypoints, size, size)),
                })
                rows.append({"key": key, "status": schema.KEPT, "error": None, "url": None, "caption": caption,
                             "width": size, "height": size, "person_count": 1, "visible_keypoints": 17,
                             "shard": f"{stem}.tar", "sha256": None})
            writer.commit_rows(rows)
    return folder


def moving_pose(rng: np.random.Generator, size: int, frames: int) -> list[np.ndarray]:
    """``frames`` poses of one figure that drifts sideways while its limbs move smoothly (interpolated key poses)."""
    start, end = random_pose(rng, size), random_pose(rng, size)
    shift = rng.uniform(-0.15, 0.15) * size
    sequence = []
    for index in range(frames):
        w = index / max(frames - 1, 1)
        keypoints = start * (1 - w) + end * w
        keypoints[..., 0] += shift * w
        keypoints[..., 2] = 1.0
        sequence.append(keypoints.astype(np.float32))
    return sequence


def write_clips(
    folder: str | Path, count: int, *, size: int = 64, frames: int = 12, per_shard: int = 8, seed: int = 0,
    background: tuple | None = None,
) -> Path:
    """A clip folder (:mod:`datasets.clips` layout) of ``count`` synthetic clips of moving figures;
    ``background`` is one RGB colour for all, or None for a random colour per clip."""
    from datasets import clips as schema

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fps = 8
    for shard in range(-(-count // per_shard)):
        stem = schema.shard_name(shard)
        rows = []
        with ShardWriter(folder, stem, kind=schema) as writer:
            for index in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                video_id, caption = f"synthetic{index:06d}", "a person moving"
                key = schema.clip_key(video_id, 0)
                colour = background or tuple(int(v) for v in rng.integers(0, 120, 3))
                video = np.stack([draw_figure(k, size, background=colour) for k in moving_pose(rng, size, frames)])
                annotation = schema.make_annotation(
                    key=key, video_id=video_id, clip_id=f"{video_id}.0", clip_index=0,
                    span=("00:00:00.000", f"00:00:{frames / fps:06.3f}"), cut=(0.0, frames / fps), fps=fps,
                    frames=frames, width=size, height=size, caption=caption,
                    source={"path": None, "url": None, "fps": fps, "width": size, "height": size}, mode="exact",
                )
                writer.write({"__key__": key, "mp4": encode_mp4(video, fps), "txt": caption.encode(),
                              "json": json.dumps(annotation).encode()})
                rows.append({"key": key, "status": schema.KEPT, "video_id": video_id, "clip_id": f"{video_id}.0",
                             "clip_index": 0, "caption": caption, "span_start": 0.0, "span_end": frames / fps,
                             "cut_start": 0.0, "cut_end": frames / fps, "fps": float(fps), "frames": frames,
                             "width": size, "height": size, "shard": f"{stem}.tar", "flags": []})
            writer.commit_rows(rows)
    return folder
