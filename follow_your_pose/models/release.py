"""The released Follow-Your-Pose checkpoint's key layout, mapped onto our model.

The release (github.com/mayuelala/FollowYourPose) saves its stage-2 video UNet as one state dict: the SD-1.x
UNet's keys under their diffusers names, nine temporal tensors per transformer block and the pose encoder
under ``skeleton_adapter.*`` (TencentARC T2I-Adapter "full adapter" layout). With the release's inflation
(:meth:`~follow_your_pose.models.inflated_unet.InflationConfig.release`) our model holds the same tensors under
these names:

=========================================  ===========================================
release                                    ours
=========================================  ===========================================
``*.attn_temp.*``                          ``*.temporal_attention.attn.*``
``*.norm_temp.*``                          ``*.temporal_attention.norm.*``
``*.conv_temporal.{down,up}.weight``       ``*.temporal_conv.{down,up}.weight``
``skeleton_adapter.conv_in.*``             pose encoder ``conv_in.*``
``skeleton_adapter.body.{n*l+j}.block*``   pose encoder ``body.{l}.resnets.{j}.block*``
``skeleton_adapter.body.{n*l}.in_conv.*``  pose encoder ``body.{l}.in_conv.*``
=========================================  ===========================================

(``n`` residual blocks per level, 2 in the release.) The release adds each level's features as they are:
our encoder's output convs become identities for it. A DDP-saved file prefixes every key with ``module.``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

ADAPTER_PREFIX = "skeleton_adapter."
DDP_PREFIX = "module."
_RENAMES = ((".attn_temp.", ".temporal_attention.attn."), (".norm_temp.", ".temporal_attention.norm."), (".conv_temporal.", ".temporal_conv."))
_BODY = re.compile(r"body\.(\d+)\.(block1|block2|in_conv)\.(weight|bias)$")


class ReleaseFormatError(ValueError):
    """A file or folder that is not (a readable copy of) the release's weights; the message names the problem."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.bin``/``.pth``/``.pt`` (loaded weights-only: no arbitrary objects unpickled) or ``.safetensors`` file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle refused by weights_only, not a checkpoint at all
        reason = " ".join(str(error).split())[:200]
        raise ReleaseFormatError(f"cannot read {path}: not a complete torch/safetensors weights file ({type(error).__name__}: {reason})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ReleaseFormatError(f"{path} does not hold a state dict of tensors")
    return strip_ddp_prefix(state)


def strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` that a DDP-wrapped save puts in front of every key."""
    if all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX) :]: value for key, value in state.items()}
    return state


def split_adapter(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(UNet tensors, pose-encoder tensors)``: the latter are the ``skeleton_adapter.*`` keys, prefix removed."""
    unet = {k: v for k, v in state.items() if not k.startswith(ADAPTER_PREFIX)}
    adapter = {k[len(ADAPTER_PREFIX) :]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    return unet, adapter


def unet_key(key: str) -> str:
    """Our inflated UNet's name for a release UNet key (SD-1.x keys are unchanged)."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def temporal_conv_shape(unet_state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """``(rank, kernel size)`` of the release's temporal convs, from the widest block (None: no temporal conv)."""
    downs = [v for k, v in unet_state.items() if k.endswith("conv_temporal.down.weight")]
    if not downs:
        return None
    widest = max(downs, key=lambda w: w.shape[1])
    return int(widest.shape[0]), int(widest.shape[2])


def adapter_layout(adapter: dict[str, torch.Tensor], levels: int) -> dict:
    """The :class:`~follow_your_pose.models.control_encoder.ControlEncoder` config the release adapter's tensors describe."""
    bodies = sorted({int(m.group(1)) for key in adapter if (m := _BODY.match(key))})
    if "conv_in.weight" not in adapter or not bodies or len(bodies) % levels or bodies != list(range(len(bodies))):
        raise ReleaseFormatError(
            f"the pose encoder's keys are not a T2I-Adapter full adapter with {levels} levels "
            f"(conv_in and body.0..body.N-1 with N a multiple of {levels}; found body indices {bodies[:12]})"
        )
    blocks = len(bodies) // levels
    channels = tuple(int(adapter[f"body.{level * blocks}.block1.weight"].shape[0]) for level in range(levels))
    in_pixels = int(adapter["conv_in.weight"].shape[1])
    factor = int(round((in_pixels / 3) ** 0.5))
    if 3 * factor * factor != in_pixels:
        raise ReleaseFormatError(f"the pose encoder's conv_in takes {in_pixels} channels: not 3 x a PixelUnshuffle square")
    return {"channels": channels, "num_res_blocks": blocks, "downscale_factor": factor}


def pose_encoder_state(adapter: dict[str, torch.Tensor], blocks: int, out_channels: dict[str, int]) -> dict[str, torch.Tensor]:
    """Our pose encoder's state dict for the release adapter's tensors; output convs ``out_channels`` are identities."""
    state = {}
    for key, value in adapter.items():
        match = _BODY.match(key)
        if key.startswith("conv_in."):
            state[key] = value
        elif match is None:
            raise ReleaseFormatError(f"unexpected pose-encoder key skeleton_adapter.{key}")
        else:
            index, part, kind = int(match.group(1)), match.group(2), match.group(3)
            level, block = divmod(index, blocks)
            if part == "in_conv":
                if block:
                    raise ReleaseFormatError(f"skeleton_adapter.{key}: in_conv only starts a level")
                state[f"body.{level}.in_conv.{kind}"] = value
            else:
                state[f"body.{level}.resnets.{block}.{part}.{kind}"] = value
    dtype = next(iter(adapter.values())).dtype
    for level, channels in out_channels.items():
        state[f"out_convs.{level}.weight"] = torch.eye(channels, dtype=dtype)[:, :, None, None]
        state[f"out_convs.{level}.bias"] = torch.zeros(channels, dtype=dtype)
    return state
