"""The video-clip record (HD-VILA clips for stage 2) and its geometry.

A clip folder holds, per shard ``NNNNN``:

- ``NNNNN.tar``: WebDataset samples of kept clips, each with ``mp4`` (H.264,
  constant frame rate, the clip only), ``txt`` (caption, possibly empty) and
  ``json`` (:func:`make_annotation`: source video, span, fps, frame count, size);
- ``NNNNN.parquet``: one row per *input* clip of the shard, kept or not, with
  :data:`INDEX_SCHEMA`, so every rejection is a counted row with its reason;
- ``NNNNN.stats.json``: counts per status for the shard;

and, once per folder, ``stats.json`` (totals) and ``config.json`` (the resolved
job config). A shard is complete exactly when its ``.stats.json`` exists (it is
renamed into place last).

Keys are ``<video_id>_<clip index>`` with every character outside
``[A-Za-z0-9_-]`` replaced by ``_`` (WebDataset splits names at the first dot);
the clip index is the clip's position in its video's ``clip`` list.

Frame geometry (:class:`CropGeometry`) and timing (:func:`output_times`,
:func:`displayed_frames`) live here because the builder, this reader and the
driving-video pose tool must resize, crop and resample in exactly the same way.

The one reader of these shards (streaming and random access) is :mod:`datasets.clip_reader`.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets.video_io import decode_frames  # noqa: F401  # the clip decoder, importable beside the record


SCHEMA_VERSION = 1
KIND = "video_clip"

# WebDataset suffixes of a sample.
VIDEO_EXT = "mp4"
CAPTION_EXT = "txt"
ANNOTATION_EXT = "json"
SAMPLE_EXTS = (VIDEO_EXT, CAPTION_EXT, ANNOTATION_EXT)

# Statuses of an input clip. Every input clip ends with exactly one.
KEPT = "kept"
STATUSES: dict[str, str] = {
    KEPT: "cut, encoded and written to the shard's tar",
    "invalid_metadata": "the metadata line is not a JSON object with a video_id and a clip list (key: invalid_line_<N>)",
    "invalid_span": "the span is not a pair of HH:MM:SS.mmm times",
    "empty_span": "the span ends at or before its start (zero or negative length)",
    "duplicate_video": "the video_id (after key sanitising) appeared earlier in the metadata; its keys would repeat",
    "overlapping_span": "the span overlaps an earlier span of the same video and overlap_policy is 'reject'",
    "too_short": "the span is shorter than the configured minimum length",
    "too_long": "the span is longer than the configured maximum length",
    "missing_video": "no file for this video_id in the video sources (and no download, or it was not allowed)",
    "download_failed": "yt-dlp could not download the video",
    "undecodable_video": "the file could not be opened, has no video stream, or its first frames do not decode",
    "truncated_video": "decoding stopped before the span's end although the container declares a longer video",
    "span_past_end": "the span ends after the last frame of the video",
    "variable_frame_rate": "the source has a variable frame rate and vfr_policy is 'reject'",
    "scene_cut": "the scene-cut check found a cut inside the clip",
    "cut_failed": "decoding or encoding raised an unexpected error on this clip",
    "caption_empty": "the captioning model generated no text for the clip",
    "caption_repetitive": "the generated caption repeats a word or phrase over and over (a degenerate generation)",
    "caption_too_long": "the generated caption has more words than allowed, or was cut off at the token limit",
    "caption_mismatch": "the CLIP similarity of the generated caption to the clip's sampled frames is below the threshold",
    "caption_failed": "the clip's frames did not decode for captioning, or the captioning model raised on it",
}
CAPTION_STATUSES = ("caption_empty", "caption_repetitive", "caption_too_long", "caption_mismatch", "caption_failed")
"""Statuses of the captioning stage: a clip whose generated caption is rejected is not written (counted with its reason)."""

# Caption sources: where a clip's caption text came from.
FILE_SOURCE = "file"
"""The caption file the user brought (``--captions``)."""
MODEL_SOURCE_PREFIX = "model:"
"""A generated caption: ``model:<hub id or folder of the captioning model>``."""
CAPTION_POLICIES: dict[str, str] = {
    "stored": "the clip's txt member, as the builder chose it (a generated caption over a file caption unless told otherwise)",
    "file": "the caption from the user's caption file; empty when the clip has none",
    "model": "the generated caption; empty when the clip has none",
    "file_or_model": "the file caption, else the generated one",
    "model_or_file": "the generated caption, else the file one",
}
"""Which caption training uses (:func:`pick_caption`)."""
# Flags a kept clip may carry (index column ``flags``, annotation ``flags``); counted in stats as ``flag:<name>``.
FLAGS: dict[str, str] = {
    "variable_frame_rate": "the source has a variable frame rate (exact mode resampled it to a constant rate; copy mode kept its timestamps)",
    "overlapping_span": "the span overlaps an earlier span of the same video (overlap_policy 'keep')",
}

INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("flags", pa.list_(pa.string())),
        pa.field("video_id", pa.string()),
        pa.field("clip_id", pa.string()),
        pa.field("clip_index", pa.int32()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("caption_source", pa.string()),
        pa.field("caption_sources", pa.list_(pa.string())),
        pa.field("generated_caption", pa.string()),
        pa.field("caption_similarity", pa.float64()),
        pa.field("source", pa.string()),
        pa.field("span_start", pa.float64()),
        pa.field("span_end", pa.float64()),
        pa.field("cut_start", pa.float64()),
        pa.field("cut_end", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("frames", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("shard", pa.string()),
        pa.field("sha256", pa.string()),
    ]
)
INDEX_COLUMNS = tuple(INDEX_SCHEMA.names)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_id(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (never empty)."""
    return _UNSAFE.sub("_", str(text)) or "_"


