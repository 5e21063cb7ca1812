"""The stage-2 inflated UNet: a pretrained SD UNet made into a video UNet without forking it.

:class:`InflatedUNet` is a ``UNet2DConditionModel`` whose only behavioural override is
``forward``: it folds ``(B, C, F, H, W)`` latents into ``(B*F, C, H, W)`` (so every 2D conv runs per
frame, the paper's 1x3x3 pseudo-3D conv), repeats the text embedding and timestep per frame, and
passes the frame count to the transformer blocks in ``cross_attention_kwargs["num_frames"]``.
:meth:`InflatedUNet.inflate` replaces every ``BasicTransformerBlock`` by an
:class:`~follow_your_pose.models.attention.InflatedTransformerBlock` (same parameter names, so SD
checkpoints and LoRAs load unchanged) carrying temporal attention and a temporal conv, and installs
cross-frame attention processors with ``set_attn_processor``.

Stage-2 trainable parameters are named in one place, :data:`STAGE2_TRAINABLE`:
``attn1.to_q``, ``attn2.to_q``, ``temporal_attention``, ``temporal_conv``; :func:`freeze_for_stage2`
freezes everything else (pose encoder included).

Shipping: :func:`save_inflated` writes only what stage 2 changes (the trainable parameters and
``conv_in``) to ``inflated_weights.safetensors`` plus ``inflation.json`` naming the base UNet (hub id
or folder); :func:`load_inflated` rebuilds the model from the base. ``save_pretrained`` /
``from_pretrained`` also work for a full copy (the inflation settings ride in ``config.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (DiffusionPipeline.from_pretrained looks it up here)
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from safetensors.torch import load_file, save_file

from datasets.atomic import atomic_path, write_json
from follow_your_pose.models.attention import (
    CrossFrameAttnProcessor,
    FrameAttnProcessor,
    InflatedTransformerBlock,
    TemporalAttnProcessor,
)
from follow_your_pose.models.clip_norm import FrameCount, use_clip_norms
from follow_your_pose.models.control_encoder import (
    expand_conv_in,
    fold_frames,
    unfold_frames,
)

STAGE2_TRAINABLE = ("attn1.to_q", "attn2.to_q", "temporal_attention", "temporal_conv")
"""Module paths trained in stage 2 (matched as whole dotted segments of parameter names); also what an inflated
UNet holds beyond its base (:func:`delta_state_dict`)."""
RELEASE_STAGE2_TRAINABLE = ("attn1.to_q", "attn2.to_q", "temporal_attention.attn", "temporal_conv")
"""The release's stage-2 trainable set: as :data:`STAGE2_TRAINABLE` but the temporal attention's LayerNorm stays frozen."""

WEIGHTS_NAME = "inflated_weights.safetensors"
INFLATION_NAME = "inflation.json"


@dataclass(frozen=True, kw_only=True)
class InflationConfig:
    """What :meth:`InflatedUNet.inflate` adds to a 2D UNet."""

    cross_frame_attention: bool = True
    """attn1 keys/values from frame 0 and frame i-1 (False: plain per-frame self-attention)."""
    cross_frame_from_level: int = 0
    """UNet resolution level from which attn1 is cross-frame: 0, every block (the paper's and the release's design);
    1, not in the blocks at full latent resolution, whose attention costs the most (4x the tokens of level 1, and
    cross-frame attention doubles its keys): 15-20% of a stage-2 step at SD 1.4's proportions (docs/benchmarks.md),
    at the price of the finest level's frame-to-frame link. Changes no weight, only which processor runs."""
    temporal_attention: bool = True
    """Add self-attention over frames after each transformer block's FFN (zero-initialised output)."""
    temporal_conv: bool = True
    """Add a residual 1D conv over frames after the temporal attention (last conv zero-initialised)."""
    temporal_conv_kind: Literal["full", "low_rank"] = "full"
    """``full``: LayerNorm, conv, SiLU, conv, full width with biases (our design); ``low_rank``: the release's
    ``x + up(down(x))``, two bias-free convs through ``temporal_conv_rank`` channels, no norm, no activation."""
    temporal_conv_rank: int = 160
    """``low_rank`` only: the rank r, or C // 2 in blocks narrower than r (the release: 160)."""
    temporal_kernel_size: int = 3
    """Kernel size of the temporal conv (odd)."""
    positional_encoding: bool = False
    """Add sinusoidal frame positions before temporal attention (the reference release had none)."""
    temporal_heads: int | None = None
    """Heads of the temporal attention; None uses the block's own head count."""
    clip_group_norm: bool = False
    """Resnet GroupNorms (norm1, norm2) and conv_norm_out take their statistics over all frames of the clip, as the
    release's do; False: per frame, as SD computes them for an image (see :mod:`follow_your_pose.models.clip_norm`)."""

    def __post_init__(self) -> None:
        if self.temporal_kernel_size < 1 or self.temporal_kernel_size % 2 == 0:
            raise ValueError("temporal_kernel_size must be odd and positive")
        if self.temporal_heads is not None and self.temporal_heads < 1:
            raise ValueError("temporal_heads must be positive")
        if self.temporal_conv_kind not in ("full", "low_rank"):
            raise ValueError(f"temporal_conv_kind must be full or low_rank, got {self.temporal_conv_kind!r}")
        if self.temporal_conv_rank < 1:
            raise ValueError("temporal_conv_rank must be positive")
        if self.cross_frame_from_level < 0:
            raise ValueError("cross_frame_from_level must be >= 0")

    @classmethod
    def release(cls) -> InflationConfig:
        """The released Follow-Your-Pose UNet: low-rank bias-free temporal conv, clip-wide GroupNorm."""
        return cls(temporal_conv_kind="low_rank", clip_group_norm=True)


