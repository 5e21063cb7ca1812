"""Validation samples drawn during training: fixed prompts and poses, saved as grids and gifs.

Stage 1 samples images with a plain DDIM loop over the frozen UNet and the
pose encoder being trained (classifier-free guidance with the empty prompt,
pose features to both branches). Stage 2 samples short videos with the
generation pipeline. Both save what they drew beside the pose they drew it
from, so a glance at ``OUTPUT/samples/step-*/`` shows whether the pose is
followed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets.keypoints import empty_keypoints


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` in [-1, 1] to ``(N, H, W, 3)`` uint8."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def save_grid(rows: list[list[np.ndarray]], path: Path) -> Path:
    """Tile ``rows`` of equally sized ``(H, W, 3)`` uint8 images into one PNG (atomic write)."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    grid = np.zeros((height * len(rows), width * columns, 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return _atomic_save(Image.fromarray(grid), path)


def save_gif(frames: np.ndarray, path: Path, fps: float = 8.0) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as a looping gif (atomic write)."""
    images = [Image.fromarray(frame) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    tmp.replace(path)
    return path


def _atomic_save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path


@torch.no_grad()
def sample(
    stage, unet, pose_encoder, prompts: list[str], poses: torch.Tensor, *, steps: int, guidance_scale: float, seed: int
) -> np.ndarray:
    """Draw one sample per prompt with DDIM (eta 0) and classifier-free guidance (empty negative prompt).

    ``poses`` are skeleton images ``(N, 3, H, W)`` (a 2D UNet: returns ``(N, H, W, 3)`` uint8) or clips
    ``(N, 3, F, H, W)`` (an inflated UNet: returns ``(N, F, H, W, 3)``); pose features go to both branches.
    """
    from diffusers import DDIMScheduler

    from follow_your_pose.models.control_encoder import fold_frames, control_unet_inputs, repeat_features

    base, device = stage.base, stage.device
    scheduler = DDIMScheduler.from_config(base["noise_scheduler"].config)
    scheduler.set_timesteps(steps, device=device)
    count, frames = len(prompts), (poses.shape[2] if poses.ndim == 5 else None)
    height, width = poses.shape[-2] // stage.vae_factor, poses.shape[-1] // stage.vae_factor
    text = torch.cat([stage.encode_text([""] * count), stage.encode_text(prompts)])
    features = repeat_features(pose_encoder(poses.to(device, pose_encoder.dtype)), 2)
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (count, unet.config.out_channels) + ((frames,) if frames else ()) + (height, width)
    latents = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        doubled = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        model_input, kwargs = control_unet_inputs(doubled.to(stage.weight_dtype), features)
        eps = unet(model_input, t, encoder_hidden_states=text, **kwargs).sample.float()
        uncond, cond = eps.chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents, eta=0.0).prev_sample
    vae = base["vae"]
    decoded = vae.decode((fold_frames(latents) / vae.config.scaling_factor).to(stage.weight_dtype)).sample
    images = to_uint8(decoded)
    return images.reshape(count, frames, *images.shape[1:]) if frames else images


def default_pose_sequence(frames: int, size: int) -> list[np.ndarray]:
    """A standing figure waving both arms over ``frames`` frames, as ``(1, 17, 3)`` keypoints in a ``size`` square.

    Used as the fixed validation pose of stage 2 (its data has no poses).
    """
    base = np.array(
        [
            (0.50, 0.16), (0.52, 0.14), (0.48, 0.14), (0.55, 0.15), (0.45, 0.15),
            (0.60, 0.28), (0.40, 0.28), (0.66, 0.40), (0.34, 0.40), (0.70, 0.52), (0.30, 0.52),
            (0.57, 0.55), (0.43, 0.55), (0.58, 0.72), (0.42, 0.72), (0.59, 0.90), (0.41, 0.90),
        ],
        dtype=np.float32,
    )
    sequence = []
    for index in range(frames):
        phase = np.sin(2 * np.pi * index / max(frames, 1))
        points = base.copy()
        points[[9, 10], 1] -= 0.20 * (phase + 1) / 2  # wrists rise and fall
        points[[7, 8], 1] -= 0.08 * (phase + 1) / 2
        keypoints = empty_keypoints(1)
        keypoints[0, :, :2] = points * (size - 1)
        keypoints[0, :, 2] = 1.0
        sequence.append(keypoints)
    return sequence
