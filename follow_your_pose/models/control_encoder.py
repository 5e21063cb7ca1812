"""The stage-1 pose encoder: skeleton images to multi-scale residuals for the SD UNet.

Topology of the T2I-Adapter "full adapter" (what the Follow-Your-Pose release used):
PixelUnshuffle(8) turns a ``3 x H x W`` skeleton image into ``192 x H/8 x W/8``; a 3x3 conv to
``channels[0]``; four levels of ``num_res_blocks`` residual blocks (3x3 conv, ReLU, 1x1 conv,
plus identity); levels 2-4 start with AvgPool2d(2) and a 1x1 channel conv. With SD 1.x sizes
(320/640/1280/1280) the levels match the four down blocks of the UNet: 64, 32, 16 and 8 latent
pixels for a 512x512 image.

Unlike the release, every injected level ends in a **zero-initialised 1x1 output conv**, so an
untrained encoder leaves Stable Diffusion exactly unchanged (the paper's claim) and dropping the
condition (``pose=None`` or ``conditioning_scale=0``) restores it.

Injection (``injection="residual"``, the paper's design) adds level ``k`` after the second
layer of down block ``k`` through ``UNet2DConditionModel``'s ``down_intrablock_additional_residuals``.
diffusers 0.42 adds the first three inside ``CrossAttnDownBlock2D`` after its last
(resnet, transformer) pair, before the downsampler, so the skip carries them; the last
``DownBlock2D`` residual is added in place to the block's returned sample, which is the same
tensor object as its last skip, so the skip carries that one as well (checked by
``tests/test_pose_encoder.py`` so a diffusers change cannot silently break it).

Ablations of the paper, chosen by config:

- ``injected_levels``: fewer injected levels (for example ``(0,)``); the others get no output conv
  and a zero residual.
- ``injection="concat"``: the pose is encoded to ``concat_channels`` maps at latent resolution and
  concatenated to the noisy latents; the UNet's ``conv_in`` is widened with zero-initialised input
  channels by :func:`expand_conv_in` (that conv must then be trained too, as the paper notes).

Videos fold time into batch: ``(B, 3, T, H, W)`` gives features for ``B*T`` frames in
``b * T + t`` order, the order :class:`follow_your_pose.models.inflated_unet.InflatedUNet` folds latents in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import (
    ModelMixin,  # also looked up here by DiffusionPipeline.from_pretrained
)
from diffusers.utils import BaseOutput
from torch import nn

INJECTIONS = ("residual", "concat")


@dataclass
class ControlEncoderOutput(BaseOutput):
    """What the pose encoder gives the UNet.

    ``down_residuals``: one tensor per UNet down block (``injection="residual"``), already scaled by
    the conditioning scale; zeros for levels that are not injected. ``concat``: ``(N, C, h, w)`` pose
    maps to concatenate to the latents (``injection="concat"``). Exactly one of them is set.
    """

    down_residuals: tuple[torch.Tensor, ...] | None = None
    concat: torch.Tensor | None = None


class ControlResBlock(nn.Module):
    """3x3 conv, ReLU, 1x1 conv, plus identity (the T2I-Adapter full-adapter block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.act(self.block1(x)))


class ControlLevel(nn.Module):
    """One resolution level: optional AvgPool2d(2) and 1x1 channel conv, then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True) if downsample else nn.Identity()
        self.in_conv = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.resnets = nn.ModuleList(ControlResBlock(out_channels) for _ in range(num_res_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(self.downsample(x))
        for resnet in self.resnets:
            x = resnet(x)
        return x


def zero_module(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ControlEncoder(ModelMixin, ConfigMixin):
    """Multi-scale pose encoder (see the module docstring). Input: skeleton RGB in ``[0, 1]``."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        channels: tuple[int, ...] = (320, 640, 1280, 1280),
        num_res_blocks: int = 2,
        downscale_factor: int = 8,
        injection: str = "residual",
        injected_levels: tuple[int, ...] | None = None,
        concat_channels: int = 4,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {injection!r}")
        if not channels or num_res_blocks < 1 or downscale_factor < 1:
            raise ValueError("channels must be non-empty, num_res_blocks and downscale_factor positive")
        levels = tuple(range(len(channels))) if injected_levels is None else tuple(sorted(set(injected_levels)))
        if not levels or min(levels) < 0 or max(levels) >= len(channels):
            raise ValueError(f"injected_levels {injected_levels} must be a non-empty subset of 0..{len(channels) - 1}")
        self.levels_used = levels
        self.unshuffle = nn.PixelUnshuffle(downscale_factor)
        self.conv_in = nn.Conv2d(in_channels * downscale_factor**2, channels[0], kernel_size=3, padding=1)
        if injection == "concat":
            # one level at latent resolution, projected to the extra input channels of the UNet
            self.body = nn.ModuleList([ControlLevel(channels[0], channels[0], num_res_blocks, downsample=False)])
            self.out_convs = nn.ModuleDict({"0": nn.Conv2d(channels[0], concat_channels, kernel_size=1)})
        else:
            depth = max(levels) + 1
            self.body = nn.ModuleList(
                ControlLevel(channels[max(k - 1, 0)], channels[k], num_res_blocks, downsample=k > 0) for k in range(depth)
            )
            self.out_convs = nn.ModuleDict({str(k): nn.Conv2d(channels[k], channels[k], 1) for k in levels})
        if zero_init:
            for conv in self.out_convs.values():
                zero_module(conv)

    @property
    def num_levels(self) -> int:
        return len(self.config.channels)

    def forward(self, pose: torch.Tensor, conditioning_scale: float = 1.0) -> ControlEncoderOutput:
        """Encode ``pose``: ``(N, 3, H, W)`` images or ``(B, 3, T, H, W)`` clips (folded to ``B*T``).

        ``H`` and ``W`` must be multiples of ``downscale_factor`` (8: the latent size).
        """
        pose = fold_frames(pose)
        factor = self.config.downscale_factor
        if pose.shape[1] != self.config.in_channels or pose.shape[-1] % factor or pose.shape[-2] % factor:
            raise ValueError(
                f"pose must be (N, {self.config.in_channels}, H, W) with H, W multiples of {factor}, got {tuple(pose.shape)}"
            )
        x = self.conv_in(self.unshuffle(pose.to(self.dtype)))
        features = []
        for level in self.body:
            x = level(x)
            features.append(x)
        if self.config.injection == "concat":
            return ControlEncoderOutput(concat=self.out_convs["0"](features[0]) * conditioning_scale)
        residuals = []
        for k in range(self.num_levels):
            if k in self.levels_used:
                residuals.append(self.out_convs[str(k)](features[k]) * conditioning_scale)
            else:
                residuals.append(None)
        return ControlEncoderOutput(down_residuals=tuple(_fill_zeros(residuals, features, self.config.channels)))


