"""Validation samples drawn during training: fixed prompts and poses, saved as grids and gifs.

Every stage samples through the generation pipeline that ships
(:class:`follow_your_pose.pipeline.FollowYourPosePipeline`), so validation shows
what a user will get: stage 0 images without pose, stage 1 images from the pose
encoder being trained, stage 2 short videos. Stages 1 and 2 save what they drew
beside the pose they drew it from, so a glance at ``OUTPUT/samples/step-*/``
shows whether the pose is followed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets.atomic import atomic_path
from datasets.keypoints import empty_keypoints


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
    with atomic_path(path) as temp:
        images[0].save(temp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def _atomic_save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")
    return path


@torch.no_grad()
def sample(
    stage, unet, pose_encoder, prompts: list[str], poses: torch.Tensor | None, *, steps: int, guidance_scale: float, seed: int
) -> np.ndarray:
    """One sample per prompt through the generation pipeline that ships (:class:`FollowYourPosePipeline`): DDIM, eta 0,
    classifier-free guidance with the empty negative prompt, pose features to both branches.

    ``poses``: skeleton images ``(N, 3, H, W)`` in [0, 1] (returns ``(N, H, W, 3)`` uint8 images), clips
    ``(N, 3, F, H, W)`` (returns ``(N, F, H, W, 3)``), or None with ``unet`` drawing at the training resolution
    without pose (``(N, H, W, 3)``). ``unet`` may be the 2-D UNet of stages 0 and 1 or the inflated one of stage 2.
    """
    from diffusers import DDIMScheduler

    from follow_your_pose.pipeline import FollowYourPosePipeline

    base = stage.base
    pipeline = FollowYourPosePipeline(
        vae=base["vae"], text_encoder=base["text_encoder"], tokenizer=base["tokenizer"], unet=unet,
        scheduler=DDIMScheduler.from_config(base["noise_scheduler"].config), pose_encoder=pose_encoder,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    clips = None if poses is None else (poses[:, :, None] if poses.ndim == 4 else poses)  # (N, 3, F, H, W)
    size = stage.config.data.resolution
    height, width = (size, size) if clips is None else clips.shape[-2:]
    frames = 1 if clips is None else clips.shape[2]
    videos = []
    for index, prompt in enumerate(prompts):
        pose = None if clips is None else clips[index].permute(1, 0, 2, 3)  # (F, 3, H, W)
        out = pipeline(
            prompt, pose, num_frames=frames, height=height, width=width, num_inference_steps=steps,
            guidance_scale=guidance_scale, window_size=max(frames, 2), output_type="np", pose_check=False,
            generator=torch.Generator(device=stage.device).manual_seed(seed + index),
        )  # fmt: skip
        videos.append((out.frames[0] * 255).round().astype(np.uint8))
    videos = np.stack(videos)  # (N, F, H, W, 3)
    return videos[:, 0] if poses is None or poses.ndim == 4 else videos


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
