"""The tiny random pipelines (ours and diffusers' AnimateDiff + ControlNet on the same base) and the swaying-figure poses
the generation benchmarks share."""

from __future__ import annotations

SHAPES = {
    "tiny": {"unet_channels": (32, 64, 64, 64), "attention_heads": 2, "norm_num_groups": 32, "cross_attention_dim": 32},
    "sd-scaled": {"unet_channels": (80, 160, 320, 320), "attention_heads": 2, "norm_num_groups": 8, "cross_attention_dim": 192},
    "sd": {"unet_channels": (320, 640, 1280, 1280), "attention_heads": 8, "norm_num_groups": 32, "cross_attention_dim": 768},
}
"""The random SD-1.x-shaped UNets the benchmarks build (:class:`follow_your_pose.tiny.TinySDConfig` fields):

- ``tiny``: the tests' model; cheap, but at 32x32 latents its finest level has 32 tokens per channel against SD's
  12.8 at 512x512, so attention weighs 2.5x what it does at full size;
- ``sd-scaled``: SD 1.4 at a quarter of its widths: SD's head widths (40/80/160) and channels per group, and at
  32x32 latents (256 px) SD's tokens per channel at every level at the paper's 512x512 (1024 / 80 = 4096 / 320).
  Attention cost grows with tokens x channels and the per-token layers' with channels squared, so the two weigh in a
  step as they do at full size: the CPU-sized stand-in for SD 1.4;
- ``sd``: SD 1.4's own widths (for a GPU).
"""


def check_shape(shape: str) -> None:
    """Refuse a ``shape`` that is not in :data:`SHAPES` (a benchmark config's own check)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")


def save_base(folder, shape: str, sample_size: int):
    """A random SD-shaped model folder of ``shape`` (:data:`SHAPES`) for ``sample_size``-pixel images; its path."""
    from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

    check_shape(shape)
    return save_tiny_sd(folder, TinySDConfig(**SHAPES[shape], sample_size=sample_size))


def build_pipeline(base: str, dtype=None):
    """``FollowYourPosePipeline`` on the tiny SD-shaped ``base`` folder (random pose encoder), weights in ``dtype``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from follow_your_pose.models import ControlEncoder, InflatedUNet
    from follow_your_pose.pipeline import FollowYourPosePipeline

    dtype = dtype or torch.float32
    torch.manual_seed(0)
    unet = InflatedUNet.from_pretrained(base, subfolder="unet", torch_dtype=dtype).inflate()
    pipe = FollowYourPosePipeline(
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", torch_dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
        pose_encoder=ControlEncoder(channels=tuple(unet.config.block_out_channels)).to(dtype),
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
