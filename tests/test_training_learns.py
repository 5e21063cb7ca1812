"""Evidence that both stages learn, on CPU, with tiny models and figures drawn from known poses.

Stage 1 trains a pose encoder against a *frozen* UNet, so the UNet must already denoise (SD 1.4 does;
a random one does not, and then no pose can help it). The fixture therefore makes a tiny
"pretrained" base the way SD's was made, in miniature: the random tiny VAE is made nearly
deterministic with unit-variance scaled latents (SD's 0.18215 is 1/std of its latents; a random VAE
has posterior std ~1, so its latents are mostly noise), and the tiny UNet is trained briefly as a
plain text-to-image denoiser of the figures (no pose). Then the stage-1 entry point's loop trains
only the pose encoder (tiny preset), and we check at fixed noise that

- the loss with the right poses falls below its starting value and below the loss with shuffled
  poses (the encoder uses the pose, not just a bias),
- for the same noisy latent, the predictions for two different poses differ the way the two images
  differ (cosine of x0 differences) and where the two skeletons differ (spatially);

and stage 2 (tiny preset), from that stage-1 result on clips of the same figures moving, trains only
its parameters and lowers its loss at fixed noise.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.presets import preset
from training.loop import Trainer
from training.base_model import load_base
from training.stages import PoseImageStage, VideoStage

pytestmark = pytest.mark.slow
BACKGROUND = (30, 40, 60)
POSE_T = (300, 600)  # mid noise: the image is not visible yet but not gone, where knowing the pose helps
EVAL_T = (300, 600, 900)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learns")


@pytest.fixture(scope="module")
def figures(workdir) -> Path:
    from training.synthetic import write_laion_pose

    return write_laion_pose(workdir / "figures", 48, size=64, per_shard=16, seed=1, background=BACKGROUND)


@pytest.fixture(scope="module")
def pretrained_base(workdir, figures) -> Path:
    """The tiny SD with a calibrated VAE and a UNet pretrained (60 steps) to denoise the figures, text-conditioned."""
    from training.data import PoseImageDataset
    from follow_your_pose.tiny import calibrate_latent_scale, fix_vae_log_variance, save_tiny_sd

    folder = save_tiny_sd(workdir / "base")
    base = load_base(str(folder))
    vae, unet, scheduler = base["vae"], base["unet"], base["noise_scheduler"]
    dataset = PoseImageDataset(figures, replace(preset(1, "tiny").data, crop_scale=(1.0, 1.0)), seed=0)
    items = [dataset[(0, i)] for i in range(len(dataset))]
    pixels = torch.stack([x["pixel_values"] for x in items])
    fix_vae_log_variance(vae, -12.0)  # posterior std e^-6: a near-deterministic encoder like SD's
    calibrate_latent_scale(vae, pixels)  # unit-variance scaled latents
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        ids = base["tokenizer"]([x["caption"] for x in items], padding="max_length", max_length=77, return_tensors="pt").input_ids
        text = base["text_encoder"](ids)[0]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        pick = torch.randint(0, len(latents), (8,), generator=generator)
        noise = torch.randn(latents[pick].shape, generator=generator)
        t = torch.randint(0, 1000, (8,), generator=generator)
        loss = F.mse_loss(unet(scheduler.add_noise(latents[pick], noise, t), t, text[pick]).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    return folder


def fixed_noise(stage, batch: dict, t: int, seed: int = 123):
    """``(latents, noisy latents, noise, timesteps, text)`` with fixed noise, for before/after comparisons."""
    generator = torch.Generator().manual_seed(seed)
    pixels = batch["pixel_values"]
    video = pixels.ndim == 5
    latents = stage.encode_images(pixels.flatten(0, 1) if video else pixels, generator)
    if video:
        from follow_your_pose.models.control_encoder import unfold_frames

        latents = unfold_frames(latents, pixels.shape[1])
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.full((len(pixels),), t)
    noisy = stage.base["noise_scheduler"].add_noise(latents, noise, timesteps)
    return latents, noisy, noise, timesteps, stage.encode_text(batch["caption"])


@torch.no_grad()
def pose_metrics(stage: PoseImageStage, batch: dict) -> dict:
    """Losses with right and shuffled poses, and how prediction differences between poses line up with the images."""
    module, scheduler = stage.module, stage.base["noise_scheduler"]
    right, shuffled, cosines, spatial = [], [], [], []
    other = batch["pose"].roll(1, 0)
    for t in POSE_T:
        latents, noisy, noise, timesteps, text = fixed_noise(stage, batch, t)
        eps_right, eps_other = module(noisy, timesteps, text, batch["pose"]), module(noisy, timesteps, text, other)
        right.append(F.mse_loss(eps_right, noise).item())
        shuffled.append(F.mse_loss(eps_other, noise).item())
        alpha = scheduler.alphas_cumprod[t]
        x0 = lambda eps: (noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt()  # noqa: E731
        change = x0(eps_right) - x0(eps_other)
        cosines.append(F.cosine_similarity(change.flatten(1), (latents - latents.roll(1, 0)).flatten(1)).mean().item())
        where = F.avg_pool2d((batch["pose"] - other).abs().sum(1, keepdim=True), stage.vae_factor).flatten(1)
        spatial.append(torch.stack([torch.corrcoef(torch.stack([c, w]))[0, 1] for c, w in zip(change.abs().mean(1).flatten(1), where)]).mean().item())
    return {"right": np.mean(right), "shuffled": np.mean(shuffled), "cosine": np.mean(cosines), "spatial": np.mean(spatial),
            "identical": bool(torch.equal(eps_right, eps_other))}


@pytest.fixture(scope="module")
def stage1_learned(workdir, figures, pretrained_base):
    config = preset(1, "tiny")
    config = replace(
        config, output_dir=str(workdir / "stage1"), max_steps=200, batch_size=4,
        model=replace(config.model, pretrained=str(pretrained_base)),
        optim=replace(config.optim, lr=1e-2),
        data=replace(config.data, root=str(figures), num_workers=0, crop_scale=(0.8, 1.0)),
        checkpoint=replace(config.checkpoint, every=0), validation=replace(config.validation, every=-1),
        log=replace(config.log, progress_bar=False, report_to="none"),
    )
    stage = PoseImageStage(config)
    trainer = Trainer(config, stage)
    plain = replace(config.data, crop_scale=(1.0, 1.0), caption_dropout=0.0)
    from training.data import PoseImageDataset

    held = PoseImageDataset(figures, plain, seed=99)
    batch = torch.utils.data.default_collate([held[(0, i)] for i in range(16)])
    before = pose_metrics(stage, batch)
    result = trainer.run()
    return config, before, pose_metrics(stage, batch), result


def test_stage1_loss_falls_and_the_encoder_follows_the_pose(stage1_learned):
    _, before, after, result = stage1_learned
    print(f"stage 1 at fixed noise: before {before}, after {after}")
    assert result.global_step == 200
    assert before["identical"] and before["right"] == before["shuffled"]  # zero-initialised: the pose changes nothing yet
    assert after["right"] < 0.98 * before["right"], (before, after)
    assert after["right"] < 0.98 * after["shuffled"], after
    assert after["cosine"] > 0.1, after  # x0(pose A) - x0(pose B) points from image B to image A
    assert after["spatial"] > 0.1, after  # and it is largest where the two skeletons differ


def test_stage2_trains_only_its_parameters_and_its_loss_falls(stage1_learned, workdir):
    from training.data import clip_dataset
    from training.synthetic import write_clips

    clips = write_clips(workdir / "clips", 16, size=64, frames=10, per_shard=8, seed=2, background=BACKGROUND)
    config = preset(2, "tiny")
    config = replace(
        config, output_dir=str(workdir / "stage2"), max_steps=60, batch_size=2,
        model=replace(config.model, init=stage1_learned[0].output_dir), optim=replace(config.optim, lr=3e-3),
        data=replace(config.data, root=str(clips), num_workers=0, num_frames=4, frame_stride=1),
        checkpoint=replace(config.checkpoint, every=0), validation=replace(config.validation, every=-1),
        log=replace(config.log, progress_bar=False, report_to="none"),
    )
    stage = VideoStage(config)
    trainer = Trainer(config, stage)
    held = clip_dataset(clips, replace(config.data, caption_dropout=0.0), seed=99)
    batch = torch.utils.data.default_collate([held[(0, i)] for i in range(8)])

    @torch.no_grad()
    def loss() -> float:
        values = []
        for t in EVAL_T:
            _, noisy, noise, timesteps, text = fixed_noise(stage, batch, t)
            values.append(F.mse_loss(stage.unet(noisy, timesteps, text).sample, noise).item())
        return float(np.mean(values))

    weights = {k: v.clone() for k, v in stage.unet.state_dict().items()}
    start = loss()
    trainer.run()
    end = loss()
    print(f"stage 2 at fixed noise: before {start:.4f}, after {end:.4f}")
    changed = {k for k, v in stage.unet.state_dict().items() if not torch.equal(weights[k], v)}
    assert changed and changed <= set(stage.trainable_names())
    assert end < 0.97 * start, (start, end)
    shutil.rmtree(workdir / "stage2" / "checkpoints")  # keep the temp folder small
