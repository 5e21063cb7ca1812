"""Training data of both stages: deterministic, resumable, random-access.

Stage 1 reads LAION-Pose tars (:mod:`datasets.laion_pose`) by random access:
each tar's member offsets are indexed once, so a sample is one seek and one
read, any worker can serve any sample, and the order is a seeded permutation
per epoch. Every random choice of a sample (crop, flip, caption dropout) comes
from a generator seeded by ``(seed, epoch, index)``: the same sample always
gets the same augmentation, whatever the number of workers, and a resumed run
sees exactly the batches it would have seen.

The random resized crop transforms the image and its keypoints together; the
skeleton is then drawn at the training size by the shared renderer
(:func:`pose_extraction.skeleton.render_skeleton`), never cropped as pixels.

Stage 2 reads clip shards of :mod:`datasets.clips` the same way (:class:`ClipFrameDataset`).

Damaged shards and samples (a truncated or empty tar, a member that does not
decode, NaN or absurd keypoints) are skipped, named and counted, and a run
stops past a limit: the policy of :mod:`training.damage`.
"""

from __future__ import annotations

import json
import logging
import math
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets import clips
from datasets.keypoints import COCO17_FLIP_PAIRS, as_keypoints
from datasets.laion_pose import decode_sample
from datasets.laion_pose import shard_paths as laion_shard_paths
from datasets.tar_index import TarSampleReader
from pose_extraction.skeleton import render_skeleton
from training.config import ClipDataConfig, ConfigError, ImageDataConfig
from training.damage import DAMAGED_KEY, MAX_REPLACEMENTS, DamagedDataError, damage_errors, describe

log = logging.getLogger(__name__)


def require_shards(shard_paths, root, kind: str) -> list[Path]:
    """The complete shards of ``root`` (``shard_paths`` is the record kind's own finder); ConfigError if none."""
    try:
        shards = shard_paths(root) if root else []
    except FileNotFoundError as error:
        raise ConfigError(f"data: {error}") from error
    if not shards:
        raise ConfigError(f"data: no complete {kind} shards (*.tar with *.stats.json) in {str(root)!r}")
    return shards


def require_samples(reader: TarSampleReader, root) -> None:
    """Raise when nothing is readable: :class:`DamagedDataError` naming damaged shards, else ConfigError."""
    if reader.samples:
        return
    if reader.problems:
        raise DamagedDataError(f"data: no readable sample in {root}: {len(reader.problems)} damaged shard(s) ({'; '.join(reader.problems[:3])})")
    raise ConfigError(f"the shards in {root} hold no samples")


class GuardedSamples:
    """Item access that replaces a damaged sample by the next readable one and reports it (see :mod:`training.damage`).

    Subclasses hold ``reader`` (a :class:`TarSampleReader`) and implement ``item(epoch, index)``.
    """

    reader: TarSampleReader

    @cached_property
    def _damage_errors(self) -> tuple:
        return damage_errors()

    @property
    def expected_samples(self) -> int:
        return self.reader.expected_samples

    @property
    def lost_samples(self) -> int:
        return self.reader.lost_samples

    def first_readable(self, index: int, load) -> tuple:
        """``load(i)`` for the first ``i`` from ``index`` on (wrapping) that loads, and the reports of those before."""
        reports = []
        for step in range(min(MAX_REPLACEMENTS, len(self.reader) - 1) + 1):
            candidate = (index + step) % len(self.reader)
            try:
                return load(candidate), reports
            except self._damage_errors as error:
                reports.append(f"{self.reader.where(candidate)}: {describe(error)}")
        raise DamagedDataError(f"data: {len(reports)} samples in a row are damaged, from {reports[0]}")

    def __getitem__(self, item: tuple[int, int] | int) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        out, reports = self.first_readable(index, lambda candidate: self.item(epoch, candidate))
        return {**out, DAMAGED_KEY: "\n".join(reports)}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice made for sample ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