INFLATIONS = {"default": InflationConfig(), "release": InflationConfig.release()}
"""The named inflations a training config picks from (``model.inflation``)."""


def _block_kwargs(transformer: Transformer2DModel) -> dict:
    """Constructor arguments of the ``BasicTransformerBlock``s a ``Transformer2DModel`` built."""
    config = transformer.config
    return dict(
        dim=transformer.inner_dim,
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        dropout=config.dropout,
        cross_attention_dim=config.cross_attention_dim,
        activation_fn=config.activation_fn,
        num_embeds_ada_norm=config.num_embeds_ada_norm,
        attention_bias=config.attention_bias,
        only_cross_attention=config.only_cross_attention,
        double_self_attention=config.double_self_attention,
        upcast_attention=config.upcast_attention,
        norm_type=config.norm_type,
        norm_elementwise_affine=config.norm_elementwise_affine,
        norm_eps=config.norm_eps,
        attention_type=config.attention_type,
    )


class InflatedUNet(UNet2DConditionModel):
    """A ``UNet2DConditionModel`` that takes video latents; see the module docstring."""

    @property
    def inflation(self) -> InflationConfig | None:
        settings = self.config.get("inflation")
        return None if settings is None else InflationConfig(**settings)

    def inflate(self, config: InflationConfig = InflationConfig()) -> InflatedUNet:
        """Swap in inflated transformer blocks, temporal layers and frame-aware processors (once)."""
        if self.config.get("inflation") is not None:
            raise RuntimeError("this UNet is already inflated")
        for transformer in [m for m in self.modules() if isinstance(m, Transformer2DModel)]:
            kwargs = _block_kwargs(transformer)
            for index, block in enumerate(transformer.transformer_blocks):
                if type(block) is not BasicTransformerBlock:
                    raise TypeError(f"cannot inflate a {type(block).__name__}")
                new = InflatedTransformerBlock(**kwargs)
                new.load_state_dict(block.state_dict(), strict=True, assign=True)
                new.set_chunk_feed_forward(block._chunk_size, block._chunk_dim)
                new.add_temporal_layers(
                    heads=config.temporal_heads or kwargs["num_attention_heads"],
                    attention=config.temporal_attention,
                    conv=config.temporal_conv_kind if config.temporal_conv else None,
                    kernel_size=config.temporal_kernel_size,
                    positional_encoding=config.positional_encoding,
                    rank=config.temporal_conv_rank,
                )
                new.train(block.training)
                transformer.transformer_blocks[index] = new
        if config.clip_group_norm:
            self.clip_frames = FrameCount()  # the clip norms read it; forward sets it
            use_clip_norms(self, self.clip_frames)
        self.register_to_config(inflation=asdict(config))
        self.set_frame_processors(cross_frame=config.cross_frame_attention, from_level=config.cross_frame_from_level)
        return self

    def set_frame_processors(self, *, cross_frame: bool = True, from_level: int = 0) -> None:
        """SDPA processors everywhere; cross-frame attention on the ``attn1`` of every transformer block at resolution
        level ``from_level`` or deeper (:meth:`level_of`); attention over frames in the temporal attentions.

        Frames 0 and 1 attend to frame 0's keys once (:class:`CrossFrameAttnProcessor` ``first_frames_once``) unless
        the UNet has the release's clip-wide GroupNorm, which needs a still clip's frames bit-identical."""
        first_frames_once = not (self.inflation and self.inflation.clip_group_norm)
        processors = {}
        for name in self.attn_processors:
            is_self = name.endswith("attn1.processor") and "transformer_blocks" in name
            if ".temporal_attention." in name:
                processors[name] = TemporalAttnProcessor()
            elif cross_frame and is_self and self.level_of(name) >= from_level:
                processors[name] = CrossFrameAttnProcessor(first_frames_once)
            else:
                processors[name] = FrameAttnProcessor()
        self.set_attn_processor(processors)

    def level_of(self, name: str) -> int:
        """The resolution level of a submodule by its dotted name: 0 at full latent resolution (``down_blocks.0``, the
        last up block), one more per downsampling; the mid block is the deepest."""
        parts = name.split(".")
        depth = len(self.config.block_out_channels) - 1
        if parts[0] == "down_blocks":
            return int(parts[1])
        if parts[0] == "up_blocks":
            return depth - int(parts[1])
        return depth

    def _keep_frame_processors(self, what: str, call):
        """Run ``call()``; if it left attention processors that are not frame-aware (xformers, sliced, stock ones),
        put the frame processors back and refuse: they would silently undo cross-frame and temporal attention."""
        if self.config.get("inflation") is None:
            return call()
        previous = self.attn_processors
        result = call()
        foreign = sorted({type(p).__name__ for p in self.attn_processors.values() if not isinstance(p, FrameAttnProcessor)})
        if foreign:
            self.set_attn_processor(previous)
            raise ValueError(
                f"{what} would replace the inflated UNet's cross-frame and temporal attention with {', '.join(foreign)}; "
                "its processors are kept (they run torch's scaled_dot_product_attention, which picks flash or "
                "memory-efficient kernels by itself)"
            )
        return result

    def set_attn_processor(self, processor) -> None:
        """As diffusers', but an inflated UNet keeps frame-aware processors (subclasses of ``FrameAttnProcessor``)."""
        return self._keep_frame_processors("set_attn_processor", lambda: super(InflatedUNet, self).set_attn_processor(processor))

    def set_default_attn_processor(self) -> None:
        """An inflated UNet's default processors are its frame processors (diffusers' would drop cross-frame attention)."""
        if self.inflation is None:
            return super().set_default_attn_processor()
        self.set_frame_processors(cross_frame=self.inflation.cross_frame_attention, from_level=self.inflation.cross_frame_from_level)

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op=None) -> None:
        return self._keep_frame_processors(
            "xformers attention", lambda: super(InflatedUNet, self).set_use_memory_efficient_attention_xformers(valid, attention_op)
        )

    def set_attention_slice(self, slice_size) -> None:
        return self._keep_frame_processors("attention slicing", lambda: super(InflatedUNet, self).set_attention_slice(slice_size))

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Build from a config; a config written by an inflated model comes back inflated (weights load after)."""
        settings = None
        if isinstance(config, Mapping) and config.get("inflation") is not None:
            settings = InflationConfig(**config["inflation"])
            config = {k: v for k, v in config.items() if k != "inflation"}
        result = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        if settings is not None:
            (result[0] if isinstance(result, tuple) else result).inflate(settings)
        return result

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, config: InflationConfig = InflationConfig()) -> InflatedUNet:
        """Inflate an already loaded 2D UNet (its weights are copied)."""
        model = cls.from_config(unet.config)
        model.load_state_dict(unet.state_dict(), strict=True)
        model.to(unet.device)
        if unet.dtype != model.dtype:
            model.to(unet.dtype)
        return model.inflate(config)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *, num_frames=None, **kwargs):
        """``sample`` is ``(B, C, F, H, W)`` (output has the same layout) or frames folded ``(B*F, C, H, W)``
        with ``num_frames=F``. ``encoder_hidden_states`` and a per-sample ``timestep`` may be per clip
        (``B``) or per frame (``B*F``). Pose residuals come folded per frame (``B*F``). Other keywords
        are those of ``UNet2DConditionModel.forward``."""
        video = sample.ndim == 5
        if video:
            num_frames = sample.shape[2]
            sample = fold_frames(sample)
        num_frames = int(num_frames or 1)
        frames_total = sample.shape[0]
        if frames_total % num_frames:
            raise ValueError(f"batch {frames_total} is not a multiple of num_frames={num_frames}")
        if encoder_hidden_states.shape[0] * num_frames == frames_total and num_frames > 1:
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] * num_frames == frames_total:
            timestep = timestep.repeat_interleave(num_frames)
        clip_frames = getattr(self, "clip_frames", None)
        if clip_frames is not None:  # inflated with clip_group_norm: the clip norms read the frame count
            clip_frames.value = num_frames
        if self.config.get("inflation") is not None:  # stock processors would warn about the extra keyword
            kwargs["cross_attention_kwargs"] = {**(kwargs.get("cross_attention_kwargs") or {}), "num_frames": num_frames}
        residuals = kwargs.get("down_intrablock_additional_residuals")
        if residuals is not None:
            kwargs["down_intrablock_additional_residuals"] = list(residuals)  # diffusers pops from it
        return_dict = kwargs.pop("return_dict", True)
        out = super().forward(sample, timestep, encoder_hidden_states, return_dict=False, **kwargs)[0]
        if video:
            out = unfold_frames(out, num_frames)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def _is_stage2(name: str, patterns: tuple[str, ...] = STAGE2_TRAINABLE) -> bool:
    dotted = f".{name}."
    return any(f".{pattern}." in dotted for pattern in patterns)


def freeze_for_stage2(
    unet: torch.nn.Module, *frozen: torch.nn.Module | None, trainable_set: tuple[str, ...] = STAGE2_TRAINABLE
) -> list[str]:
    """Freeze everything but ``trainable_set`` (:data:`STAGE2_TRAINABLE` or :data:`RELEASE_STAGE2_TRAINABLE`) in
    ``unet`` and all of ``frozen`` (the pose encoder); return the trainable parameter names."""
    if not any(".temporal_" in name for name, _ in unet.named_parameters()):
        raise ValueError("the UNet has no temporal layers: inflate it before stage 2")
    trainable = []
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_(_is_stage2(name, trainable_set))
        if parameter.requires_grad:
            trainable.append(name)
    for module in frozen:
        if module is not None:
            module.requires_grad_(False)
    return trainable


def parameter_counts(*modules: torch.nn.Module | None) -> dict[str, int]:
    """``{"trainable": n, "total": n}`` parameters over ``modules``."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def delta_state_dict(unet: InflatedUNet) -> dict[str, torch.Tensor]:
    """The parameters an inflated UNet does not share with its base: stage-2 ones and ``conv_in``."""
    return {
        name: tensor.detach().contiguous()
        for name, tensor in unet.state_dict().items()
        if _is_stage2(name) or name.startswith("conv_in.")
    }