def _fill_zeros(residuals: list, features: list[torch.Tensor], channels: tuple[int, ...]) -> list[torch.Tensor]:
    """Zero tensors for levels that are not injected, at the size of their down block."""
    n, _, h, w = features[0].shape
    filled = []
    for k, residual in enumerate(residuals):
        if residual is None:
            size = (-(-h // 2**k), -(-w // 2**k))
            residual = features[0].new_zeros((n, channels[k], *size))
        filled.append(residual)
    return filled


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` to ``(B*T, C, H, W)`` (frame index fastest); 4D input is returned as is."""
    if x.ndim == 4:
        return x
    if x.ndim != 5:
        raise ValueError(f"expected a (N, C, H, W) or (B, C, T, H, W) tensor, got {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*T, C, H, W)`` to ``(B, C, T, H, W)``: the inverse of :func:`fold_frames`."""
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"batch {bt} is not a multiple of num_frames={num_frames}")
    return x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def control_unet_inputs(
    sample: torch.Tensor, features: ControlEncoderOutput | None
) -> tuple[torch.Tensor, dict]:
    """The UNet ``sample`` and extra forward kwargs for ``features`` (None: the stock UNet call).

    Residual features become a fresh ``down_intrablock_additional_residuals`` list (diffusers pops
    from it); concat features are concatenated to ``sample`` on the channel axis (``sample`` may be
    ``(N, C, H, W)`` or ``(B, C, T, H, W)``).
    """
    if features is None:
        return sample, {}
    if features.concat is not None:
        concat = features.concat.to(sample.dtype)
        if sample.ndim == 5:
            concat = unfold_frames(concat, sample.shape[2])
        if concat.shape[0] != sample.shape[0] or concat.shape[-2:] != sample.shape[-2:]:
            raise ValueError(f"pose maps {tuple(concat.shape)} do not match latents {tuple(sample.shape)}")
        return torch.cat([sample, concat], dim=1), {}
    residuals = [r.to(sample.dtype) for r in features.down_residuals]
    return sample, {"down_intrablock_additional_residuals": residuals}


def repeat_features(features: ControlEncoderOutput | None, times: int) -> ControlEncoderOutput | None:
    """Features repeated ``times`` along the batch (pose to both classifier-free-guidance branches)."""
    if features is None or times == 1:
        return features
    if features.concat is not None:
        return ControlEncoderOutput(concat=features.concat.repeat(times, 1, 1, 1))
    return ControlEncoderOutput(down_residuals=tuple(r.repeat(times, 1, 1, 1) for r in features.down_residuals))


def with_unconditional_zeros(features: ControlEncoderOutput) -> ControlEncoderOutput:
    """``features`` behind a batch of zeros of the same shapes: the unconditional guidance branch gets no pose."""
    if features.concat is not None:
        return ControlEncoderOutput(concat=torch.cat([torch.zeros_like(features.concat), features.concat]))
    return ControlEncoderOutput(down_residuals=tuple(torch.cat([torch.zeros_like(r), r]) for r in features.down_residuals))


def expand_conv_in(unet, extra_channels: int) -> None:
    """Widen ``unet.conv_in`` by ``extra_channels`` zero-initialised input channels (the concat ablation).

    The original weights are kept, so the widened UNet equals the stock one while the extra inputs
    are zero-weighted; ``unet.config.in_channels`` is updated so ``save_pretrained`` records it.
    """
    if extra_channels < 1:
        raise ValueError("extra_channels must be positive")
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra_channels)
