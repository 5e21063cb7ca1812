"""Typed configs of the training stages and their JSON form.

Every config is a frozen keyword-only dataclass with a docstring per field,
checked in ``__post_init__``. :class:`Stage0Config`, :class:`Stage1Config` and
:class:`Stage2Config` compose the shared parts (optimiser, checkpoints, logging,
validation) with the model and data configs of their stage, each holding only
what that stage reads. The named presets (``paper``, ``tiny``, ``toy``) are in
:mod:`training.presets`; the command line of each entry point is read into
these classes by :func:`datasets.cli.parse` (``training.entry.parse_config``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from datasets.atomic import write_json
from datasets.damage import DamagePolicy

PRESETS = ("paper", "tiny", "toy")
SD14 = "CompVis/stable-diffusion-v1-4"


class ConfigError(ValueError):
    """A configuration that cannot train; raised before any model is built."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Where the weights come from (what every stage reads)."""

    pretrained: str = ""
    """Stable Diffusion 1.x-shaped base model: a hub id or a local diffusers folder (unet, vae, text_encoder, tokenizer, scheduler). Empty: build the tiny random model into OUTPUT/tiny-base."""
    revision: str | None = None
    """Hub revision of ``pretrained`` (ignored for local folders)."""
    tiny_seed: int = 0
    """Seed of the tiny random base model built when ``pretrained`` is empty."""
    tiny_unet_channels: tuple[int, ...] = (32, 64, 64, 64)
    """Tiny random base: UNet block_out_channels (4 entries, like SD's 320/640/1280/1280)."""
    tiny_vae_channels: tuple[int, ...] = (32, 32, 32, 32)
    """Tiny random base: VAE block_out_channels; 4 entries give SD's latent factor 8, 2 entries factor 2."""
    tiny_vae_log_variance: float | None = None
    """Tiny random base: fix the VAE posterior log-variance to this (e.g. -12: std e^-6, near-deterministic latents like SD's); None: the random VAE's own (latents mostly noise)."""

    def __post_init__(self) -> None:
        _check(len(self.tiny_unet_channels) == 4, "model.tiny_unet_channels needs 4 entries (SD 1.x's down blocks)")
        _check(1 <= len(self.tiny_vae_channels) <= 4, "model.tiny_vae_channels needs 1 to 4 entries")


@dataclass(frozen=True, kw_only=True)
class BaseModelConfig(ModelConfig):
    """Stage 0's model: the tiny random base, with its autoencoder trained first."""

    autoencoder_steps: int = 0
    """Train the tiny random base's VAE this many steps to reconstruct the training images (MSE of the decoded
    posterior mean), saved into OUTPUT/tiny-base before the UNet trains; 0: keep the VAE as it is."""
    autoencoder_lr: float = 2e-3
    """AdamW learning rate of that autoencoder training."""
    calibrate_latent_scale: bool = False
    """Before training, set the VAE scaling_factor to 1/std of the latent means of the first training images (unit-variance latents, as SD's 0.18215 is for its VAE); exported with the model."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.autoencoder_steps >= 0 and self.autoencoder_lr > 0, "model.autoencoder_steps must be >= 0, autoencoder_lr > 0")


@dataclass(frozen=True, kw_only=True)
class PoseModelConfig(ModelConfig):
    """Stage 1's model: the pose encoder and how it reaches the frozen UNet."""

    pose_injection: Literal["residual", "concat"] = "residual"
    """Add pose features after the 2nd layer of each down block (the paper), or concatenate pose maps to the latents (the paper's ablation; trains the widened conv_in too)."""
    pose_levels: tuple[int, ...] = ()
    """Which down blocks receive pose features (empty: all, the paper; e.g. 0 for the fewer-layers ablation)."""
    pose_res_blocks: int = 2
    """Residual blocks per pose-encoder level (T2I-Adapter full adapter: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.pose_res_blocks >= 1, "model.pose_res_blocks must be >= 1")
        _check(all(level >= 0 for level in self.pose_levels), "model.pose_levels must be non-negative")


@dataclass(frozen=True, kw_only=True)
class VideoModelConfig(ModelConfig):
    """Stage 2's model: the stage-1 result it starts from and the video UNet's design."""

    init: str = field(default="", metadata={"alias": "init"})
    """The stage-1 output folder (or its exported ``model`` folder) to start from; its base model is used unless ``pretrained`` is set."""
    inflation: Literal["default", "release"] = "default"
    """The video UNet's design. ``default``: our temporal conv (LayerNorm, SiLU, full rank) and per-frame GroupNorm,
    all temporal layers trained; ``release``: the released model's (low-rank bias-free temporal conv, GroupNorm
    statistics over the clip's frames, temporal attention's LayerNorm frozen), so what stage 2 trains is
    interchangeable with the release's weights. An --init folder that already holds a stage-2 UNet must match it."""
    cross_frame_from_level: int = 0
    """Resolution level from which the spatial self-attention is cross-frame (keys of frame 0 and frame i-1): 0,
    every block, the paper's design; 1 leaves the full-resolution blocks per-frame, 15-25% faster per step (see
    docs/benchmarks.md), untested for quality. Changes no weight; an --init stage-2 UNet must match it."""


