"""The one reader of clip folders (:mod:`datasets.clips`): training, the benchmarks and the tests read clips through it.

    config = ClipDatasetConfig(root="clips/", num_frames=8, frame_stride=4, resolution=512)

Two ways in, the same samples: a dict of ``pixel_values`` float32 ``(frames, 3, H, W)`` in [-1, 1],
``caption`` (str), ``key`` (the builder's key) and ``frame_indices`` (int64, indices in the stored clip).

- Streaming, :class:`ClipDataset` (a torch ``IterableDataset``): the shards are read as WebDataset
  streams, split across distributed ranks and DataLoader workers, so every clip is read once per epoch::

      loader = torch.utils.data.DataLoader(ClipDataset(config), batch_size=1, num_workers=4)

- Random access, :class:`IndexedClipDataset` (training's): each tar's members are indexed once
  (:mod:`datasets.tar_index`), so ``dataset[(epoch, index)]`` is one seek and one read for any worker, in
  any order a batch sampler asks; a damaged sample is replaced by the next readable one and reported, and
  damaged shards are named and counted, under the config's :class:`~datasets.damage.DamagePolicy`
  (:mod:`datasets.damage`).

Every random choice of a sample (its start frame, caption dropout) comes from a generator seeded by
``(seed, epoch, index)`` in random access and ``(seed, epoch, key)`` when streaming (a stream has no
index), so neither the number of workers nor a resume changes what a sample is. Both ways share
:meth:`ClipReader.sample`: the frames at the stride, resized and center-cropped by the builder's
:class:`~datasets.clips.CropGeometry`, and the caption, chosen in :meth:`ClipReader.caption` only.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from datasets.clips import (
    ANNOTATION_EXT, CAPTION_EXT, KEPT, VIDEO_EXT, CropGeometry, check_annotation, pick_caption, read_index, shard_paths,
)  # fmt: skip
from datasets.damage import DamagePolicy, EmptyDataError, GuardedSamples, describe, require_samples
from datasets.tar_index import TarSampleReader
from datasets.video_io import decode_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClipDatasetConfig:
    """How :class:`ClipReader` samples frames from clip shards."""

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
    """Seed of the random starts, caption dropout and shuffles (combined with the epoch and the sample)."""
    caption_dropout: float = 0.0
    """Probability of replacing a caption by the empty string (the release: 0)."""
    caption_source: Literal["stored", "file", "model", "file_or_model", "model_or_file"] = "stored"
    """Which caption a clip gives (see :func:`datasets.clips.pick_caption`): the one stored with the clip, the
    user's caption file's, the captioning model's, or one preferring the other when a clip lacks it."""
    short_clips: Literal["skip", "error"] = "skip"
    """Clips with fewer frames than a sample spans: ``skip`` (counted, logged) or ``error`` (raise naming the clip)."""
    decoder: Literal["decord", "pyav"] = "decord"
    """Video decoder: decord (random access) or PyAV (sequential decode up to the last frame needed)."""
    decode_threads: int = 1
    """Decoder threads per worker."""
    shuffle_shards: bool = False
    """Streaming: visit shards in a seeded order that changes with :meth:`ClipReader.set_epoch`."""
    shuffle_buffer: int = 0
    """Streaming: shuffle samples within a worker through a buffer of this many undecoded clips (0: file order)."""
    damage: DamagePolicy = DamagePolicy()
    """Random access: how much damaged data is tolerated (by default max(8, 5%) of the samples)."""

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_stride < 1 or self.resolution < 1:
            raise ValueError("num_frames, frame_stride and resolution must be positive")
        if self.start not in ("random", "first", "center"):
            raise ValueError(f"start must be 'random', 'first' or 'center', got {self.start!r}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
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


def _annotation(raw: dict) -> dict:
    annotation = json.loads(raw[ANNOTATION_EXT])
    check_annotation(annotation)
    return annotation


def _kept_frames(shards: list[Path]) -> tuple[dict[str, int], set[int]]:
    """``{key: frames}`` of the kept clips in the shards' parquet indexes, and the shards whose index is unreadable."""
    import pyarrow.parquet as pq

    kept: dict[str, int] = {}
    unreadable: set[int] = set()
    for number, tar in enumerate(shards):
        try:
            rows = pq.read_table(tar.with_suffix(".parquet"), columns=["key", "status", "frames"]).to_pylist()
        except (OSError, ValueError) as error:  # pyarrow's errors are both
            logger.warning("shard %s is damaged (its index: %s): its clips are skipped", tar, describe(error))
            unreadable.add(number)
            continue
        kept.update({row["key"]: row["frames"] for row in rows if row["status"] == KEPT})
    return kept, unreadable


class ClipReader(GuardedSamples):
    """The reader of a clip folder: streams it (``iter``) and reads it by random access (``item``, ``[(epoch, index)]``).

    Use it through its torch faces: :class:`ClipDataset` (streaming) or :class:`IndexedClipDataset` (random
    access). ``ClipDataset`` is this class mixed with torch's ``IterableDataset``, made on first access so
    that importing the schema, as the builders' Ray workers do, does not import torch. This class has no
    ``len``: ``list(reader)`` would take it as a length hint and index every tar to stream them.

    Streaming splits shards across distributed ranks and DataLoader workers (shard ``i`` goes to global
    worker ``i % total``); give at least as many shards as ranks x workers, or some workers stay idle.
    """

    def __init__(self, config: ClipDatasetConfig) -> None:
        self.config = config
        self.shards = [str(p) for p in shard_paths(config.root)]
        if not self.shards:
            raise FileNotFoundError(f"no complete clip shards in {config.root}")
        self.damage_policy = config.damage
        self.epoch = 0
        self.skipped = 0
        """Clips skipped as too short by streams in *this* process (workers keep their own counts; see :meth:`summary`)."""
        self.too_short = 0
        """Clips left out of random access as too short (counted when the tars are indexed)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def summary(self) -> dict[str, int]:
        """From the parquet index: kept clips, how many are long enough for a sample and how many are skipped as too short."""
        table = read_index(self.config.root, columns=["status", "frames"])
        frames = [f for s, f in zip(table.column("status").to_pylist(), table.column("frames").to_pylist()) if s == KEPT]
        usable = sum(f >= self.config.span for f in frames)
        return {"clips": len(frames), "usable": usable, "too_short": len(frames) - usable}

    # --- one sample, both ways ---------------------------------------------------------------------------

    def caption(self, raw: dict, annotation: dict) -> str:
        """The caption of a clip: the one place it is chosen, per ``caption_source`` (``stored``: the ``txt`` member,
        else the annotation's)."""
        stored = raw[CAPTION_EXT].decode("utf-8") if CAPTION_EXT in raw else None
        return pick_caption(annotation, self.config.caption_source, stored=stored)

    def _start(self, frames: int, rng: np.random.Generator) -> int:
        room = frames - self.config.span
        if self.config.start == "first":
            return 0
        if self.config.start == "center":
            return room // 2
        return int(rng.integers(room + 1))

    def _short(self, key: str, frames: int) -> bool:
        """Whether the clip is too short for a sample (raising instead under ``short_clips='error'``)."""
        if frames >= self.config.span:
            return False
        if self.config.short_clips == "error":
            raise ValueError(f"clip {key} has {frames} frames; a sample needs {self.config.span} (short_clips='skip' skips it)")
        return True

    def sample(self, raw: dict, annotation: dict, rng: np.random.Generator) -> dict:
        """The sample of a raw clip: ``num_frames`` frames at the stride from the start (drawn from ``rng`` when
        random), resized and center-cropped, in [-1, 1]; the caption, dropped with ``caption_dropout`` (from ``rng``)."""
        import torch

        indices = np.arange(self.config.num_frames, dtype=np.int64) * self.config.frame_stride
        indices += self._start(int(annotation["frames"]), rng)
        pixels = decode_frames(raw[VIDEO_EXT], indices, decoder=self.config.decoder, threads=self.config.decode_threads)
        size = self.config.resolution
        geometry = CropGeometry(pixels.shape[2], pixels.shape[1], size, size)
        if (geometry.source_width, geometry.source_height) != (size, size):
            pixels = np.stack([geometry.apply(frame) for frame in pixels])
        # numpy arithmetic: torch's intra-op threads only add contention for an op this small
        values = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(127.5) - np.float32(1.0))
        caption = self.caption(raw, annotation)
        if rng.random() < self.config.caption_dropout:
            caption = ""
        return {"pixel_values": values, "caption": caption, "key": raw["__key__"], "frame_indices": torch.from_numpy(indices)}

    # --- streaming ----------------------------------------------------------------------------------------

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

    def _streamed(self, raw: dict) -> dict | None:
        annotation = _annotation(raw)
        key = raw["__key__"]
        if self._short(key, int(annotation["frames"])):
            self.skipped += 1
            logger.debug("skipping %s: %s frames < %d", key, annotation["frames"], self.config.span)
            return None
        return self.sample(raw, annotation, np.random.default_rng([self.config.seed, self.epoch, zlib.crc32(key.encode())]))

    def __iter__(self) -> Iterator[dict]:
        shards = self._my_shards()
        yielded, skipped_before = 0, self.skipped
        for raw in self._raw(shards):
            sample = self._streamed(raw)
            if sample is not None:
                yielded += 1
                yield sample
        if self.skipped > skipped_before:
            logger.info("clip reader: %d clips from %d shards, %d skipped as shorter than %d frames",
                        yielded, len(shards), self.skipped - skipped_before, self.config.span)

    # --- random access ------------------------------------------------------------------------------------

    @cached_property
    def tars(self) -> TarSampleReader:
        """The random-access index of the clips long enough for a sample, built on first use: damaged shards keep
        their readable clips and are named and counted; short clips are counted in :attr:`too_short`."""
        shards = [Path(s) for s in self.shards]
        kept, unreadable = _kept_frames(shards)
        tars = TarSampleReader(shards, required=(VIDEO_EXT, ANNOTATION_EXT))
        if unreadable:
            tars.lost_samples += sum(1 for m in tars.samples if m.shard in unreadable)
            tars.problems += [f"{shards[n].with_suffix('.parquet').name}: unreadable" for n in sorted(unreadable)]
            tars.samples = [m for m in tars.samples if m.shard not in unreadable]
        require_samples(tars, self.config.root)
        usable = [m for m in tars.samples if not self._short(m.key, kept.get(m.key) or 0)]
        self.too_short, tars.samples = len(tars.samples) - len(usable), usable
        if not usable:
            raise EmptyDataError(
                f"no clip in {self.config.root} has the {self.config.span} frames a sample spans "
                f"({self.config.num_frames} frames at stride {self.config.frame_stride}); {self.too_short} are shorter"
            )
        return tars

    def item(self, epoch: int, index: int) -> dict:
        """Sample ``index`` of the random-access index in ``epoch``, as read (``reader[(epoch, index)]`` replaces it
        by the next readable one if it is damaged, and reports that)."""
        raw = self.tars.read(index)
        return self.sample(raw, _annotation(raw), np.random.default_rng([self.config.seed, epoch, index]))


class IndexedClipDataset(ClipReader):
    """The reader's random access as a map-style dataset: ``len`` and ``dataset[(epoch, index)]``, for a DataLoader
    with any (batch) sampler. The tars are indexed here, so an empty or damaged folder raises before training."""

    def __init__(self, config: ClipDatasetConfig) -> None:
        super().__init__(config)
        self.tars  # noqa: B018  (index now)

    def __len__(self) -> int:
        return len(self.tars)


def __getattr__(name: str):
    """``ClipDataset``: :class:`ClipReader` as a torch ``IterableDataset``, defined when first asked for (PEP 562)."""
    if name == "ClipDataset":
        import torch.utils.data

        doc = "The clip reader streaming, as a torch ``IterableDataset``.\n\n    " + (ClipReader.__doc__ or "")
        dataset = type("ClipDataset", (ClipReader, torch.utils.data.IterableDataset), {"__module__": __name__, "__doc__": doc})
        globals()["ClipDataset"] = dataset
        return dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
