"""Cross-frame and temporal attention for the inflated (stage-2) UNet.

Frames are folded into the batch everywhere (``(B*F, tokens, C)``, frame index fastest) and the
frame count travels in ``cross_attention_kwargs["num_frames"]``, which diffusers hands to every
transformer block and attention processor. Pieces:

- :class:`CrossFrameAttnProcessor` for ``attn1``: queries from frame ``i``, keys and values from
  frame 0 and frame ``i-1`` concatenated along tokens (frames 0 and 1 attend to frame 0 alone: plain
  self-attention for frame 0).
- :class:`FrameAttnProcessor` for ``attn2`` (text cross-attention): plain SDPA that accepts the
  ``num_frames`` keyword so the shared kwargs reach ``attn1`` without warnings.
- :class:`TemporalAttention`: pre-LayerNorm self-attention over frames at each spatial position,
  residual, output projection zero-initialised; optional sinusoidal frame positions (off by default,
  as in the reference code). Its :class:`TemporalAttnProcessor` works on the folded layout directly
  (strided views, no transposes to a time-major layout).
- :class:`TemporalConv`: pre-LayerNorm 1D conv residual over frames (kernel 3), last conv zero-init
  (our design); :class:`LowRankTemporalConv`: the release's ``x + up(down(x))``, two bias-free kernel-3
  convs through rank ``r``, no norm, no activation, ``up`` zero-initialised. Both keep ``nn.Conv1d``
  weights and run them as ``k x 1`` 2D convs on a channels-last view of the folded layout (no copies).
- :class:`InflatedTransformerBlock`: ``BasicTransformerBlock`` whose ``forward`` runs the stock block
  (cross-frame self-attention, text cross-attention, FFN) then the temporal attention and conv. It
  keeps the stock parameter names, so SD checkpoints and LoRAs load unchanged.

Spatial and text attention run through ``torch.nn.functional.scaled_dot_product_attention``; temporal attention
over up to :data:`MANUAL_ATTENTION_MAX_FRAMES` frames is an explicit ``softmax(q k^T) v`` (faster for its many tiny
sequences), SDPA beyond. Where the time of a training step goes: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn


def _heads(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """Multi-head SDPA of ``(N, Lq, C)`` queries on ``(N, Lk, C)`` keys/values, before the output projection."""
    n = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (x.reshape(n, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(query.dtype)


def _sdpa(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """:func:`_heads`, then the output projection."""
    return attn.to_out[1](attn.to_out[0](_heads(attn, query, key, value, mask)))


def _prepare(attn: Attention, hidden_states: torch.Tensor, temb):
    """Shared preamble of diffusers processors: spatial norm, 4D to tokens, group norm."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = None
    if hidden_states.ndim == 4:
        shape = hidden_states.shape
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states, shape


def _finish(attn: Attention, out: torch.Tensor, residual: torch.Tensor, shape) -> torch.Tensor:
    if shape is not None:
        out = out.transpose(-1, -2).reshape(shape)
    if attn.residual_connection:
        out = out + residual
    if attn.rescale_output_factor != 1.0:  # 1 in every SD block: skip a full-size division by one
        out = out / attn.rescale_output_factor
    return out


class FrameAttnProcessor:
    """Plain SDPA attention (self or cross) that accepts, and ignores, ``num_frames``; the base of the frame-aware
    processors, which override :meth:`attend`."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """diffusers' processor call; every processor here implements :meth:`attend`."""
        return self.attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames)

    def attend(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None, temb: torch.Tensor | None, num_frames: int,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, shape = _prepare(attn, hidden_states, temb)
        n = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], n)
            mask = mask.view(n, attn.heads, -1, mask.shape[-1])
        out = _sdpa(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), mask)
        return _finish(attn, out, residual, shape)


