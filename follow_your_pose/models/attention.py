"""Cross-frame and temporal attention for the inflated (stage-2) UNet.

Frames are folded into the batch everywhere (``(B*F, tokens, C)``, frame index fastest) and the
frame count travels in ``cross_attention_kwargs["num_frames"]``, which diffusers hands to every
transformer block and attention processor. Pieces:

- :class:`CrossFrameAttnProcessor` for ``attn1``: queries from frame ``i``, keys and values from
  frame 0 and frame ``i-1`` concatenated along tokens (frame 0 attends to itself, its keys doubled,
  which softmax makes identical to plain self-attention).
- :class:`FrameAttnProcessor` for ``attn2`` (text cross-attention): plain SDPA that accepts the
  ``num_frames`` keyword so the shared kwargs reach ``attn1`` without warnings.
- :class:`TemporalAttention`: pre-LayerNorm self-attention over frames at each spatial position,
  residual, output projection zero-initialised; optional sinusoidal frame positions (off by default,
  as in the reference code).
- :class:`TemporalConv`: pre-LayerNorm 1D conv residual over frames (kernel 3), last conv zero-init
  (our design); :class:`LowRankTemporalConv`: the release's ``x + up(down(x))``, two bias-free kernel-3
  convs through rank ``r``, no norm, no activation, ``up`` zero-initialised.
- :class:`InflatedTransformerBlock`: ``BasicTransformerBlock`` whose ``forward`` runs the stock block
  (cross-frame self-attention, text cross-attention, FFN) then the temporal attention and conv. It
  keeps the stock parameter names, so SD checkpoints and LoRAs load unchanged.

All attention runs through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn


def _sdpa(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """Multi-head SDPA of ``(N, Lq, C)`` queries on ``(N, Lk, C)`` keys/values, then the output projection."""
    n = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (x.view(n, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


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
    return out / attn.rescale_output_factor


class FrameAttnProcessor:
    """Plain SDPA attention (self or cross) that accepts, and ignores, ``num_frames``."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
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
    """Self-attention whose keys/values for frame ``i`` are those of frame 0 and frame ``i-1``."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or num_frames == 1:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, num_frames)
        if attention_mask is not None:
            raise ValueError("cross-frame self-attention does not take an attention mask")
        residual = hidden_states
        hidden_states, shape = _prepare(attn, hidden_states, temb)
        bf, tokens, _ = hidden_states.shape
        if bf % num_frames:
            raise ValueError(f"batch {bf} is not a multiple of num_frames={num_frames}")
        first = torch.zeros(num_frames, dtype=torch.long, device=hidden_states.device)
        previous = (torch.arange(num_frames, device=hidden_states.device) - 1).clamp(min=0)

        def gather(x: torch.Tensor) -> torch.Tensor:
            x = x.view(bf // num_frames, num_frames, tokens, -1)
            return torch.cat([x[:, first], x[:, previous]], dim=2).flatten(0, 1)

        out = _sdpa(attn, attn.to_q(hidden_states), gather(attn.to_k(hidden_states)), gather(attn.to_v(hidden_states)))
        return _finish(attn, out, residual, shape)


def _to_time_major(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*F, N, C)`` to ``(B*N, F, C)``."""
    bf, n, c = x.shape
    return x.view(bf // num_frames, num_frames, n, c).transpose(1, 2).reshape(-1, num_frames, c)


def _from_time_major(x: torch.Tensor, num_frames: int, tokens: int) -> torch.Tensor:
    """``(B*N, F, C)`` back to ``(B*F, N, C)``."""
    bn, f, c = x.shape
    return x.view(bn // tokens, tokens, f, c).transpose(1, 2).reshape(-1, tokens, c)


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
        self.attn.set_processor(FrameAttnProcessor())
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        tokens = hidden_states.shape[1]
        x = _to_time_major(hidden_states, num_frames)
        y = self.norm(x)
        if self.positional_encoding:
            y = y + frame_positions(num_frames, y.shape[-1], y.device, y.dtype)
        x = x + self.attn(y)
        return _from_time_major(x, num_frames, tokens)


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
        tokens = hidden_states.shape[1]
        x = _to_time_major(hidden_states, num_frames)
        y = self.norm(x).transpose(1, 2)
        y = self.conv2(self.act(self.conv1(y))).transpose(1, 2)
        return _from_time_major(x + y, num_frames, tokens)


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
        tokens = hidden_states.shape[1]
        x = _to_time_major(hidden_states, num_frames)
        y = self.up(self.down(x.transpose(1, 2))).transpose(1, 2)
        return _from_time_major(x + y, num_frames, tokens)


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