def crop_box(height: int, width: int, config: ImageDataConfig, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A random ``(x0, y0, x1, y1)`` crop: aspect ratio drawn log-uniformly from ``crop_ratio``, area from
    ``crop_scale`` as a fraction of the largest crop of that ratio that fits, position uniform."""
    low, high = np.log(config.crop_ratio[0]), np.log(config.crop_ratio[1])
    ratio = float(np.exp(rng.uniform(low, high))) if high > low else float(np.exp(low))
    max_width = min(float(width), height * ratio)
    max_height = max_width / ratio
    scale = math.sqrt(rng.uniform(*config.crop_scale)) if config.crop_scale[1] > config.crop_scale[0] else math.sqrt(config.crop_scale[0])
    crop_width, crop_height = max_width * scale, max_height * scale
    x0 = rng.uniform(0.0, width - crop_width) if width > crop_width else 0.0
    y0 = rng.uniform(0.0, height - crop_height) if height > crop_height else 0.0
    return x0, y0, x0 + crop_width, y0 + crop_height


def map_keypoints(keypoints: np.ndarray, box: tuple[float, float, float, float], size: int, flip: bool) -> np.ndarray:
    """Keypoints of the original image in the ``size`` x ``size`` resized crop ``box`` (pixel centres at integers);
    ``flip`` mirrors them and swaps left and right. Scores are kept: points outside are clipped by the renderer."""
    out = as_keypoints(keypoints).copy()
    x0, y0, x1, y1 = box
    out[..., 0] = (out[..., 0] + 0.5 - x0) * (size / (x1 - x0)) - 0.5
    out[..., 1] = (out[..., 1] + 0.5 - y0) * (size / (y1 - y0)) - 0.5
    if flip:
        out[..., 0] = size - 1 - out[..., 0]
        order = np.arange(out.shape[1])
        for a, b in COCO17_FLIP_PAIRS:
            order[a], order[b] = b, a
        out = out[:, order]
    return out


def transform_sample(
    image: np.ndarray, keypoints: np.ndarray, caption: str, config: ImageDataConfig, rng: np.random.Generator
) -> dict:
    """Crop, resize and (maybe) flip an image with its keypoints; render the skeleton; drop the caption (maybe).

    Returns ``pixel_values`` (3, R, R) float32 in [-1, 1], ``pose`` (3, R, R) float32 in [0, 1] (the
    skeleton), ``keypoints`` (P, 17, 3) in output pixels, ``crop`` (5,): the crop box ``x0 y0 x1 y1`` in source
    pixels and 1 if flipped, and ``caption``.
    """
    size = config.resolution
    height, width = image.shape[:2]
    box = crop_box(height, width, config, rng)
    flip = bool(config.random_flip and rng.random() < 0.5)
    dropped = bool(rng.random() < config.caption_dropout)
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, box=box)
    if flip:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    points = map_keypoints(keypoints, box, size, flip)
    skeleton = render_skeleton(points, size, size)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    pose = torch.from_numpy(skeleton.astype(np.float32)).permute(2, 0, 1) / 255.0
    crop = torch.tensor([*box, float(flip)], dtype=torch.float64)
    return {"pixel_values": pixels, "pose": pose, "keypoints": points, "crop": crop, "caption": "" if dropped else caption}


class PoseImageDataset(GuardedSamples, torch.utils.data.Dataset):
    """Stage-1 samples of a LAION-Pose folder, indexed by ``(epoch, index)`` (see :class:`ResumableBatchSampler`)."""

    def __init__(self, root: str | Path, config: ImageDataConfig, *, seed: int) -> None:
        shards = require_shards(laion_shard_paths, root, "LAION-Pose")
        self.reader = TarSampleReader(shards, required=("jpg", "json"))
        require_samples(self.reader, root)
        self.config = config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.reader)

    def key(self, index: int) -> str:
        return self.reader.samples[index].key

    def load(self, index: int):
        """The decoded :class:`datasets.laion_pose.LaionPoseSample` at ``index`` (no augmentation; a damaged one is
        replaced by the next readable sample)."""
        return self.first_readable(index, lambda candidate: decode_sample(self.reader.read(candidate)))[0]

    def item(self, epoch: int, index: int) -> dict:
        sample = decode_sample(self.reader.read(index))
        out = transform_sample(sample.image, sample.keypoints, sample.caption, self.config, sample_rng(self.seed, epoch, index))
        out.pop("keypoints")  # variable person count: not collatable
        return {**out, "key": sample.key}


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Per-process batches of ``(epoch, index)``: a seeded permutation per epoch, split across processes.

    Every process gets ``len(dataset) // processes`` indices (the remainder is left out of that epoch)
    and the last incomplete batch is dropped. :meth:`set_position` chooses the epoch and how many
    batches of it to skip, so a resumed run continues the same sequence.
    """

    def __init__(self, length: int, batch_size: int, *, seed: int, shuffle: bool, rank: int = 0, world: int = 1) -> None:
        self.length, self.batch_size, self.seed, self.shuffle = length, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the dataset has {length} samples, fewer than one batch of {batch_size} on each of {world} processes"
            )

    @property
    def batches_per_epoch(self) -> int:
        return (self.length // self.world) // self.batch_size

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def indices(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.length) if self.shuffle else np.arange(self.length)
        per_process = self.length // self.world
        return order[: per_process * self.world][self.rank :: self.world]

    def __iter__(self):
        indices = self.indices(self.epoch)
        for batch in range(self.start, self.batches_per_epoch):
            chunk = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def _kept_frames(shards: list[Path]) -> tuple[dict[str, int], set[int]]:
    """``{key: frames}`` of the kept clips in the shards' parquet indexes, and the shards whose index is unreadable."""
    import pyarrow.parquet as pq

    kept: dict[str, int] = {}
    unreadable: set[int] = set()
    for number, tar in enumerate(shards):
        try:
            rows = pq.read_table(tar.with_suffix(".parquet"), columns=["key", "status", "frames"]).to_pylist()
        except (OSError, ValueError) as error:  # pyarrow's errors are both
            log.warning("shard %s is damaged (its index: %s): its clips are skipped", tar, describe(error))
            unreadable.add(number)
            continue
        kept.update({row["key"]: row["frames"] for row in rows if row["status"] == clips.KEPT})
    return kept, unreadable


class ClipFrameDataset(GuardedSamples, torch.utils.data.Dataset):
    """Stage-2 samples of a clip folder (:mod:`datasets.clips`), indexed by ``(epoch, index)``.

    Random access over the same tars :class:`datasets.clip_reader.ClipDataset` streams, decoded with that
    module's :func:`~datasets.clips.decode_frames` and :class:`~datasets.clips.CropGeometry`; the
    start frame and caption dropout come from the ``(seed, epoch, index)`` generator, so order,
    workers and resumes do not change what a sample is. Clips shorter than a sample spans are left
    out (counted in :attr:`too_short`, from the parquet index).
    """

    def __init__(self, root: str | Path, config: ClipDataConfig, *, seed: int) -> None:
        shards = require_shards(clips.shard_paths, root, "clip")
        self.config, self.seed, self.span = config, seed, (config.num_frames - 1) * config.frame_stride + 1
        kept, unreadable = _kept_frames(shards)
        self.reader = TarSampleReader(shards, required=(clips.VIDEO_EXT, clips.ANNOTATION_EXT))
        if unreadable:
            self.reader.lost_samples += sum(1 for m in self.reader.samples if m.shard in unreadable)
            self.reader.problems += [f"{shards[n].with_suffix('.parquet').name}: unreadable" for n in sorted(unreadable)]
            self.reader.samples = [m for m in self.reader.samples if m.shard not in unreadable]
        require_samples(self.reader, root)
        self.too_short = sum(1 for m in self.reader.samples if (kept.get(m.key) or 0) < self.span)
        self.reader.samples = [m for m in self.reader.samples if (kept.get(m.key) or 0) >= self.span]
        if not self.reader.samples:
            raise ConfigError(
                f"no clip in {root} has the {self.span} frames a sample spans "
                f"({config.num_frames} frames at stride {config.frame_stride}); {self.too_short} are shorter"
            )

    def __len__(self) -> int:
        return len(self.reader)

    def key(self, index: int) -> str:
        return self.reader.samples[index].key

    def item(self, epoch: int, index: int) -> dict:
        raw = self.reader.read(index)
        annotation = json.loads(raw[clips.ANNOTATION_EXT])
        clips.check_annotation(annotation)
        rng = sample_rng(self.seed, epoch, index)
        start = int(rng.integers(int(annotation["frames"]) - self.span + 1))
        indices = np.arange(self.config.num_frames, dtype=np.int64) * self.config.frame_stride + start
        frames = clips.decode_frames(raw[clips.VIDEO_EXT], indices)
        size = self.config.resolution
        geometry = clips.CropGeometry(frames.shape[2], frames.shape[1], size, size)
        if frames.shape[1:3] != (size, size):
            frames = np.stack([geometry.apply(frame) for frame in frames])
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        stored = raw[clips.CAPTION_EXT].decode("utf-8") if clips.CAPTION_EXT in raw else None
        caption = clips.pick_caption(annotation, self.config.caption_source, stored=stored)
        dropped = bool(rng.random() < self.config.caption_dropout)
        return {"pixel_values": pixels, "caption": "" if dropped else caption, "key": raw["__key__"]}
