"""Stage 0 (toy scale): train a text-to-image UNet without pose, the base that stage 1 freezes.

There is no pretrained text-to-image prior at toy scale, so stage 0 makes one through the
same loop (:mod:`training.loop`) and stage interface (:mod:`training.stages`) as stages 1
and 2: it starts from a base model folder (by default the tiny random SD-shaped model
that :mod:`follow_your_pose.tiny` builds into ``OUTPUT/tiny-base``), trains the whole UNet to
predict noise on captioned images (LAION-Pose shards; their poses are ignored) with the
text encoder and VAE frozen, and exports a complete SD-1.x-shaped diffusers folder
(``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) that stage 1 loads with
``--model.pretrained OUTPUT/model``.

A random tiny VAE decodes its latents into noise and has posterior std ~1, so the toy preset
first trains it to reconstruct the training images (``model.autoencoder_steps``, see
:mod:`training.autoencoder`; saved into ``OUTPUT/tiny-base``), fixes its log-variance
(``model.tiny_vae_log_variance``) and, with ``model.calibrate_latent_scale``, sets its
``scaling_factor`` to 1 / std of the latent means of the first training images, like SD's
0.18215; the trained, calibrated VAE is exported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from training.stages import DiffusionStage

log = logging.getLogger(__name__)
CALIBRATION_IMAGES = 64
"""Training images whose latents set the calibrated latent scale."""


class BaseImageStage(DiffusionStage):
    """Stage 0: captioned images, the whole UNet trainable; text encoder and VAE frozen."""

    name = "stage0"

    def setup(self, accelerator) -> None:
        self.preflight_images(accelerator)
        self.prepare_autoencoder(accelerator)
        self.setup_base(accelerator, self.pretrained, self.config.model.revision)
        self.unet = self.base["unet"]
        self.unet.requires_grad_(True)
        self.unet.train()

    def prepare_autoencoder(self, accelerator) -> None:
        """Train the tiny base's VAE first when ``model.autoencoder_steps`` asks for it (:mod:`training.autoencoder`)."""
        from diffusers import AutoencoderKL

        from training import autoencoder
        from training.config import ConfigError

        model = self.config.model
        if not model.autoencoder_steps:
            return
        if model.pretrained:
            raise ConfigError("model.autoencoder_steps trains the tiny random base's VAE; a --model.pretrained base "
                              "keeps its own VAE: set --model.autoencoder-steps 0")  # fmt: skip
        if accelerator.is_main_process:
            autoencoder.repair(self.pretrained)
            if not autoencoder.is_trained(self.pretrained):
                vae = AutoencoderKL.from_pretrained(self.pretrained, subfolder="vae").to(accelerator.device)
                data = self.image_dataset()  # kept in self.data: dataset() reuses it

                def images(indices: torch.Tensor) -> torch.Tensor:
                    return torch.stack([data[(0, int(i))]["pixel_values"] for i in indices])

                autoencoder.train_into_base(
                    vae, self.pretrained, images, len(data), steps=model.autoencoder_steps, lr=model.autoencoder_lr,
                    batch_size=self.config.batch_size, seed=self.config.seed,
                )  # fmt: skip
        accelerator.wait_for_everyone()

    def trainable_module(self) -> torch.nn.Module:
        return self.unet

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.unet.named_parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def dataset(self):
        data = self.image_dataset()
        if self.config.model.calibrate_latent_scale:
            from follow_your_pose.tiny import calibrate_latent_scale

            count = min(CALIBRATION_IMAGES, len(data))
            pixels = torch.stack([data[(0, index)]["pixel_values"] for index in range(count)])
            scale = calibrate_latent_scale(self.base["vae"], pixels)
            log.info("latent scale calibrated on %d images: %.4f", count, scale)
        return data

    def loss(self, model, batch: dict, generator: torch.Generator, sampling: str) -> torch.Tensor:
        latents = self.image_latents(batch, generator)
        text = self.encode_text(batch["caption"])
        noisy, timesteps, target = self.noised(latents, generator, sampling)
        prediction = model(noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=text).sample
        return self.weighted_mse(prediction, target, timesteps)

    @torch.no_grad()
    def validate(self, folder: Path, validation, *, seed: int) -> list[Path]:
        from training.validation import sample, save_grid

        was_training = self.unet.training
        self.unet.eval()
        try:
            images = sample(
                self, self.unet, None, list(validation.prompts), None,
                steps=validation.num_inference_steps, guidance_scale=validation.guidance_scale, seed=seed,
            )  # fmt: skip
        finally:
            self.unet.train(was_training)
        grid = save_grid([list(images)], Path(folder) / "images.png")
        (Path(folder) / "prompts.txt").write_text("\n".join(validation.prompts) + "\n")
        return [grid]

    def export(self, folder: Path) -> None:
        """A complete SD-1.x-shaped diffusers folder: the trained UNet with the (calibrated) VAE, text encoder,
        tokenizer and a DDIM scheduler of the base's noise schedule."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        folder.mkdir(parents=True, exist_ok=True)
        base = self.base
        pipeline = StableDiffusionPipeline(
            vae=base["vae"], text_encoder=base["text_encoder"], tokenizer=base["tokenizer"], unet=self.unet,
            scheduler=DDIMScheduler.from_config(base["noise_scheduler"].config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipeline.save_pretrained(folder, safe_serialization=True)