def clip_key(video_id: str, clip_index: int) -> str:
    return f"{sanitize_id(video_id)}_{int(clip_index)}"


def shard_name(index: int) -> str:
    return f"{index:05d}"


def make_annotation(
    *,
    key: str,
    video_id: str,
    clip_id: str,
    clip_index: int,
    span: tuple[str, str],
    cut: tuple[float, float],
    fps: float,
    frames: int,
    width: int,
    height: int,
    caption: str,
    source: dict,
    mode: str,
    flags: list[str] | tuple[str, ...] = (),
    captions: dict[str, str] | None = None,
    caption_source: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The ``json`` member of a sample.

    ``span`` is the metadata's pair of ``HH:MM:SS.mmm`` strings; ``cut`` the
    ``[start, end)`` seconds of the source actually covered (equal to the span
    in the exact mode, keyframe-aligned in the stream-copy mode). ``source``
    describes the source video (``path``, ``url``, ``fps``, ``width``, ``height``,
    ``duration``, ``variable_frame_rate``). ``captions`` maps each caption source
    (``file``, ``model:<id>``) to its text and ``caption_source`` names the source
    of ``caption``; by default ``caption`` is the caption file's.
    """
    if captions is None:
        captions = {FILE_SOURCE: caption} if caption else {}
        caption_source = FILE_SOURCE if caption else None
    return {
        "schema": KIND,
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "video_id": video_id,
        "clip_id": clip_id,
        "clip_index": int(clip_index),
        "span": list(span),
        "cut": [round(float(cut[0]), 6), round(float(cut[1]), 6)],
        "mode": mode,
        "fps": float(fps),
        "frames": int(frames),
        "width": int(width),
        "height": int(height),
        "caption": caption,
        "caption_source": caption_source,
        "captions": dict(captions),
        "flags": list(flags),
        "source": source,
        **(extra or {}),
    }


def caption_sources(annotation: dict) -> dict[str, str]:
    """``{source: text}`` of every caption a clip has (``file``, ``model:<id>``); clips cut before captioning recorded
    sources hold their caption-file text only."""
    recorded = annotation.get("captions")
    if isinstance(recorded, dict):
        return {str(k): str(v) for k, v in recorded.items() if v}
    caption = annotation.get("caption") or ""
    return {FILE_SOURCE: caption} if caption else {}


def pick_caption(annotation: dict, policy: str = "stored", stored: str | None = None) -> str:
    """The caption training uses for a clip, per ``policy`` (a key of :data:`CAPTION_POLICIES`).

    ``annotation`` is the clip's ``json`` member; ``stored`` its ``txt`` member (default: the annotation's
    ``caption``). Returns ``""`` when the clip has no caption from the chosen source.
    """
    if policy not in CAPTION_POLICIES:
        raise ValueError(f"unknown caption policy {policy!r}; choose one of {sorted(CAPTION_POLICIES)}")
    if policy == "stored":
        return annotation.get("caption", "") if stored is None else stored
    sources = caption_sources(annotation)
    from_file = sources.get(FILE_SOURCE, "")
    generated = next((text for source, text in sources.items() if source.startswith(MODEL_SOURCE_PREFIX)), "")
    order = {"file": [from_file], "model": [generated], "file_or_model": [from_file, generated], "model_or_file": [generated, from_file]}
    return next((text for text in order[policy] if text), "")


def check_annotation(annotation: dict) -> None:
    """Raise ``ValueError`` for an annotation of another kind or an unknown schema version."""
    if annotation.get("schema") != KIND:
        raise ValueError(f"not a video-clip annotation (schema={annotation.get('schema')!r})")
    if annotation.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"video-clip schema version {annotation.get('schema_version')} is not supported (this reader: {SCHEMA_VERSION})"
        )


def shard_paths(root: str | Path) -> list[Path]:
    """Complete shards of a clip folder (those whose ``.stats.json`` exists), in order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder {root} does not exist")
    return sorted(p.with_name(p.name.removesuffix(".stats.json") + ".tar") for p in root.glob("*.stats.json"))


