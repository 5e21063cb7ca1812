"""The named presets of each training stage: ``paper``, ``tiny`` and ``toy``.

- ``paper``: Stable Diffusion 1.4 at 512x512 with the paper's step counts
  (100k stage 1, 50k stage 2, 8 frames). The paper gives no learning rate or
  batch size; stage 1 takes them from a public fork (lr 1e-5, batch 8 x
  accumulation 2), stage 2 from the released code (AdamW lr 3e-5, betas
  (0.9, 0.999), weight decay 1e-2, grad clip 1.0, batch 1 per GPU, fp32,
  stride 4; the release trains 12 frames, the paper 8, we follow the paper) and
  the release's video UNet design.
- ``tiny``: random tiny models built by :mod:`follow_your_pose.tiny`, 64x64 images,
  a few steps: runs on a 2-core CPU in minutes.
- ``toy``: the toy world (``pipelines/build_toy_world.py --size 32``) at 32x32: stage 0
  (:class:`~training.config.Stage0Config`, :mod:`training.stage0`) first trains the tiny random
  UNet into a text-to-image base (no pose), which stage 1 loads with
  ``--model.pretrained STAGE0_OUTPUT/model``.
"""

from __future__ import annotations

import dataclasses

from training.config import (
    PRESETS, SD14, BaseModelConfig, CheckpointConfig, ClipDataConfig, ConfigError, ImageDataConfig, LogConfig,
    OptimConfig, PoseModelConfig, Stage0Config, Stage1Config, Stage2Config, TrainConfig, ValidationConfig,
    VideoModelConfig,
)  # fmt: skip


