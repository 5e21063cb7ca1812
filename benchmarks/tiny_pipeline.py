"""The tiny random pipelines (ours and diffusers' AnimateDiff + ControlNet on the same base) and the swaying-figure poses
the generation benchmarks share."""

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


def build_animatediff_controlnet(base: str, motion_max_seq_length: int = 32, embedding_scale: float | None = None):
    """diffusers' ``AnimateDiffControlNetPipeline`` on the same tiny ``base``: its 2-D UNet (same weights) made a
    ``UNetMotionModel`` with a ``MotionAdapter`` of matching widths built from a config, and a ``ControlNetModel``
    copied from that 2-D UNet (``ControlNetModel.from_unet``). ``embedding_scale``: the ControlNet's condition
    embedding widths are SD's (16, 32, 96, 256) times this (default: the UNet's width over SD's 320), so a tiny UNet
    does not carry an SD-sized embedding."""
    import torch
    from diffusers import AnimateDiffControlNetPipeline, AutoencoderKL, ControlNetModel, DDIMScheduler, MotionAdapter
    from diffusers import UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    scale = embedding_scale if embedding_scale is not None else unet.config.block_out_channels[0] / 320
    adapter = MotionAdapter(
        block_out_channels=tuple(unet.config.block_out_channels), motion_layers_per_block=unet.config.layers_per_block,
        motion_num_attention_heads=unet.config.attention_head_dim, motion_norm_num_groups=unet.config.norm_num_groups,
        motion_max_seq_length=motion_max_seq_length,
    )  # fmt: skip
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(max(4, round(c * scale)) for c in (16, 32, 96, 256)))
    pipe = AnimateDiffControlNetPipeline(
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=UNetMotionModel.from_unet2d(unet, motion_adapter=adapter),
        motion_adapter=adapter,
        controlnet=controlnet,
        scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