def read_index(root: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All rows of the parquet indexes of a clip folder (kept and rejected)."""
    import pyarrow.parquet as pq

    paths = [p.with_suffix(".parquet") for p in shard_paths(root)]
    if not paths:
        raise FileNotFoundError(f"no complete clip shards in {root}")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths], promote_options="default")


# --- geometry and timing shared by the builder, the reader and the pose tool ---------------------


@dataclass(frozen=True)
class CropGeometry:
    """Resize so the target box is covered, then crop its center: ``(source) -> (width, height)``."""

    source_width: int
    source_height: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if min(self.source_width, self.source_height, self.width, self.height) < 1:
            raise ValueError(f"sizes must be positive: {self}")

    @property
    def scale(self) -> float:
        return max(self.width / self.source_width, self.height / self.source_height)

    @property
    def resized(self) -> tuple[int, int]:
        """``(width, height)`` after resizing, before cropping (each at least the target)."""
        return (
            max(self.width, round(self.source_width * self.scale)),
            max(self.height, round(self.source_height * self.scale)),
        )

    @property
    def offset(self) -> tuple[int, int]:
        """``(x, y)`` of the crop's top-left corner in the resized image."""
        resized_width, resized_height = self.resized
        return (resized_width - self.width) // 2, (resized_height - self.height) // 2

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize and center-crop one ``(H, W, C)`` uint8 image."""
        import cv2

        if image.shape[:2] != (self.source_height, self.source_width):
            raise ValueError(f"image is {image.shape[:2]}, geometry expects {(self.source_height, self.source_width)}")
        resized_width, resized_height = self.resized
        if (resized_width, resized_height) != (self.source_width, self.source_height):
            shrinking = resized_width < self.source_width
            image = cv2.resize(image, (resized_width, resized_height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        x, y = self.offset
        return np.ascontiguousarray(image[y : y + self.height, x : x + self.width])

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` source-pixel coordinates into the output image (same transform as :meth:`apply`)."""
        resized_width, resized_height = self.resized
        x, y = self.offset
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] * (resized_width / self.source_width) - x
        out[..., 1] = out[..., 1] * (resized_height / self.source_height) - y
        return out


def square_geometry(source_width: int, source_height: int, size: int | None) -> CropGeometry:
    """The geometry to a ``size`` square, or, for ``None``, the largest even-sized frame that fits (H.264 needs even sizes)."""
    if size is None:
        return CropGeometry(source_width, source_height, source_width - source_width % 2, source_height - source_height % 2)
    return CropGeometry(source_width, source_height, size, size)


def output_times(start: Fraction, end: Fraction, fps: Fraction) -> list[Fraction]:
    """Times ``start + i / fps`` of the output frames of ``[start, end)``: ``ceil((end - start) * fps)`` of them."""
    count = max(0, math.ceil((end - start) * fps))
    return [start + Fraction(i) / fps for i in range(count)]


def displayed_frames(source_times: list[Fraction], times: list[Fraction]) -> np.ndarray:
    """For each time, the index of the source frame on screen then (the last one starting at or before it; 0 before the first).

    ``source_times`` must be sorted; comparisons are exact (``Fraction``), so a frame starting exactly at a time is chosen.
    """
    last = max(len(source_times) - 1, 0)
    return np.array([min(max(bisect.bisect_right(source_times, t) - 1, 0), last) for t in times], dtype=np.int64)
