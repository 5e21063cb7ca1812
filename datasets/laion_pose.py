"""The LAION-Pose record: an image, its caption and the people found in it.

A LAION-Pose folder holds, per shard ``NNNNN``:

- ``NNNNN.tar``: WebDataset samples of kept images, each with
  ``jpg`` (the image), ``txt`` (caption), ``json`` (:func:`make_annotation`)
  and ``pose.png`` (the skeleton drawn by :mod:`pose_extraction.skeleton`);
- ``NNNNN.parquet``: one row per *input* row of the shard, kept or not, with
  :data:`INDEX_COLUMNS` plus the carried LAION columns, so every rejection is
  a counted row with its reason;
- ``NNNNN.stats.json``: counts per status for the shard;

and, once per folder, ``stats.json`` (totals) and ``config.json`` (the
resolved job config). Shards are written under a temporary name and renamed
last-to-first (``.parquet`` after ``.tar``, ``.stats.json`` last), so a shard
is complete exactly when its ``.stats.json`` exists.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from datasets.keypoints import as_keypoints, checked_keypoints

SCHEMA_VERSION = 1
KIND = "laion_pose"

# WebDataset suffixes of a sample.
IMAGE_EXT = "jpg"
CAPTION_EXT = "txt"
ANNOTATION_EXT = "json"
SKELETON_EXT = "pose.png"
SAMPLE_EXTS = (IMAGE_EXT, CAPTION_EXT, ANNOTATION_EXT, SKELETON_EXT)

# Statuses of an input row. Every input row ends with exactly one.
KEPT = "kept"
STATUSES: dict[str, str] = {
    KEPT: "at least one person with enough visible keypoints",
    "download_failed": "the URL could not be fetched (network error, timeout, HTTP error)",
    "refused_url": "the URL points to a local file or a private/loopback address and such URLs are not allowed",
    "opted_out": "the server's X-Robots-Tag header forbids this use of the image (noai, noimageai, noindex, noimageindex)",
    "not_an_image": "the response could not be decoded as an image",
    "image_too_small": "the image is smaller than the configured minimum size",
    "image_too_large": "the image has more pixels than the decompression-bomb limit",
    "no_person": "the pose model found nobody",
    "too_few_keypoints": "nobody had more than the required share of visible keypoints",
    "pose_failed": "the pose model raised an error on this image",
}

# Columns of the per-shard parquet index, before the carried LAION columns.
INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("person_count", pa.int32()),
        pa.field("visible_keypoints", pa.int32()),
        pa.field("shard", pa.string()),
        pa.field("sha256", pa.string()),
    ]
)
INDEX_COLUMNS = tuple(INDEX_SCHEMA.names)


def shard_name(index: int) -> str:
    return f"{index:05d}"


def make_annotation(
    *,
    key: str,
    width: int,
    height: int,
    keypoints: np.ndarray,
    boxes: np.ndarray,
    box_scores: np.ndarray,
    estimator: str,
    keypoint_threshold: float,
    caption: str,
    extra: dict | None = None,
) -> dict:
    """The ``json`` member of a sample: everything about the poses of one image."""
    keypoints = as_keypoints(keypoints)
    persons = [
        {
            "keypoints": person.round(3).tolist(),
            "box": [round(float(v), 2) for v in box],
            "box_score": round(float(score), 4),
            "score": round(float(person[:, 2].mean()), 4),
            "visible": int((person[:, 2] > keypoint_threshold).sum()),
        }
        for person, box, score in zip(keypoints, np.asarray(boxes).reshape(-1, 4), np.asarray(box_scores).reshape(-1))
    ]
    return {
        "schema": KIND,
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "width": int(width),
        "height": int(height),
        "caption": caption,
        "estimator": estimator,
        "keypoint_layout": "coco17",
        "keypoint_threshold": keypoint_threshold,
        "persons": persons,
        **(extra or {}),
    }


def annotation_keypoints(annotation: dict) -> np.ndarray:
    """``(P, 17, 3)`` float32 keypoints of an annotation, in stored-image pixels; ``ValueError`` for a non-finite value
    or an absurd coordinate."""
    return checked_keypoints([person["keypoints"] for person in annotation["persons"]])


def check_annotation(annotation: dict) -> None:
    """Raise ``ValueError`` for an annotation of another kind or an unknown schema version."""
    if annotation.get("schema") != KIND:
        raise ValueError(f"not a LAION-Pose annotation (schema={annotation.get('schema')!r})")
    if annotation.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"LAION-Pose schema version {annotation.get('schema_version')} is not supported (this reader: {SCHEMA_VERSION})"
        )


@dataclass(frozen=True)
class LaionPoseSample:
    """One decoded sample, as training reads it."""

    key: str
    image: np.ndarray
    """``(H, W, 3)`` uint8 RGB."""
    caption: str
    keypoints: np.ndarray
    """``(P, 17, 3)`` float32 in pixels of ``image``."""
    annotation: dict


def shard_paths(root: str | Path) -> list[Path]:
    """Complete shards of a LAION-Pose folder (those whose ``.stats.json`` exists), in order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LAION-Pose folder {root} does not exist")
    return sorted(p.with_name(p.name.removesuffix(".stats.json") + ".tar") for p in root.glob("*.stats.json"))


def decode_sample(sample: dict) -> LaionPoseSample:
    """Decode a raw WebDataset sample (bytes per suffix) into a :class:`LaionPoseSample`."""
    from PIL import Image

    annotation = json.loads(sample[ANNOTATION_EXT])
    check_annotation(annotation)
    with Image.open(io.BytesIO(sample[IMAGE_EXT])) as image:
        pixels = np.asarray(image.convert("RGB"))
    caption = sample[CAPTION_EXT].decode("utf-8") if CAPTION_EXT in sample else annotation.get("caption", "")
    return LaionPoseSample(
        key=sample["__key__"],
        image=pixels,
        caption=caption,
        keypoints=annotation_keypoints(annotation),
        annotation=annotation,
    )


def iter_samples(root_or_shards, *, shardshuffle: bool = False) -> Iterator[LaionPoseSample]:
    """Stream decoded samples from a LAION-Pose folder or a list of tar paths (single process)."""
    import webdataset as wds

    shards = shard_paths(root_or_shards) if isinstance(root_or_shards, (str, Path)) else list(root_or_shards)
    if not shards:
        raise FileNotFoundError(f"no complete LAION-Pose shards in {root_or_shards}")
    pipeline = wds.WebDataset([str(s) for s in shards], shardshuffle=shardshuffle, empty_check=False)
    for sample in pipeline:
        yield decode_sample(sample)


def read_index(root: str | Path) -> pa.Table:
    """All rows of the parquet indexes of a LAION-Pose folder (kept and rejected)."""
    import pyarrow.parquet as pq

    paths = [p.with_suffix(".parquet") for p in shard_paths(root)]
    if not paths:
        raise FileNotFoundError(f"no complete LAION-Pose shards in {root}")
    return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