def preset(stage: int, name: str) -> TrainConfig:
    """The named preset of a stage (0, 1 or 2); unknown names raise :class:`ConfigError` listing the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    if stage == 0:
        if name == "paper":
            raise ConfigError("stage 0 trains a base model at toy scale only (the paper starts from SD 1.4): use --preset toy or tiny")
        return _stage0(name)
    if stage == 1:
        return {"paper": _stage1_paper, "tiny": _stage1_tiny, "toy": _stage1_toy}[name]()
    if stage == 2:
        return {"paper": _stage2_paper, "tiny": _stage2_tiny, "toy": _stage2_toy}[name]()
    raise ConfigError(f"stage must be 0, 1 or 2, got {stage}")


def _stage1_paper() -> Stage1Config:
    return Stage1Config(
        preset="paper",
        max_steps=100_000,  # paper
        batch_size=8,  # public fork (paper: unstated)
        gradient_accumulation_steps=2,  # public fork
        mixed_precision="no",
        timestep_sampling="cubic",  # T2I-Adapter, whose encoder topology the release uses
        model=PoseModelConfig(pretrained=SD14),
        optim=OptimConfig(lr=1e-5),  # public fork
        data=ImageDataConfig(resolution=512, num_workers=8),
        checkpoint=CheckpointConfig(every=5000, keep_last=3),
        validation=ValidationConfig(every=5000, num_poses=4, num_inference_steps=50, guidance_scale=12.5),
    )


def _stage2_paper() -> Stage2Config:
    return Stage2Config(
        preset="paper",
        max_steps=50_000,  # paper
        batch_size=1,  # release: 1 per GPU x 8 GPUs
        mixed_precision="no",  # release: fp32
        gradient_checkpointing=True,
        model=VideoModelConfig(pretrained="", inflation="release"),  # the stage-1 result's base (SD 1.4); the release's UNet
        optim=OptimConfig(lr=3e-5, betas=(0.9, 0.999), weight_decay=1e-2, max_grad_norm=1.0),  # release
        data=ClipDataConfig(resolution=512, num_frames=8, frame_stride=4, num_workers=8),  # paper: 8 frames; release: stride 4
        checkpoint=CheckpointConfig(every=5000, keep_last=3),
        validation=ValidationConfig(every=5000, num_frames=8, num_inference_steps=50, guidance_scale=12.5),
    )


def _stage1_tiny() -> Stage1Config:
    return Stage1Config(
        preset="tiny",
        max_steps=40,
        batch_size=4,
        optim=OptimConfig(lr=1e-3, weight_decay=0.0),
        data=ImageDataConfig(resolution=64, crop_scale=(0.6, 1.0), num_workers=1),
        checkpoint=CheckpointConfig(every=20, keep_last=2),
        log=LogConfig(every=5),
        validation=ValidationConfig(every=0, num_inference_steps=4, guidance_scale=3.0),
    )


def _stage2_tiny() -> Stage2Config:
    return Stage2Config(
        preset="tiny",
        max_steps=20,
        batch_size=1,
        optim=OptimConfig(lr=1e-3, weight_decay=0.0),
        data=ClipDataConfig(resolution=64, num_frames=4, frame_stride=1, num_workers=1),
        checkpoint=CheckpointConfig(every=10, keep_last=2),
        log=LogConfig(every=5),
        validation=ValidationConfig(every=0, num_inference_steps=4, guidance_scale=3.0, num_frames=4),
    )


# Toy presets: 32x32 toy-world images (pipelines/build_toy_world.py --size 32) on a 2-core CPU. Stage 0's base: the
# tiny random SD with a 2-level VAE (16x16 latents) trained first to reconstruct the images, near-deterministic
# posterior, latent scale calibrated on the data; stages 1 and 2 load stage 0's export.
# Stage 0's 2200 steps: the base's quality is what limits pose control at this scale (a 1200-step base drew faint,
# thin figures; pose IoU of the same stage 1 doubled on a 2400-step one), see README "The toy world".
TOY_RESOLUTION = 32
_TOY_IMAGES = ImageDataConfig(
    resolution=TOY_RESOLUTION, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), random_flip=False, num_workers=1
)  # fmt: skip
# data.cache_latents would save ~40 ms per stage-0 step here, but both toy stage-0 runs made with it had loss spikes
# (one diverged, one recovered with a base that lost most of its prompt fidelity) where five runs without it had none.
# It should be the same computation (the losses agreed to 5 digits for the first 300 steps), so this may be chance;
# the preset keeps the path that was stable.
_TOY_PROMPTS = ("a red figure on a blue background", "a white figure on a black background",
                "a yellow figure on a green background", "a black figure on a cyan background")
_TOY_BASE = BaseModelConfig(
    tiny_vae_channels=(32, 32), tiny_vae_log_variance=-12.0, autoencoder_steps=300, calibrate_latent_scale=True
)  # fmt: skip


def _stage0(name: str) -> Stage0Config:
    toy = name == "toy"
    return Stage0Config(
        preset=name,
        max_steps=2200 if toy else 20,
        batch_size=16 if toy else 4,
        optim=OptimConfig(lr=2e-3 if toy else 1e-3, weight_decay=0.0),
        model=_TOY_BASE if toy else BaseModelConfig(tiny_vae_log_variance=-12.0, calibrate_latent_scale=True),
        data=_TOY_IMAGES if toy else ImageDataConfig(resolution=64, num_workers=1),
        checkpoint=CheckpointConfig(every=200 if toy else 10, keep_last=2),
        log=LogConfig(every=20 if toy else 5),
        validation=ValidationConfig(every=0, num_inference_steps=10 if toy else 4, guidance_scale=3.0,
                                    prompts=_TOY_PROMPTS if toy else ValidationConfig.prompts),
    )


def _stage1_toy() -> Stage1Config:
    return dataclasses.replace(
        _stage1_tiny(), preset="toy", max_steps=400, batch_size=8, data=_TOY_IMAGES, timestep_sampling="cubic",
        optim=OptimConfig(lr=3e-3, weight_decay=0.0),
        checkpoint=CheckpointConfig(every=200, keep_last=2), log=LogConfig(every=20),
        validation=ValidationConfig(every=0, num_inference_steps=10, guidance_scale=3.0, prompts=_TOY_PROMPTS),
    )  # fmt: skip


def _stage2_toy() -> Stage2Config:
    return dataclasses.replace(
        _stage2_tiny(), preset="toy", max_steps=300, batch_size=2,
        data=ClipDataConfig(resolution=TOY_RESOLUTION, num_frames=8, frame_stride=1, num_workers=1),
        checkpoint=CheckpointConfig(every=100, keep_last=2), log=LogConfig(every=20),
        validation=ValidationConfig(every=0, num_inference_steps=10, guidance_scale=3.0, num_frames=8, prompts=_TOY_PROMPTS),
    )  # fmt: skip
