"""Streaming clips for training: :class:`ClipDataset` (a torch ``IterableDataset``) over a clip folder.

    dataset = ClipDataset(ClipDatasetConfig(root="clips/", num_frames=8, frame_stride=4, resolution=512))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=4)
    for batch in loader:  # pixel_values (B, 8, 3, 512, 512) in [-1, 1], caption, key, frame_indices
        ...

The record it reads is :mod:`datasets.clips`.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from datasets.clips import (
    ANNOTATION_EXT, CAPTION_EXT, KEPT, VIDEO_EXT, CropGeometry, check_annotation, read_index, shard_paths,
)  # fmt: skip
from datasets.video_io import decode_frames

logger = logging.getLogger(__name__)

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