def save_inflated(unet: InflatedUNet, directory: str | Path, *, base: str, subfolder: str | None = "unet", revision: str | None = None) -> Path:
    """Write ``inflation.json`` + ``inflated_weights.safetensors`` (only the new/changed weights) to ``directory``.

    ``base`` is the hub id or folder of the SD model the UNet was loaded from (``subfolder`` inside it).
    """
    inflation = unet.inflation
    if inflation is None:
        raise ValueError("the UNet is not inflated")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(delta_state_dict(unet), str(tmp), metadata={"format": "pt"})
    meta = {"base": str(base), "subfolder": subfolder, "revision": revision, "inflation": asdict(inflation)}
    write_json(directory / INFLATION_NAME, meta, indent=1)
    return directory


def load_inflated(directory: str | Path, *, base: str | None = None, torch_dtype: torch.dtype | None = None) -> InflatedUNet:
    """Rebuild an inflated UNet saved by :func:`save_inflated` on its base (or on ``base`` if given), or load a
    full copy written by ``save_pretrained`` (its ``config.json`` names the inflation)."""
    directory = Path(directory)
    meta_path = directory / INFLATION_NAME
    if not meta_path.exists():
        config = directory / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("inflation") is not None:
            return InflatedUNet.from_pretrained(directory, torch_dtype=torch_dtype)
        raise FileNotFoundError(f"{directory} has no {INFLATION_NAME} nor an inflated config.json: not an inflated-UNet folder")
    meta = json.loads(meta_path.read_text())
    delta = load_file(str(directory / WEIGHTS_NAME))
    unet = InflatedUNet.from_pretrained(
        base or meta["base"], subfolder=meta.get("subfolder"), revision=meta.get("revision"), torch_dtype=torch_dtype
    )
    conv_in = delta.get("conv_in.weight")
    if conv_in is not None and conv_in.shape[1] > unet.conv_in.in_channels:
        expand_conv_in(unet, conv_in.shape[1] - unet.conv_in.in_channels)
    unet.inflate(InflationConfig(**meta["inflation"]))
    missing, unexpected = unet.load_state_dict(delta, strict=False)
    if unexpected:
        raise ValueError(f"{directory / WEIGHTS_NAME} has weights the model lacks: {unexpected[:5]}")
    if torch_dtype is not None:
        unet.to(torch_dtype)
    return unet
