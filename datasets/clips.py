"""The video-clip record (HD-VILA clips for stage 2), its geometry, and the training reader.

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

Training reads clips with :class:`ClipDataset` (a torch ``IterableDataset``)::

    dataset = ClipDataset(ClipDatasetConfig(root="clips/", num_frames=8, frame_stride=4, resolution=512))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=4)
    for batch in loader:  # pixel_values (B, 8, 3, 512, 512) in [-1, 1], caption, key, frame_indices
        ...
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa

from datasets.video_io import decode_frames  # noqa: F401  # the clip decoder; training reads it as clips.decode_frames

logger = logging.getLogger(__name__)

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
}
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
    extra: dict | None = None,
) -> dict:
    """The ``json`` member of a sample.

    ``span`` is the metadata's pair of ``HH:MM:SS.mmm`` strings; ``cut`` the
    ``[start, end)`` seconds of the source actually covered (equal to the span
    in the exact mode, keyframe-aligned in the stream-copy mode). ``source``
    describes the source video (``path``, ``url``, ``fps``, ``width``, ``height``,
    ``duration``, ``variable_frame_rate``).
    """
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
        "flags": list(flags),
        "source": source,
        **(extra or {}),
    }


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


# --- the training reader ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClipDatasetConfig:
    """How :class:`ClipDataset` samples frames from clip shards."""

    root: str
    """Clip folder written by ``pipelines/build_hdvila_clips.py`` (its complete shards are read)."""
    num_frames: int = 8
    """Frames per sample (the paper: 8)."""
    frame_stride: int = 4
    """Take every k-th frame of the stored clip (the release: 4); a sample spans ``(num_frames - 1) * stride + 1`` frames."""
    resolution: int = 512
    """Frames are resized to cover ``resolution`` x ``resolution`` and center-cropped to it."""
    start: Literal["random", "first", "center"] = "random"
    """Where the frames start in the clip: seeded random, the first frame, or centered."""
    seed: int = 0
    """Seed of the random starts and shuffles (combined with the epoch and the clip key: independent of workers)."""
    short_clips: Literal["skip", "error"] = "skip"
    """Clips with fewer frames than a sample spans: ``skip`` (counted, logged) or ``error`` (raise naming the clip)."""
    decoder: Literal["decord", "pyav"] = "decord"
    """Video decoder: decord (random access) or PyAV (sequential decode up to the last frame needed)."""
    decode_threads: int = 1
    """Decoder threads per worker."""
    shuffle_shards: bool = False
    """Visit shards in a seeded order that changes with :meth:`ClipDataset.set_epoch`."""
    shuffle_buffer: int = 0
    """Shuffle samples within a worker through a buffer of this many undecoded clips (0: file order)."""

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_stride < 1 or self.resolution < 1:
            raise ValueError("num_frames, frame_stride and resolution must be positive")
        if self.start not in ("random", "first", "center"):
            raise ValueError(f"start must be 'random', 'first' or 'center', got {self.start!r}")
        if self.short_clips not in ("skip", "error"):
            raise ValueError(f"short_clips must be 'skip' or 'error', got {self.short_clips!r}")
        if self.decoder not in ("decord", "pyav"):
            raise ValueError(f"decoder must be 'decord' or 'pyav', got {self.decoder!r}")
        if self.decode_threads < 0 or self.shuffle_buffer < 0:
            raise ValueError("decode_threads and shuffle_buffer must be non-negative")

    @property
    def span(self) -> int:
        """Stored frames one sample covers."""
        return (self.num_frames - 1) * self.frame_stride + 1


class ClipReader:
    """Streams clip shards as ``num_frames`` frames at ``frame_stride``; use it as :class:`ClipDataset`.

    ``ClipDataset`` is this class mixed with torch's ``IterableDataset``, made on
    first access (``from datasets.clips import ClipDataset``) so that importing the
    schema, as the builders' Ray workers do, does not import torch.

    Each sample is a dict: ``pixel_values`` float32 ``(frames, 3, H, W)`` in
    [-1, 1], ``caption`` (str), ``key`` (str, the builder's key) and
    ``frame_indices`` (int64, indices in the stored clip). Shards are split
    across distributed ranks and DataLoader workers (shard ``i`` goes to global
    worker ``i % total``), so every clip is read once per epoch; give at least
    as many shards as ranks x workers, or some workers stay idle.
    """

    def __init__(self, config: ClipDatasetConfig) -> None:
        self.config = config
        self.shards = [str(p) for p in shard_paths(config.root)]
        if not self.shards:
            raise FileNotFoundError(f"no complete clip shards in {config.root}")
        self.epoch = 0
        self.skipped = 0
        """Clips skipped as too short by iterations in *this* process (workers keep their own counts; see :meth:`summary`)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def summary(self) -> dict[str, int]:
        """From the parquet index: kept clips, how many are long enough for a sample and how many are skipped as too short."""
        table = read_index(self.config.root, columns=["status", "frames"])
        frames = [f for s, f in zip(table.column("status").to_pylist(), table.column("frames").to_pylist()) if s == KEPT]
        usable = sum(f >= self.config.span for f in frames)
        return {"clips": len(frames), "usable": usable, "too_short": len(frames) - usable}

    def _my_shards(self) -> list[str]:
        import torch.distributed as dist
        import torch.utils.data

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = list(self.shards)
        if self.config.shuffle_shards:
            order = [order[i] for i in np.random.default_rng([self.config.seed, self.epoch]).permutation(len(order))]
        total = world * workers
        if len(order) < total and worker == 0 and rank == 0:
            logger.warning("%d shards for %d workers: %d workers get nothing", len(order), total, total - len(order))
        return order[rank * workers + worker :: total]

    def _raw(self, shards: list[str]) -> Iterator[dict]:
        import webdataset as wds

        samples = iter(wds.WebDataset(shards, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False))
        if not self.config.shuffle_buffer:
            yield from samples
            return
        rng = np.random.default_rng([self.config.seed, self.epoch, zlib.crc32("".join(shards).encode())])
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.config.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def _start(self, key: str, frames: int) -> int:
        room = frames - self.config.span
        if self.config.start == "first":
            return 0
        if self.config.start == "center":
            return room // 2
        return int(np.random.default_rng([self.config.seed, self.epoch, zlib.crc32(key.encode())]).integers(room + 1))

    def _sample(self, raw: dict) -> dict | None:
        import torch

        annotation = json.loads(raw[ANNOTATION_EXT])
        check_annotation(annotation)
        key, frames = raw["__key__"], int(annotation["frames"])
        if frames < self.config.span:
            if self.config.short_clips == "error":
                raise ValueError(f"clip {key} has {frames} frames; a sample needs {self.config.span} (short_clips='skip' skips it)")
            self.skipped += 1
            logger.debug("skipping %s: %d frames < %d", key, frames, self.config.span)
            return None
        start = self._start(key, frames)
        indices = np.arange(self.config.num_frames, dtype=np.int64) * self.config.frame_stride + start
        pixels = decode_frames(raw[VIDEO_EXT], indices, decoder=self.config.decoder, threads=self.config.decode_threads)
        size = self.config.resolution
        geometry = CropGeometry(pixels.shape[2], pixels.shape[1], size, size)
        if (geometry.source_width, geometry.source_height) != (size, size):
            pixels = np.stack([geometry.apply(frame) for frame in pixels])
        # numpy arithmetic: torch's intra-op threads only add contention for an op this small
        values = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(127.5) - np.float32(1.0))
        caption = raw[CAPTION_EXT].decode("utf-8") if CAPTION_EXT in raw else annotation.get("caption", "")
        return {"pixel_values": values, "caption": caption, "key": key, "frame_indices": torch.from_numpy(indices)}

    def __iter__(self) -> Iterator[dict]:
        shards = self._my_shards()
        yielded, skipped_before = 0, self.skipped
        for raw in self._raw(shards):
            sample = self._sample(raw)
            if sample is not None:
                yielded += 1
                yield sample
        if self.skipped > skipped_before:
            logger.info("clip reader: %d clips from %d shards, %d skipped as shorter than %d frames",
                        yielded, len(shards), self.skipped - skipped_before, self.config.span)


def __getattr__(name: str):
    """``ClipDataset``: :class:`ClipReader` as a torch ``IterableDataset``, defined when first asked for (PEP 562)."""
    if name == "ClipDataset":
        import torch.utils.data

        dataset = type("ClipDataset", (ClipReader, torch.utils.data.IterableDataset), {"__module__": __name__, "__doc__": ClipReader.__doc__})
        globals()["ClipDataset"] = dataset
        return dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
