"""Toy samples in the formats of the real builders: LAION-Pose shards (stage 1) and clip shards (stage 2).

Records come from the schema modules (:func:`datasets.laion_pose.make_annotation`,
:func:`datasets.clips.make_annotation`, their index schemas and statuses) and every
shard goes through :class:`datasets.shards.ShardWriter`, so ``training.stage1`` and
``training.stage2`` read these folders exactly as they read real ones, and a killed
run leaves no shard that looks complete. Every toy row is ``kept``: the generator
makes figures that fit the frame by construction, so there is nothing to reject.
Annotations carry a ``toy`` entry (colours, figure style; for clips the keypoints of
every frame).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from fractions import Fraction

import numpy as np
from PIL import Image

from datasets import clips, laion_pose, video_io
from datasets.shards import ShardWriter, shard_stem
from pipelines.hdvila.config import CutConfig
from pipelines.hdvila.encoding import writer_options
from pipelines.toy_world.config import GENERATOR, ToyWorldConfig
from pipelines.toy_world.samples import ToySample, draw_sample, toy_extra
from pose_extraction.skeleton import render_skeleton

KEYPOINT_THRESHOLD = 0.3
"""Recorded as the annotations' visibility threshold (every toy keypoint has score 1)."""


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG without chroma subsampling (4:4:4): flat colour regions decode within a few levels of the original."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_mp4(frames: np.ndarray, config: ToyWorldConfig) -> bytes:
    """H.264 (yuv420p) mp4 of ``(T, H, W, 3)`` frames at ``config.fps``, by the clip builder's encoder."""
    cut = CutConfig(mode="exact", fps=config.fps, size=config.size, crf=config.crf, x264_preset=config.x264_preset, threads=1)
    return video_io.encode_mp4(frames, frame_rate(config), **writer_options(cut, frame_rate(config)))


def frame_rate(config: ToyWorldConfig) -> Fraction:
    return Fraction(str(config.fps)).limit_denominator(1001)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``(T, 4)`` float32 tight ``x1, y1, x2, y2`` boxes of ``(T, H, W)`` masks (pixel centres; zeros when empty)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[index] = (xs.min(), ys.min(), xs.max(), ys.max())
    return boxes


def image_members(config: ToyWorldConfig, sample: ToySample) -> dict:
    """The WebDataset sample of a still toy image (``jpg``, ``txt``, ``json``, ``pose.png``)."""
    keypoints = sample.keypoints[0]
    annotation = laion_pose.make_annotation(
        key=sample.key, width=config.size, height=config.size, keypoints=keypoints, boxes=mask_boxes(sample.masks),
        box_scores=np.ones(1, np.float32), estimator=GENERATOR, keypoint_threshold=KEYPOINT_THRESHOLD,
        caption=sample.caption, extra={"toy": toy_extra(config, sample)},
    )  # fmt: skip
    return {
        "__key__": sample.key,
        laion_pose.IMAGE_EXT: encode_jpeg(sample.frames[0], config.jpeg_quality),
        laion_pose.CAPTION_EXT: sample.caption.encode("utf-8"),
        laion_pose.ANNOTATION_EXT: json.dumps(annotation).encode("utf-8"),
        laion_pose.SKELETON_EXT: encode_png(render_skeleton(keypoints, config.size, config.size)),
    }


def build_image_shard(config: ToyWorldConfig, shard: int, directory) -> dict:
    """Draw and write LAION-Pose shard ``shard`` of ``directory``; returns its stats."""
    started, stem = time.monotonic(), shard_stem(shard)
    first, stop = shard * config.images_per_shard, min((shard + 1) * config.images_per_shard, config.images)
    rows, stored = [], 0
    with ShardWriter(directory, stem, kind=laion_pose) as writer:
        for index in range(first, stop):
            sample = draw_sample(config, "image", index)
            members = image_members(config, sample)
            writer.write(members)
            stored += len(members[laion_pose.IMAGE_EXT])
            rows.append({
                "key": sample.key, "status": laion_pose.KEPT, "error": None, "url": None, "caption": sample.caption,
                "width": config.size, "height": config.size, "person_count": 1, "visible_keypoints": 17,
                "shard": f"{stem}.tar", "sha256": hashlib.sha256(members[laion_pose.IMAGE_EXT]).hexdigest(),
            })  # fmt: skip
        return writer.commit_rows(rows, jpg_bytes=stored, elapsed_s=round(time.monotonic() - started, 3))


def span_text(seconds: float) -> str:
    """``HH:MM:SS.mmm``, the metadata's time format."""
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def clip_members(config: ToyWorldConfig, sample: ToySample) -> tuple[dict, dict]:
    """``(WebDataset sample, annotation)`` of a moving toy figure (``mp4``, ``txt``, ``json``)."""
    frames = len(sample.frames)
    duration = float(frames / frame_rate(config))
    data = encode_mp4(sample.frames, config)
    annotation = clips.make_annotation(
        key=clips.clip_key(sample.key, 0), video_id=sample.key, clip_id=sample.key, clip_index=0,
        span=(span_text(0.0), span_text(duration)), cut=(0.0, duration), fps=config.fps, frames=frames,
        width=config.size, height=config.size, caption=sample.caption, mode="exact",
        source={"path": None, "url": None, "fps": config.fps, "width": config.size, "height": config.size,
                "duration": duration, "variable_frame_rate": False, "generator": GENERATOR},
        extra={"toy": {**toy_extra(config, sample), "keypoints": [k.tolist() for k in sample.keypoints],
                       "motion_step": sample.motion_step}},
    )  # fmt: skip
    members = {
        "__key__": annotation["key"],
        clips.VIDEO_EXT: data,
        clips.CAPTION_EXT: sample.caption.encode("utf-8"),
        clips.ANNOTATION_EXT: json.dumps(annotation).encode("utf-8"),
    }
    return members, annotation


def _clip_row(annotation: dict, data: bytes, tar_name: str) -> dict:
    return {
        "key": annotation["key"], "status": clips.KEPT, "error": None, "flags": [], "video_id": annotation["video_id"],
        "clip_id": annotation["clip_id"], "clip_index": 0, "url": None, "caption": annotation["caption"], "source": None,
        "span_start": 0.0, "span_end": annotation["cut"][1], "cut_start": 0.0, "cut_end": annotation["cut"][1],
        "fps": annotation["fps"], "frames": annotation["frames"], "width": annotation["width"],
        "height": annotation["height"], "shard": tar_name, "sha256": hashlib.sha256(data).hexdigest(),
    }  # fmt: skip


def build_clip_shard(config: ToyWorldConfig, shard: int, directory) -> dict:
    """Draw, encode and write clip shard ``shard`` of ``directory``; returns its stats."""
    started, stem = time.monotonic(), shard_stem(shard)
    first, stop = shard * config.clips_per_shard, min((shard + 1) * config.clips_per_shard, config.clips)
    rows, stored, seconds = [], 0, 0.0
    with ShardWriter(directory, stem, kind=clips) as writer:
        for index in range(first, stop):
            members, annotation = clip_members(config, draw_sample(config, "clip", index))
            writer.write(members)
            stored += len(members[clips.VIDEO_EXT])
            seconds += annotation["cut"][1]
            rows.append(_clip_row(annotation, members[clips.VIDEO_EXT], f"{stem}.tar"))
        return writer.commit_rows(
            rows, input_clips=len(rows), kept_seconds=round(seconds, 3), mp4_bytes=stored,
            elapsed_s=round(time.monotonic() - started, 3),
        )  # fmt: skip


BUILDERS = {"images": build_image_shard, "clips": build_clip_shard}
"""Shard set name -> shard builder."""