class CrossFrameAttnProcessor(FrameAttnProcessor):
    """Self-attention whose keys/values for frame ``i`` are those of frame 0 and frame ``i-1``.

    Frames 0 and 1 see frame 0's keys twice, which softmax makes identical to seeing them once. By default every
    frame still attends to ``2 x tokens`` keys in one batched call: a still clip's frames then stay bit-identical,
    which the clip-wide GroupNorm of the release's design needs (its low-resolution groups amplify any
    frame-to-frame rounding difference). ``first_frames_once=True`` gives frames 0 and 1 frame 0's keys once, in a
    second call: the same result up to float rounding, ``1/F`` less attention work.
    """

    def __init__(self, first_frames_once: bool = False) -> None:
        self.first_frames_once = first_frames_once

    def attend(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None, temb: torch.Tensor | None, num_frames: int,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or num_frames == 1:
            return super().attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames)
        if attention_mask is not None:
            raise ValueError("cross-frame self-attention does not take an attention mask")
        residual = hidden_states
        hidden_states, shape = _prepare(attn, hidden_states, temb)
        bf, tokens, _ = hidden_states.shape
        if bf % num_frames:
            raise ValueError(f"batch {bf} is not a multiple of num_frames={num_frames}")
        clips = bf // num_frames
        query, key, value = (p(hidden_states).view(clips, num_frames, tokens, -1) for p in (attn.to_q, attn.to_k, attn.to_v))
        later = 2 if self.first_frames_once and num_frames > 2 else 0  # frames from here on see two frames' keys

        def first_and_previous(x: torch.Tensor) -> torch.Tensor:  # slices and one concatenation, no index gather
            first = x[:, :1].expand(-1, num_frames - later, -1, -1)
            previous = x[:, later - 1 : -1] if later else torch.cat([x[:, :1], x[:, :-1]], dim=1)
            return torch.cat([first, previous], dim=2).flatten(0, 1)

        out = _heads(attn, query[:, later:].flatten(0, 1), first_and_previous(key), first_and_previous(value))
        if later:  # frames 0 and 1, their queries as one sequence, on frame 0's keys once
            early = _heads(attn, query[:, :2].flatten(1, 2), key[:, 0], value[:, 0]).view(clips, 2, tokens, -1)
            out = torch.cat([early, out.view(clips, num_frames - 2, tokens, -1)], dim=1).flatten(0, 1)
        return _finish(attn, attn.to_out[1](attn.to_out[0](out)), residual, shape)


MANUAL_ATTENTION_MAX_FRAMES = 32
"""Temporal attention over at most this many frames runs as an explicit ``softmax(q k^T) v``: with many very short
sequences (one per spatial position) it is faster on CPU than SDPA's flash kernel and its ``F x F`` scores are small;
longer clips use SDPA, which never holds the scores."""


