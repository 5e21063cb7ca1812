"""What each training stage supplies to the one loop (:mod:`training.loop`).

A stage loads its modules (frozen VAE and text encoder, the UNet, the pose
encoder), names the trainable parameters, builds its dataset, computes the
noise-prediction loss of a batch, draws validation samples and exports its
result. :class:`DiffusionStage` holds what both stages share: the base model,
text and image encoding, timestep sampling (uniform or T2I-Adapter's cubic
``t = (1 - u^3) T``), noising and the MSE loss against the scheduler's target.

:class:`PoseImageStage` is stage 1 and :class:`VideoStage` stage 2; their
entry points are :mod:`training.stage1` and :mod:`training.stage2`. Where the
weights come from is :mod:`training.base_model`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.base_model import (
    base_reference,
    check_hub,
    cast_frozen,
    check_resolution,
    load_base,
    read_base_reference,
    resolve_base,
    resolve_init,
    write_base_reference,
)
from training.config import ConfigError, TrainConfig


def sample_timesteps(
    batch: int, num_train_timesteps: int, generator: torch.Generator, device, sampling: str
) -> torch.Tensor:
    """``uniform``: t ~ U{0..T-1}; ``cubic``: t = floor((1 - u^3) T), u ~ U[0, 1) (T2I-Adapter)."""
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
    if sampling == "cubic":
        u = torch.rand((batch,), generator=generator, device=device)
        return ((1.0 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
    raise ValueError(f"unknown timestep sampling {sampling!r}")


class DiffusionStage:
    """What every stage shares (the stage contract is :class:`training.protocol.Stage`): the frozen base model,
    text and image encoding, timestep sampling, noising, the loss, and the image stages' preflight and data
    (:meth:`preflight_images`, :meth:`image_dataset`). A stage subclasses this and supplies its modules, data and loss.
    """

    name = "stage"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = torch.device("cpu")
        self.weight_dtype = torch.float32
        self.base: dict = {}
        self.latent_cache: dict[str, tuple[list[float], torch.Tensor]] = {}
        """``data.cache_latents``: sample key -> (its crop, the VAE posterior's moments: mean and log-variance)."""

    @property
    def num_workers(self) -> int:
        return self.config.data.num_workers

    def collate(self, samples: list[dict]) -> dict:
        return torch.utils.data.default_collate(samples)

    def batch_sampler(self, length: int, batch_size: int, *, rank: int, world: int):
        """Seeded per-epoch order, split across processes, resumable mid-epoch."""
        from training.data import ResumableBatchSampler

        return ResumableBatchSampler(length, batch_size, seed=self.config.seed, shuffle=self.config.data.shuffle, rank=rank, world=world)

    def preflight_images(self, accelerator) -> None:
        """Image stages' cheap checks before anything heavy loads: the LAION-Pose shards exist, the base model is
        there (the tiny one built once on the main process), the resolution fits it. Sets ``self.pretrained``."""
        from datasets.laion_pose import shard_paths
        from training.data import require_shards

        require_shards(shard_paths, self.config.data.root, "LAION-Pose")
        self.pretrained = resolve_base(self.config, is_main=accelerator.is_main_process)
        accelerator.wait_for_everyone()
        check_resolution(self.config.data.resolution, self.pretrained, self.config.model.revision)

    def image_dataset(self):
        """The image stages' data: LAION-Pose samples (built once, kept in ``self.data``)."""
        from training.data import PoseImageDataset

        if getattr(self, "data", None) is None:
            self.data = PoseImageDataset(self.config.data.root, self.config.data, seed=self.config.seed)
        return self.data

    def setup_base(self, accelerator, pretrained: str, revision: str | None, unet_class=None) -> None:
        """Load the base model, freeze it, move it to the device, frozen weights in the mixed-precision dtype."""
        self.device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        self.base = load_base(pretrained, revision, unet_class=unet_class, frozen_dtype=self.weight_dtype)
        self.vae_factor = 2 ** (len(self.base["vae"].config.block_out_channels) - 1)
        for name in ("text_encoder", "vae", "unet"):
            module = self.base[name]
            module.requires_grad_(False)
            module.eval()
            module.to(self.device)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        tokenizer = self.base["tokenizer"]
        ids = tokenizer(
            list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.base["text_encoder"](ids.to(self.device))[0]

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] to scaled latents ``(N, 4, H/f, W/f)``, sampled from the VAE posterior."""
        vae = self.base["vae"]
        posterior = vae.encode(pixels.to(self.device, self.weight_dtype)).latent_dist
        return posterior.sample(generator=generator) * vae.config.scaling_factor

    @torch.no_grad()
    def image_latents(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """:meth:`encode_images` of a batch of images. With ``data.cache_latents``, an image met before with the same
        crop is not encoded again: its kept posterior (the VAE's moments) gives the same draw from ``generator``."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        pixels = batch["pixel_values"]
        if not self.config.data.cache_latents:
            return self.encode_images(pixels, generator)
        keys, crops = batch["key"], batch["crop"].tolist()
        missing = [i for i, (key, crop) in enumerate(zip(keys, crops)) if self.latent_cache.get(key, (None,))[0] != crop]
        vae = self.base["vae"]
        if missing:
            moments = vae.encode(pixels[missing].to(self.device, self.weight_dtype)).latent_dist.parameters
            for i, row in zip(missing, moments):
                self.latent_cache[keys[i]] = (crops[i], row)
        posterior = DiagonalGaussianDistribution(torch.stack([self.latent_cache[key][1] for key in keys]))
        return posterior.sample(generator=generator) * vae.config.scaling_factor

    def noised(self, latents: torch.Tensor, generator: torch.Generator, sampling: str):
        """``(noisy latents, timesteps, target)`` for the noise-prediction loss (per-sample timesteps on dim 0)."""
        scheduler = self.base["noise_scheduler"]
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        timesteps = sample_timesteps(
            latents.shape[0], scheduler.config.num_train_timesteps, generator, latents.device, sampling
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        elif scheduler.config.prediction_type == "epsilon":
            target = noise
        else:
            raise ConfigError(f"prediction type {scheduler.config.prediction_type!r} is not supported for training")
        return noisy, timesteps, target

    @staticmethod
    def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction.float(), target.float(), reduction="mean")

    def weighted_mse(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """:meth:`mse` with the per-sample weights of ``config.loss_weighting`` (dim 0 is the sample)."""
        weighting = self.config.loss_weighting
        if weighting == "none":
            return self.mse(prediction, target)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(dim=1)
        scheduler = self.base["noise_scheduler"]
        alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        snr = alphas / (1.0 - alphas)
        if weighting == "min_snr":
            clipped = snr.clamp(max=self.config.snr_gamma)
            weights = clipped / (snr + 1.0) if scheduler.config.prediction_type == "v_prediction" else clipped / snr
        else:
            weights = (1.0 / snr).clamp(min=1.0)
        return (per_sample * weights).mean()


class PoseConditionedUNet(torch.nn.Module):
    """Stage 1's trainable module: the pose encoder feeding the frozen UNet (one forward, so DDP sees both)."""

    def __init__(self, unet, pose_encoder) -> None:
        super().__init__()
        self.unet, self.pose_encoder = unet, pose_encoder

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        from follow_your_pose.models.control_encoder import control_unet_inputs

        sample, kwargs = control_unet_inputs(noisy, self.pose_encoder(pose))
        return self.unet(sample, timesteps, encoder_hidden_states=text, **kwargs).sample


class PoseImageStage(DiffusionStage):
    """Stage 1: LAION-Pose images; trainable pose encoder (plus the widened conv_in in the concat ablation)."""

    name = "stage1"

    def setup(self, accelerator) -> None:
        from follow_your_pose.models.control_encoder import ControlEncoder, expand_conv_in

        self.preflight_images(accelerator)
        self.setup_base(accelerator, self.pretrained, self.config.model.revision)
        unet, model = self.base["unet"], self.config.model
        torch.manual_seed(self.config.seed)
        pose_encoder = ControlEncoder(
            channels=tuple(unet.config.block_out_channels),
            num_res_blocks=model.pose_res_blocks,
            downscale_factor=self.vae_factor,
            injection=model.pose_injection,
            injected_levels=model.pose_levels or None,
        )
        if model.pose_injection == "concat":
            expand_conv_in(unet, pose_encoder.config.concat_channels)
            unet.conv_in.requires_grad_(True)
        self.module = PoseConditionedUNet(unet, pose_encoder).to(self.device)
        cast_frozen(self.module, self.weight_dtype)

    def trainable_module(self) -> torch.nn.Module:
        return self.module

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.module.named_parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.module.unet.enable_gradient_checkpointing()

    def dataset(self):
        return self.image_dataset()

    def loss(self, model, batch: dict, generator: torch.Generator, sampling: str) -> torch.Tensor:
        latents = self.image_latents(batch, generator)
        text = self.encode_text(batch["caption"])
        noisy, timesteps, target = self.noised(latents, generator, sampling)
        prediction = model(noisy.to(self.weight_dtype), timesteps, text, batch["pose"].to(self.device))
        return self.weighted_mse(prediction, target, timesteps)

    def validation_poses(self, count: int) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Skeletons of the first ``count`` samples, square-cropped at the training size (fixed for the run)."""
        from dataclasses import replace

        from training.data import transform_sample

        plain = replace(self.config.data, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), random_flip=False, caption_dropout=0.0)
        poses, skeletons = [], []
        for index in range(min(count, len(self.data))):
            sample = self.data.load(index)
            out = transform_sample(sample.image, sample.keypoints, sample.caption, plain, np.random.default_rng([self.config.seed, index]))
            poses.append(out["pose"])
            skeletons.append((out["pose"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        return torch.stack(poses), skeletons

    def validate(self, folder: Path, validation, *, seed: int) -> list[Path]:
        from training.validation import sample, save_grid

        poses, skeletons = self.validation_poses(validation.num_poses)
        prompts = [validation.prompts[i % len(validation.prompts)] for i in range(len(poses))]
        images = sample(
            self, self.module.unet, self.module.pose_encoder, prompts, poses,
            steps=validation.num_inference_steps, guidance_scale=validation.guidance_scale, seed=seed,
        )
        grid = save_grid([[skeleton, image] for skeleton, image in zip(skeletons, images)], Path(folder) / "poses.png")
        (Path(folder) / "prompts.txt").write_text("\n".join(prompts) + "\n")
        return [grid]

    def export(self, folder: Path) -> None:
        """``pose_encoder/`` (diffusers format, safetensors), ``base.json``; plus ``unet_conv_in.safetensors`` (concat ablation)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.module.pose_encoder.save_pretrained(folder / "pose_encoder", safe_serialization=True)
        if self.config.model.pose_injection == "concat":
            conv = self.module.unet.conv_in
            save_file({k: v.detach().float().contiguous().cpu() for k, v in conv.state_dict().items()}, str(folder / "unet_conv_in.safetensors"))
        write_base_reference(folder, self.pretrained, self.config.model.revision)


def inflation_flags(inflation) -> str:
    """What to pass to stage 2 to train on from a UNet of design ``inflation`` (an :class:`InflationConfig`): its
    flags, or why none will do."""
    from dataclasses import replace

    from follow_your_pose.models.inflated_unet import INFLATIONS

    level = inflation.cross_frame_from_level
    for name, design in INFLATIONS.items():
        if replace(design, cross_frame_from_level=level) == inflation:
            return f"pass --model.inflation {name} --model.cross-frame-from-level {level}"
    return f"it is a custom design that no --model flags ask for ({inflation})"


class VideoStage(DiffusionStage):
    """Stage 2: pose-free clips; the inflated UNet's temporal and cross-frame parts are trainable, all else frozen."""

    name = "stage2"

    def preflight(self, accelerator) -> None:
        from datasets.clips import shard_paths
        from training.data import require_shards

        require_shards(shard_paths, self.config.data.root, "clip")
        self.init = resolve_init(self.config.model.init)
        base, revision = read_base_reference(self.init)
        self.pretrained = check_hub(self.config.model.pretrained or base, flag="--model.pretrained" if self.config.model.pretrained else f"the base of --init {self.init}")
        self.revision = self.config.model.revision if self.config.model.pretrained else revision
        check_resolution(self.config.data.resolution, self.pretrained, self.revision)

    def setup(self, accelerator) -> None:
        from dataclasses import replace

        from safetensors.torch import load_file

        from follow_your_pose.models.inflated_unet import (
            INFLATIONS, RELEASE_STAGE2_TRAINABLE, STAGE2_TRAINABLE, InflatedUNet, freeze_for_stage2, load_inflated,
        )  # fmt: skip
        from follow_your_pose.models.control_encoder import ControlEncoder, expand_conv_in

        self.preflight(accelerator)
        self.setup_base(accelerator, self.pretrained, self.revision, unet_class=InflatedUNet)
        unet = self.base["unet"]
        conv_in = self.init / "unet_conv_in.safetensors"
        if conv_in.is_file():  # the concat ablation's widened conv_in, trained in stage 1
            weights = load_file(str(conv_in))
            expand_conv_in(unet, weights["weight"].shape[1] - unet.conv_in.in_channels)
            unet.conv_in.load_state_dict(weights)
        torch.manual_seed(self.config.seed)
        design = self.config.model.inflation
        wanted = replace(INFLATIONS[design], cross_frame_from_level=self.config.model.cross_frame_from_level)
        if (self.init / "unet").is_dir():  # a stage-2 model (ours or the converted release): train on from it
            unet = load_inflated(self.init / "unet", base=self.pretrained)
            if unet.inflation != wanted:
                raise ConfigError(f"--init {self.init} holds a stage-2 UNet of another design than asked for: {inflation_flags(unet.inflation)}")
            unet.requires_grad_(False).eval()
        else:
            unet.inflate(wanted)
        dtype = {"torch_dtype": self.weight_dtype} if self.weight_dtype != torch.float32 else {}
        self.pose_encoder = ControlEncoder.from_pretrained(self.init / "pose_encoder", **dtype).to(self.device)
        trainable_set = RELEASE_STAGE2_TRAINABLE if design == "release" else STAGE2_TRAINABLE
        self.names = freeze_for_stage2(unet, self.pose_encoder, trainable_set=trainable_set)
        unet.to(self.device)
        cast_frozen(unet, self.weight_dtype)
        self.unet = unet

    def trainable_module(self) -> torch.nn.Module:
        return self.unet

    def trainable_names(self) -> list[str]:
        return list(self.names)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def dataset(self):
        from training.data import clip_dataset

        self.data = clip_dataset(self.config.data.root, self.config.data, seed=self.config.seed)
        return self.data

    def loss(self, model, batch: dict, generator: torch.Generator, sampling: str) -> torch.Tensor:
        from follow_your_pose.models.control_encoder import unfold_frames

        pixels = batch["pixel_values"]  # (B, F, 3, H, W)
        frames = pixels.shape[1]
        latents = unfold_frames(self.encode_images(pixels.flatten(0, 1), generator), frames)  # (B, C, F, h, w)
        text = self.encode_text(batch["caption"])
        noisy, timesteps, target = self.noised(latents, generator, sampling)
        prediction = model(noisy.to(self.weight_dtype), timesteps, text).sample
        return self.weighted_mse(prediction, target, timesteps)

    def validate(self, folder: Path, validation, *, seed: int) -> list[Path]:
        """One gif per prompt: the fixed waving-figure pose sequence next to the generated frames."""
        from pose_extraction.skeleton import render_sequence
        from training.validation import default_pose_sequence, sample, save_gif

        size = self.config.data.resolution
        skeletons = render_sequence(default_pose_sequence(validation.num_frames, size), size, size)
        poses = torch.from_numpy(skeletons).float().div(255).permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)
        paths = []
        for index, prompt in enumerate(validation.prompts):
            video = sample(
                self, self.unet, self.pose_encoder, [prompt], poses,
                steps=validation.num_inference_steps, guidance_scale=validation.guidance_scale, seed=seed + index,
            )[0]
            paths.append(save_gif(np.concatenate([skeletons, video], axis=2), Path(folder) / f"sample-{index}.gif"))
        (Path(folder) / "prompts.txt").write_text("\n".join(validation.prompts) + "\n")
        return paths

    def export(self, folder: Path) -> None:
        """``unet/`` (only the inflated UNet's new weights + inflation.json), ``pose_encoder/`` (stage 1's), ``base.json``."""
        from follow_your_pose.models.inflated_unet import save_inflated

        folder.mkdir(parents=True, exist_ok=True)
        save_inflated(self.unet, folder / "unet", base=base_reference(self.pretrained), revision=self.revision)
        self.pose_encoder.save_pretrained(folder / "pose_encoder", safe_serialization=True)
        write_base_reference(folder, self.pretrained, self.revision)
