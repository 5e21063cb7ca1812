"""Tiny random Stable-Diffusion-1.x-shaped model folders, for tests and benchmarks.

:func:`save_tiny_sd` writes a folder laid out like the ``CompVis/stable-diffusion-v1-4``
hub repository::

    DIR/model_index.json
    DIR/unet/          UNet2DConditionModel: CrossAttnDownBlock2D x3 + DownBlock2D, 2 layers per block
    DIR/vae/           AutoencoderKL, 4 levels (latent scale factor 8), scaling_factor 0.18215
    DIR/text_encoder/  CLIPTextModel (tiny; the real 49408-token vocabulary size, 77 positions)
    DIR/tokenizer/     CLIPTokenizer built from the real CLIP BPE vocabulary shipped in open-clip-torch
    DIR/scheduler/     DDIMScheduler with SD 1.4's noise schedule

so the code that loads ``"CompVis/stable-diffusion-v1-4"`` for a user with the network loads
this folder unchanged (``UNet2DConditionModel.from_pretrained(DIR, subfolder="unet")`` and
friends, or :func:`follow_your_pose.models.base.load_base`). Weights are random (seeded); nothing is
downloaded. A 64x64 image gives 8x8 latents and down-block resolutions 8, 4, 2, 1.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

# SD 1.4's noise schedule (its scheduler/scheduler_config.json), as DDIM settings.
SD14_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
SD14_LATENT_SCALE = 0.18215
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77


@dataclass(frozen=True, kw_only=True)
class TinySDConfig:
    """Sizes of a tiny random SD-1.x-shaped model (SD 1.4 itself: 320/640/1280/1280, 768, 8 heads)."""

    unet_channels: tuple[int, ...] = (32, 64, 64, 64)
    """UNet block_out_channels, one per down block (CrossAttnDownBlock2D for all but the last)."""
    layers_per_block: int = 2
    """Resnet(+transformer) layers per down block; SD uses 2 and the pose encoder injects after the 2nd."""
    attention_heads: int = 2
    """Attention heads per transformer (SD 1.x stores this as ``attention_head_dim``)."""
    cross_attention_dim: int = 32
    """Text embedding width (768 in SD 1.x); equals the text encoder hidden size."""
    vae_channels: tuple[int, ...] = (32, 32, 32, 32)
    """VAE block_out_channels; the latent scale factor is 2 ** (len - 1): 8 as in SD with 4 entries, 2 with 2
    (the toy table's 32x32 images keep 16x16 latents, enough for a figure's limbs)."""
    text_layers: int = 2
    """Transformer layers of the CLIP text encoder."""
    norm_num_groups: int = 32
    """Group-norm groups of UNet and VAE (must divide every channel count)."""
    sample_size: int = 64
    """Default image size in pixels written in the configs (latent size = sample_size / VAE factor)."""
    seed: int = 0
    """Seed of the random weights."""
    vae_log_variance: float | None = None
    """Fix the VAE posterior log-variance to this value (e.g. -12: std e^-6, a near-deterministic encoder like SD's);
    None: the random VAE's own (posterior std ~1, so its latents are mostly noise)."""

    def __post_init__(self) -> None:
        if len(self.unet_channels) != 4:
            raise ValueError("unet_channels must have 4 entries like SD 1.x (3 cross-attention down blocks + 1 plain)")
        if not 1 <= len(self.vae_channels) <= 4:
            raise ValueError("vae_channels must have 1 to 4 entries (latent scale factor 1 to 8; SD has 4, factor 8)")
        for channels in (*self.unet_channels, *self.vae_channels):
            if channels % self.norm_num_groups:
                raise ValueError(f"channel count {channels} is not divisible by norm_num_groups={self.norm_num_groups}")
        if self.layers_per_block < 1 or self.text_layers < 1 or self.attention_heads < 1:
            raise ValueError("layers_per_block, text_layers and attention_heads must be positive")
        if self.cross_attention_dim % self.attention_heads:
            raise ValueError("cross_attention_dim must be divisible by attention_heads")
        if self.sample_size % (self.vae_factor * 8):
            raise ValueError(f"sample_size must be a multiple of {self.vae_factor * 8} (VAE factor {self.vae_factor} x 8 UNet downsampling)")

    @property
    def vae_factor(self) -> int:
        """Pixels per latent along each side."""
        return vae_factor(self.vae_channels)


def vae_factor(vae_channels: tuple[int, ...]) -> int:
    """Pixels per latent along each side of a VAE with these block_out_channels (diffusers halves per level but the last)."""
    return 2 ** (len(vae_channels) - 1)


def clip_bpe_vocabulary() -> tuple[dict[str, int], list[str]]:
    """The real CLIP BPE ``(vocab, merges)`` rebuilt from open-clip-torch's ``bpe_simple_vocab_16e6.txt.gz``.

    Same construction as OpenAI CLIP: 256 byte symbols, the same with ``</w>``, 48894 merges,
    then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(tokens)} tokens, expected {CLIP_VOCAB_SIZE}")
    return {token: index for index, token in enumerate(tokens)}, merges


def build_clip_tokenizer():
    """A transformers ``CLIPTokenizer`` with SD 1.4's settings and the real CLIP vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocabulary()
    pairs = [tuple(merge.split()) for merge in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=CLIP_MAX_LENGTH)


def build_tiny_sd(config: TinySDConfig = TinySDConfig()) -> dict:
    """Random tiny SD-1.x components: ``unet, vae, text_encoder, tokenizer, scheduler``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(config.seed)
    unet = UNet2DConditionModel(
        sample_size=config.sample_size // config.vae_factor,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=config.unet_channels,
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_heads,
        cross_attention_dim=config.cross_attention_dim,
        norm_num_groups=config.norm_num_groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels),
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
        scaling_factor=SD14_LATENT_SCALE,
    )
    if config.vae_log_variance is not None:
        fix_vae_log_variance(vae, config.vae_log_variance)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=config.cross_attention_dim,
            intermediate_size=config.cross_attention_dim * 4,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.attention_heads,
            max_position_embeddings=CLIP_MAX_LENGTH,
            projection_dim=config.cross_attention_dim,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        )
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": build_clip_tokenizer(),
        "scheduler": DDIMScheduler(**SD14_SCHEDULER),
    }


def fix_vae_log_variance(vae, log_variance: float) -> None:
    """Make ``vae``'s posterior log-variance the constant ``log_variance`` (the second half of ``quant_conv``'s outputs)."""
    import torch

    latent = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[latent:] = 0.0
        vae.quant_conv.bias[latent:] = float(log_variance)


def calibrate_latent_scale(vae, pixels) -> float:
    """Set ``vae``'s ``scaling_factor`` to 1 / std of the posterior means of ``pixels`` ``(N, 3, H, W)`` in [-1, 1], so
    scaled latents have unit variance (what SD's 0.18215 does for its VAE); returns the factor."""
    import torch

    with torch.no_grad():
        means = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.float()
    std = means.std().item()
    if not std > 0:
        raise ValueError("cannot calibrate the latent scale: the latents of these images do not vary")
    vae.register_to_config(scaling_factor=1.0 / std)
    return 1.0 / std


def save_tiny_sd(path: str | Path, config: TinySDConfig = TinySDConfig()) -> Path:
    """Write a tiny random SD-1.x model folder at ``path`` (layout of the SD 1.4 hub repo) and return it."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    components = build_tiny_sd(config)
    pipeline = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    (path / "tiny_config.json").write_text(json.dumps({**config.__dict__, "kind": "tiny-random-sd1"}, indent=1))
    return path