class TemporalAttnProcessor(FrameAttnProcessor):
    """Self-attention over the frames at each spatial position, on tokens with frames folded in the batch.

    Takes and returns ``(B*F, N, C)``: the projections run per token in that layout and the attention sees
    ``(B, N, heads, F, d)`` strided views of it, so no transpose to and from a time-major layout is needed.
    """

    def attend(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None, temb: torch.Tensor | None, num_frames: int,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("temporal attention takes (B*F, tokens, C) hidden states only, without context or mask")
        bf, tokens, _ = hidden_states.shape
        if bf % num_frames:
            raise ValueError(f"batch {bf} is not a multiple of num_frames={num_frames}")

        def frames_last(x: torch.Tensor) -> torch.Tensor:  # (B*F, N, C) -> (B, N, heads, F, d), a view
            return x.view(bf // num_frames, num_frames, tokens, attn.heads, -1).permute(0, 2, 3, 1, 4)

        query, key, value = (frames_last(p(hidden_states)) for p in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if num_frames <= MANUAL_ATTENTION_MAX_FRAMES:
            out = torch.softmax((query @ key.transpose(-1, -2)) * attn.scale, dim=-1) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale)
        out = out.permute(0, 3, 1, 2, 4).reshape(bf, tokens, -1)
        return _finish(attn, attn.to_out[1](attn.to_out[0](out)), hidden_states, None)


def _frames_channels_last(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*F, N, C)`` as ``(B, C, F, N)``: a view whose memory is channels-last, which a 2D conv reads as it is."""
    bf, n, c = x.shape
    return x.view(bf // num_frames, num_frames, n, c).permute(0, 3, 1, 2)


def _folded(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, N)`` channels-last back to ``(B*F, N, C)`` (a view when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[3], x.shape[1])


def _conv_over_frames(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` (a Conv1d over frames) applied to ``(B, C, F, N)`` as the same kernel along F: a ``k x 1`` 2D conv."""
    return F.conv2d(x, conv.weight.unsqueeze(-1), conv.bias, padding=(conv.padding[0], 0))


def frame_positions(num_frames: int, dim: int, device, dtype) -> torch.Tensor:
    """Sinusoidal encodings ``(F, dim)`` of frame indices 0..F-1."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None] * freqs[None]
    encoding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if encoding.shape[1] < dim:
        encoding = F.pad(encoding, (0, dim - encoding.shape[1]))
    return encoding.to(dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames at each spatial position (pre-LayerNorm, residual, zero-init output)."""

    def __init__(self, dim: int, heads: int, positional_encoding: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"temporal attention width {dim} is not divisible by {heads} heads")
        self.positional_encoding = positional_encoding
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True)
        self.attn.set_processor(TemporalAttnProcessor())
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        if not isinstance(self.attn.processor, TemporalAttnProcessor):
            raise TypeError(f"temporal attention needs a TemporalAttnProcessor, not {type(self.attn.processor).__name__}")
        y = self.norm(hidden_states)
        if self.positional_encoding:
            bf, tokens, channels = y.shape
            positions = frame_positions(num_frames, channels, y.device, y.dtype)[:, None]
            y = (y.view(bf // num_frames, num_frames, tokens, channels) + positions).view(bf, tokens, channels)
        return hidden_states + self.attn(y, num_frames=num_frames)


class TemporalConv(nn.Module):
    """Residual 1D convolution over frames: LayerNorm, conv, SiLU, conv (zero-initialised)."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError("the temporal conv kernel size must be odd and positive")
        self.norm = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = _frames_channels_last(self.norm(hidden_states), num_frames)
        y = _conv_over_frames(self.act(_conv_over_frames(y, self.conv1)), self.conv2)
        return hidden_states + _folded(y)


def low_rank(dim: int, rank: int) -> int:
    """The release's temporal-conv rank: ``rank``, or ``dim // 2`` when the block is narrower than ``rank``."""
    return rank if dim >= rank else max(dim // 2, 1)


class LowRankTemporalConv(nn.Module):
    """The release's residual temporal conv ``x + up(down(x))``: two bias-free Conv1d over frames through rank ``r``.

    No norm and no activation, so it is linear in ``x``; ``up`` starts at zero (the block is the identity until
    trained) and ``down`` is normal with std ``1 / r``, as the release initialises them.
    """

    def __init__(self, dim: int, rank: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError("the temporal conv kernel size must be odd and positive")
        self.down = nn.Conv1d(dim, rank, kernel_size, padding=kernel_size // 2, bias=False)
        self.up = nn.Conv1d(rank, dim, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = _conv_over_frames(_conv_over_frames(_frames_channels_last(hidden_states, num_frames), self.down), self.up)
        return hidden_states + _folded(y)


class InflatedTransformerBlock(BasicTransformerBlock):
    """The stock SD transformer block followed by temporal attention and a temporal conv.

    The temporal modules are attached by :meth:`add_temporal_layers`; without them, or while their
    zero-initialised outputs are untouched, the block is the stock block.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temporal_attention: TemporalAttention | None = None
        self.temporal_conv: TemporalConv | LowRankTemporalConv | None = None

    def add_temporal_layers(
        self, *, heads: int, attention: bool, conv: str | None, kernel_size: int, positional_encoding: bool, rank: int
    ) -> None:
        """Attach temporal attention and a temporal conv (``conv``: ``"full"``, ``"low_rank"`` or None)."""
        dim = self.dim
        reference = self.attn1.to_q.weight
        if attention:
            self.temporal_attention = TemporalAttention(dim, heads, positional_encoding).to(reference.device, reference.dtype)
        if conv == "full":
            self.temporal_conv = TemporalConv(dim, kernel_size).to(reference.device, reference.dtype)
        elif conv == "low_rank":
            self.temporal_conv = LowRankTemporalConv(dim, low_rank(dim, rank), kernel_size).to(reference.device, reference.dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        timestep: torch.LongTensor | None = None,
        cross_attention_kwargs: dict | None = None,
        class_labels: torch.LongTensor | None = None,
        added_cond_kwargs: dict | None = None,
    ) -> torch.Tensor:
        hidden_states = super().forward(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep,
            cross_attention_kwargs=cross_attention_kwargs,
            class_labels=class_labels,
            added_cond_kwargs=added_cond_kwargs,
        )
        num_frames = int((cross_attention_kwargs or {}).get("num_frames", 1))
        if self.temporal_attention is not None:
            hidden_states = self.temporal_attention(hidden_states, num_frames)
        if self.temporal_conv is not None:
            hidden_states = self.temporal_conv(hidden_states, num_frames)
        return hidden_states
