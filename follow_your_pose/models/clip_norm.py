"""GroupNorm whose statistics span every frame of a clip, as the release's video UNet computes them.

The release runs ``nn.GroupNorm`` on the 5-D ``(B, C, F, H, W)`` tensor in every resnet (``norm1``,
``norm2``) and in the UNet's ``conv_norm_out``, so each group's mean and variance are taken over all
``F`` frames of the clip. Our UNet folds frames into the batch (``(B*F, C, H, W)``), which makes a stock
GroupNorm per frame. :class:`ClipGroupNorm` reads the frame count from a :class:`FrameCount` shared by
all of a UNet's clip norms, which :class:`~follow_your_pose.models.inflated_unet.InflatedUNet` sets at the start
of every forward call (it is not reset afterwards, so a gradient-checkpointed block recomputed in the
backward pass sees the same count as its forward did).

Properties this gives (tested): with one frame, or with ``F`` identical frames, a clip norm equals the
stock per-frame GroupNorm; and its output depends on which frames are normalised together, so
generation normalises the frames of each denoising window together, the clip the model sees, as
training normalises the frames of each training clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameCount:
    """The number of frames folded into the batch of the current forward call (shared, mutable)."""

    def __init__(self) -> None:
        self.value = 1


class ClipGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` over ``(B*F, C, H, W)`` whose statistics span the ``F`` frames of each clip."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *, frames: FrameCount) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.frames = frames

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, frames: FrameCount) -> ClipGroupNorm:
        """A clip norm with ``norm``'s settings and its very parameters (shared, not copied)."""
        clip = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, frames=frames)
        if norm.affine:
            clip.weight, clip.bias = norm.weight, norm.bias
        return clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames.value
        if frames <= 1:
            return super().forward(x)
        total, channels = x.shape[:2]
        if total % frames:
            raise ValueError(f"batch {total} is not a multiple of the clip's {frames} frames")
        # (B*F, C, ...) as the release's (B, C, F, ...): one fused group norm over each clip (torch accumulates
        # half-precision statistics in float32), which beats spelling the statistics out op by op even with the copies
        clip = x.reshape(total // frames, frames, channels, -1).transpose(1, 2)
        normed = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return normed.transpose(1, 2).reshape(x.shape)


def use_clip_norms(unet: nn.Module, frames: FrameCount) -> int:
    """Make every resnet's ``norm1``/``norm2`` and the UNet's ``conv_norm_out`` clip norms; return how many."""
    from diffusers.models.resnet import ResnetBlock2D

    count = 0
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            for name in ("norm1", "norm2"):
                norm = getattr(module, name)
                if type(norm) is nn.GroupNorm:
                    setattr(module, name, ClipGroupNorm.replacing(norm, frames))
                    count += 1
    if type(getattr(unet, "conv_norm_out", None)) is nn.GroupNorm:
        unet.conv_norm_out = ClipGroupNorm.replacing(unet.conv_norm_out, frames)
        count += 1
    return count

