"""The tiny random pipeline and the swaying-figure poses the generation benchmarks share."""

from __future__ import annotations


def build_pipeline(base: str, unet_channels: tuple[int, ...], dtype=None):
    """``FollowYourPosePipeline`` on the tiny SD-shaped ``base`` folder (random pose encoder), weights in ``dtype``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from follow_your_pose.models import ControlEncoder, InflatedUNet
    from follow_your_pose.pipeline import FollowYourPosePipeline

    dtype = dtype or torch.float32
    torch.manual_seed(0)
    pipe = FollowYourPosePipeline(
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", torch_dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=InflatedUNet.from_pretrained(base, subfolder="unet", torch_dtype=dtype).inflate(),
        scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
        pose_encoder=ControlEncoder(channels=unet_channels).to(dtype),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def swaying_poses(frames: int, size: int):
    """``(frames, size, size, 3)`` skeletons of one figure swaying side to side, drawn by our renderer."""
    import numpy as np

    from pose_extraction.skeleton import render_sequence

    figure = np.array([[[size * (0.3 + 0.4 * (i % 2)), size * (0.1 + 0.05 * i), 0.9] for i in range(17)]], np.float32)
    return render_sequence([figure + np.float32([[[(t % 5) * 2, 0, 0]]]) for t in range(frames)], size, size)
