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

Stage 2 reads clip shards through the one clip reader, :mod:`datasets.clip_reader`,
by the same random access (:func:`clip_dataset` turns the stage's config into
the reader's).

Damaged shards and samples (a truncated or empty tar, a member that does not
decode, NaN or absurd keypoints) are skipped, named and counted, and a run
stops past a limit: the policy of :mod:`datasets.damage`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets import clips
from datasets.clip_reader import ClipDatasetConfig, IndexedClipDataset
from datasets.damage import EmptyDataError, GuardedSamples, require_samples
from datasets.keypoints import COCO17_FLIP_PAIRS, as_keypoints
from datasets.laion_pose import decode_sample
from datasets.laion_pose import shard_paths as laion_shard_paths
from datasets.tar_index import TarSampleReader
from pose_extraction.skeleton import render_skeleton
from training.config import ClipDataConfig, ConfigError, ImageDataConfig


def require_shards(shard_paths, root, kind: str) -> list[Path]:
    """The complete shards of ``root`` (``shard_paths`` is the record kind's own finder); ConfigError if none."""
    try:
        shards = shard_paths(root) if root else []
    except FileNotFoundError as error:
        raise ConfigError(f"data: {error}") from error
    if not shards:
        raise ConfigError(f"data: no complete {kind} shards (*.tar with *.stats.json) in {str(root)!r}")
    return shards


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
        self.tars = TarSampleReader(shards, required=("jpg", "json"))
        try:
            require_samples(self.tars, root)
        except EmptyDataError as error:
            raise ConfigError(str(error)) from error
        self.config = config
        self.seed = seed
        self.damage_policy = config.damage

    def __len__(self) -> int:
        return len(self.tars)

    def load(self, index: int):
        """The decoded :class:`datasets.laion_pose.LaionPoseSample` at ``index`` (no augmentation; a damaged one is
        replaced by the next readable sample)."""
        return self.first_readable(index, lambda candidate: decode_sample(self.tars.read(candidate)))[0]

    def item(self, epoch: int, index: int) -> dict:
        sample = decode_sample(self.tars.read(index))
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


def clip_reader_config(root: str | Path, config: ClipDataConfig, *, seed: int) -> ClipDatasetConfig:
    """The clip reader's options for stage 2's data config: seeded random starts, the config's damage policy."""
    return ClipDatasetConfig(
        root=str(root), num_frames=config.num_frames, frame_stride=config.frame_stride, resolution=config.resolution,
        caption_dropout=config.caption_dropout, caption_source=config.caption_source, seed=seed, start="random",
        damage=config.damage,
    )


def clip_dataset(root: str | Path, config: ClipDataConfig, *, seed: int) -> IndexedClipDataset:
    """Stage-2 samples of a clip folder: the one clip reader (:mod:`datasets.clip_reader`) by random access,
    indexed by ``(epoch, index)``; an empty folder, or one whose clips are all too short, is a ConfigError."""
    require_shards(clips.shard_paths, root, "clip")
    try:
        return IndexedClipDataset(clip_reader_config(root, config, seed=seed))
    except EmptyDataError as error:
        raise ConfigError(str(error)) from error