@dataclass(frozen=True, kw_only=True)
class ImageDataConfig:
    """Stage 1 data: LAION-Pose shards."""

    root: str = field(default="", metadata={"alias": "data"})
    """LAION-Pose folder (``*.tar`` with their ``*.stats.json``) written by pipelines/build_laion_pose.py."""
    resolution: int = 512
    """Square training size in pixels; a multiple of the VAE factor x the UNet's down factor."""
    crop_scale: tuple[float, float] = (0.5, 1.0)
    """Random resized crop: range of the crop's area as a fraction of the image (1 1 = whole image)."""
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    """Random resized crop: range of the crop's aspect ratio (width / height) before it is resized to a square."""
    random_flip: bool = False
    """Flip half of the samples horizontally (keypoints swap left and right, the skeleton is re-rendered)."""
    cache_latents: bool = False
    """Keep each image's VAE posterior (mean and std) in memory after its first encoding and sample from it in later
    epochs instead of encoding again. Needs the same crop every epoch (``crop_scale`` and ``crop_ratio`` fixed, no
    flip); an image whose crop still varies (its aspect ratio differs from ``crop_ratio``) is encoded every time. For
    datasets whose latents fit in memory (2 x 4 x (R/8)^2 floats per image at SD's VAE)."""
    caption_dropout: float = 0.05
    """Probability of replacing a caption by the empty string, so the model also learns the unconditional branch of classifier-free guidance."""
    num_workers: int = 2
    """DataLoader worker processes (0: load in the training process)."""
    shuffle: bool = True
    """Visit samples in a seeded random order that changes every epoch."""
    damage: DamagePolicy = DamagePolicy()
    """Damaged samples tolerated: each is replaced by the next readable one and reported; past the limit the run stops."""

    def __post_init__(self) -> None:
        _check(self.resolution > 0, f"resolution must be positive, got {self.resolution}")
        low, high = self.crop_scale
        _check(0.0 < low <= high <= 1.0, f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        _check(0.0 < self.crop_ratio[0] <= self.crop_ratio[1], f"crop_ratio must be increasing and positive, got {self.crop_ratio}")
        _check(0.0 <= self.caption_dropout <= 1.0, f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        _check(self.num_workers >= 0, "num_workers must be >= 0")
        random_crop = low < high or self.crop_ratio[0] < self.crop_ratio[1] or self.random_flip
        _check(not (self.cache_latents and random_crop),
               "cache_latents needs the same crop of an image every epoch: fixed crop_scale and crop_ratio "
               f"(got {self.crop_scale} and {self.crop_ratio}) and random_flip false (got {self.random_flip})")


@dataclass(frozen=True, kw_only=True)
class ClipDataConfig:
    """Stage 2 data: video clip shards."""

    root: str = field(default="", metadata={"alias": "data"})
    """Clip folder (``*.tar`` + parquet index) written by pipelines/build_hdvila_clips.py."""
    resolution: int = 512
    """Square frame size in pixels; a multiple of the VAE factor x the UNet's down factor."""
    num_frames: int = 8
    """Consecutive frames per training clip (the paper: 8)."""
    frame_stride: int = 4
    """Take every k-th frame of the stored clip (the release: 4)."""
    caption_dropout: float = 0.0
    """Probability of replacing a caption by the empty string (the release: 0)."""
    caption_source: Literal["stored", "file", "model", "file_or_model", "model_or_file"] = "stored"
    """Which caption of a clip to train on (``datasets.clips.CAPTION_POLICIES``): ``stored`` (the clip's txt), ``file``
    (the user's caption file), ``model`` (the generated one), or one falling back to the other."""
    num_workers: int = 2
    """DataLoader worker processes (0: load in the training process)."""
    shuffle: bool = True
    """Visit clips in a seeded random order that changes every epoch."""
    damage: DamagePolicy = DamagePolicy()
    """Damaged clips tolerated: each is replaced by the next readable one and reported; past the limit the run stops."""

    def __post_init__(self) -> None:
        _check(self.resolution > 0, f"resolution must be positive, got {self.resolution}")
        _check(self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}")
        _check(self.frame_stride >= 1, f"frame_stride must be >= 1, got {self.frame_stride}")
        _check(0.0 <= self.caption_dropout <= 1.0, f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        _check(self.num_workers >= 0, "num_workers must be >= 0")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    lr: float = 1e-5
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 1e-2
    """AdamW decoupled weight decay."""
    eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    use_8bit_adam: bool = False
    """Use bitsandbytes' 8-bit AdamW (needs bitsandbytes and a GPU)."""
    fused: bool = False
    """Use torch's fused AdamW kernel where the device has one (CPU and CUDA): the same update in one pass over the
    parameters (a toy UNet's step: 10 ms against 48 ms for the multi-tensor loop on a 2-core CPU). Off by default
    until it has more runs behind it: one toy stage 0 trained with it diverged at step 1990 of 2200 (loss 0.05 -> 1.0
    in 8 steps). Its losses matched the multi-tensor loop's to 5 digits for the first 300 steps, so the kernel is
    not shown to be the cause; stage 0 at lr 2e-3 may sit near the edge of stability."""
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    """Learning-rate schedule (diffusers.optimization names)."""
    warmup_steps: int = 0
    """Linear warm-up steps (for the ``*_warmup``, ``linear`` and ``cosine`` schedules)."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1), got {self.betas}")
        _check(self.weight_decay >= 0 and self.eps > 0, "weight_decay must be >= 0 and eps > 0")
        _check(self.max_grad_norm >= 0, "max_grad_norm must be >= 0")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """When and how checkpoints are written."""

    every: int = 1000
    """Save every this many optimiser steps (and always at the end); 0: only at the end."""
    keep_last: int = 3
    """Keep this many most recent checkpoints; older ones are deleted after a new one is complete."""

    def __post_init__(self) -> None:
        _check(self.every >= 0, "checkpoint.every must be >= 0")
        _check(self.keep_last >= 1, "checkpoint.keep_last must be >= 1")


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """Metrics and progress."""

    report_to: Literal["tensorboard", "wandb", "all", "none"] = "tensorboard"
    """Where scalars go: TensorBoard (OUTPUT/logs), Weights & Biases (needs wandb installed), both, or nowhere."""
    every: int = 10
    """Log loss, learning rate and samples/s every this many optimiser steps."""
    project: str = "follow-your-pose"
    """Tracker project name (the W&B project, the TensorBoard run folder)."""
    progress_bar: bool = True
    """Show a tqdm progress bar on the main process."""

    def __post_init__(self) -> None:
        _check(self.every >= 1, "log.every must be >= 1")


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Samples generated during training from fixed prompts and poses."""

    every: int = 0
    """Generate validation samples every this many optimiser steps (0: only after the last step; -1: never)."""
    prompts: tuple[str, ...] = ("a person dancing on the beach", "an astronaut walking on the moon")
    """Fixed prompts; pose i goes with prompt i (prompts repeat when there are more poses)."""
    num_poses: int = 2
    """Stage 1: how many poses of the first training samples to condition on (fixed for the whole run)."""
    num_inference_steps: int = 25
    """DDIM steps per sample."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale."""
    num_frames: int = 8
    """Stage 2: frames per validation video."""

    def __post_init__(self) -> None:
        _check(self.every >= -1, "validation.every must be >= -1")
        _check(len(self.prompts) >= 1, "validation.prompts needs at least one prompt")
        _check(self.num_poses >= 1 and self.num_inference_steps >= 1 and self.num_frames >= 1, "validation counts must be >= 1")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What both stages share: the loop, the model source, optimiser, checkpoints, logs, validation."""

    preset: str = "tiny"
    """The preset the other defaults came from (recorded for the saved config)."""
    output_dir: str = field(default="", metadata={"alias": "output"})
    """Folder that receives checkpoints/, logs/, samples/ and the exported model/."""
    max_steps: int = 1000
    """Optimiser steps to train for (one step = batch_size x accumulation x processes samples); 0 exports the initial
    trainable weights untrained (stage 1: the zero-init pose encoder, i.e. the base model without pose control)."""
    batch_size: int = 1
    """Samples per device per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision; frozen modules are stored in it too, trainable weights stay fp32. fp16 needs CUDA."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when available (per process under accelerate launch / torchrun), else CPU."""
    seed: int = 0
    """Seed of data order, augmentations, noise and timesteps; a resumed run continues the same sequence."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass to save memory."""
    timestep_sampling: Literal["uniform", "cubic"] = "uniform"
    """``uniform`` t ~ U{0..T-1}, or T2I-Adapter's cubic t = (1 - u^3) T that favours early (noisy) steps."""
    loss_weighting: Literal["none", "min_snr", "x0"] = "none"
    """Per-sample weight of the noise-prediction loss by the timestep's SNR: ``none`` (plain MSE, SD's); ``min_snr``
    min(SNR, snr_gamma) / SNR (Min-SNR, Hang et al. 2023; diffusers' --snr_gamma); ``x0`` max(1, 1 / SNR), the image-space
    error at noisy steps, which decide the layout: what a pose adapter must learn to steer (used at toy scale)."""
    snr_gamma: float = 5.0
    """γ of ``min_snr``."""
    ema: bool = False
    """Keep an exponential moving average of the trainable weights; the export then holds the EMA weights."""
    ema_decay: float = 0.9999
    """EMA decay."""
    resume: str = ""
    """``latest`` (the newest checkpoint in OUTPUT/checkpoints, or a fresh start when there is none), a checkpoint folder, or empty for a fresh start."""
    model: ModelConfig = ModelConfig()
    """Model source (each stage's config narrows it to what that stage reads)."""
    optim: OptimConfig = OptimConfig()
    """Optimiser."""
    checkpoint: CheckpointConfig = CheckpointConfig()
    """Checkpoints."""
    log: LogConfig = LogConfig()
    """Logging."""
    validation: ValidationConfig = ValidationConfig()
    """Validation samples."""

    def __post_init__(self) -> None:
        _check(self.preset in PRESETS, f"unknown preset {self.preset!r}; valid presets: {', '.join(PRESETS)}")
        _check(self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        _check(0.0 < self.ema_decay < 1.0, "ema_decay must be in (0, 1)")
        _check(self.snr_gamma > 0, "snr_gamma must be positive")


@dataclass(frozen=True, kw_only=True)
class Stage0Config(TrainConfig):
    """Stage 0 (toy scale only): train a text-to-image UNet from a tiny random SD-shaped base on images, without pose."""

    model: BaseModelConfig = BaseModelConfig()
    """The tiny base and its autoencoder."""
    data: ImageDataConfig = ImageDataConfig()
    """Images with captions (LAION-Pose shards; their poses are not used)."""


@dataclass(frozen=True, kw_only=True)
class Stage1Config(TrainConfig):
    """Stage 1: train the pose encoder on LAION-Pose against a frozen Stable Diffusion."""

    model: PoseModelConfig = PoseModelConfig()
    """Base model and pose encoder."""
    data: ImageDataConfig = ImageDataConfig()
    """LAION-Pose data."""


@dataclass(frozen=True, kw_only=True)
class Stage2Config(TrainConfig):
    """Stage 2: train the temporal and cross-frame parts of the inflated UNet on pose-free clips."""

    model: VideoModelConfig = VideoModelConfig()
    """The stage-1 result and the video UNet's design."""
    data: ClipDataConfig = ClipDataConfig()
    """Clip data."""


def to_dict(config) -> dict:
    """A JSON-ready dict of a (nested) config."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls, values: dict):
    """Rebuild a config of class ``cls`` from :func:`to_dict` output (unknown keys are an error)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def save_config(config, path: str | Path) -> Path:
    """Write the resolved config as JSON (atomically: temp file, then rename)."""
    path = Path(path)
    write_json(path, {"kind": type(config).__name__, **to_dict(config)}, indent=2)
    return path


def load_config(path: str | Path):
    """Read a config written by :func:`save_config` back into its class."""
    values = json.loads(Path(path).read_text())
    kind = values.pop("kind", None)
    classes = {cls.__name__: cls for cls in (Stage0Config, Stage1Config, Stage2Config)}
    if kind not in classes:
        raise ConfigError(f"{path} is not a training config (kind={kind!r})")
    return from_dict(classes[kind], values)
