"""The inflated UNet on a tiny random SD-1.x UNet saved to disk and loaded back."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file

from follow_your_pose.models import ControlEncoder, fold_frames, control_unet_inputs, unfold_frames
from follow_your_pose.models.attention import (
    CrossFrameAttnProcessor,
    LowRankTemporalConv,
    TemporalAttention,
    TemporalConv,
    frame_positions,
)
from follow_your_pose.models.clip_norm import ClipGroupNorm
from follow_your_pose.models.inflated_unet import (
    RELEASE_STAGE2_TRAINABLE,
    STAGE2_TRAINABLE,
    WEIGHTS_NAME,
    InflatedUNet,
    InflationConfig,
    freeze_for_stage2,
    load_inflated,
    parameter_counts,
    save_inflated,
)
from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

TINY = TinySDConfig()
FRAMES = 3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), TINY)


@pytest.fixture(scope="module")
def unet2d(tiny_dir):
    return UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet").eval()


def inflated(tiny_dir, **settings) -> InflatedUNet:
    return InflatedUNet.from_pretrained(tiny_dir, subfolder="unet").eval().inflate(InflationConfig(**settings))


@pytest.fixture()
def clip():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, FRAMES, 8, 8, generator=generator)
    text = torch.randn(1, 77, TINY.cross_attention_dim, generator=generator)
    return latents, text


def randomise_temporal(unet: torch.nn.Module, scale: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".temporal_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def per_frame_2d(unet2d, latents, text, **kwargs):
    """The 2D UNet on every frame: the frames as a batch (exact) and one at a time (float tolerance)."""
    with torch.no_grad():
        batch = unet2d(fold_frames(latents), 10, text.repeat(latents.shape[2], 1, 1), **kwargs).sample
        single = torch.cat([unet2d(latents[:, :, f], 10, text).sample for f in range(latents.shape[2])])
    return batch, single


def test_zero_init_temporal_layers_equal_the_2d_unet_frame_by_frame(tiny_dir, unet2d, clip):
    latents, text = clip
    unet = inflated(tiny_dir, cross_frame_attention=False)
    with torch.no_grad():
        out = unet(latents, 10, text).sample
    assert out.shape == latents.shape
    batch, single = per_frame_2d(unet2d, latents, text)
    torch.testing.assert_close(fold_frames(out), batch, rtol=0, atol=1e-6)
    torch.testing.assert_close(fold_frames(out), single, rtol=0, atol=2e-3)
    # with cross-frame attention, frame 0 only attends to itself: still the 2D UNet
    unet.set_frame_processors(cross_frame=True)
    with torch.no_grad():
        out = unet(latents, 10, text).sample
    torch.testing.assert_close(out[:, :, 0], batch[:1], rtol=0, atol=1e-5)
    assert (fold_frames(out)[1:] - batch[1:]).abs().max() > 1e-4
    # trained (nonzero) temporal layers make frame 0 depend on later frames
    randomise_temporal(unet)
    changed = latents.clone()
    changed[:, :, -1] += 1.0
    with torch.no_grad():
        delta = unet(changed, 10, text).sample - unet(latents, 10, text).sample
    assert delta[:, :, 0].abs().max() > 1e-4


def test_cross_frame_attention_keys_come_from_first_and_previous_frame():
    """Both ways of running it (frames 0 and 1 on frame 0's keys twice in one call, or once in a second call) compute
    the definition, for each clip of a batch of two."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    frames = torch.randn(2, 4, 5, 16)  # 2 clips of 4 frames of 5 tokens
    heads = lambda x: x.view(1, -1, 2, 8).transpose(1, 2)  # noqa: E731
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        plain_same = attn(frames[0, :1].repeat(4, 1, 1))
        expected = []  # keys for frame i: frame 0 and frame i-1, concatenated along tokens
        for clip, i in itertools.product(range(2), range(4)):
            context = torch.cat([frames[clip, 0], frames[clip, max(i - 1, 0)]])[None]
            q, k, v = attn.to_q(frames[clip, i : i + 1]), attn.to_k(context), attn.to_v(context)
            o = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v))
            expected.append(attn.to_out[0](o.transpose(1, 2).reshape(1, -1, 16)))
        for first_frames_once in (False, True):
            attn.set_processor(CrossFrameAttnProcessor(first_frames_once))
            cross = attn(frames.flatten(0, 1), num_frames=4)
            cross_same = attn(frames[0, :1].repeat(4, 1, 1), num_frames=4)
            torch.testing.assert_close(cross, torch.cat(expected), rtol=1e-5, atol=1e-6)
            # identical frames: cross-frame attention is plain self-attention
            torch.testing.assert_close(cross_same, plain_same, rtol=1e-5, atol=1e-6)


def test_temporal_layers_compute_their_time_major_definition():
    """The temporal layers work on the folded ``(B*F, N, C)`` layout through views; they compute what they are defined
    as on the time-major ``(B*N, F, C)`` layout: attention over frames and Conv1d over frames, with random weights."""
    torch.manual_seed(0)
    for frames, tokens, positions in ((4, 5, False), (3, 2, True), (40, 2, False)):  # 40: past the explicit-softmax cut
        x = torch.randn(2 * frames, tokens, 16)
        time_major = x.view(2, frames, tokens, 16).transpose(1, 2).reshape(-1, frames, 16)
        back = lambda y: y.view(2, tokens, frames, 16).transpose(1, 2).reshape(x.shape)  # noqa: E731
        attention, conv, low = TemporalAttention(16, 2, positions), TemporalConv(16), LowRankTemporalConv(16, 6)
        layers = {"temporal_a": attention, "temporal_c": conv, "temporal_l": low}
        randomise_temporal(torch.nn.ModuleDict({"block": torch.nn.ModuleDict(layers)}), 0.5)
        with torch.no_grad():
            y = attention.norm(time_major)
            if positions:
                y = y + frame_positions(frames, 16, y.device, y.dtype)
            heads = lambda t: t.view(t.shape[0], frames, 2, 8).transpose(1, 2)  # noqa: E731
            o = F.scaled_dot_product_attention(*(heads(p(y)) for p in (attention.attn.to_q, attention.attn.to_k, attention.attn.to_v)))
            expected = time_major + attention.attn.to_out[0](o.transpose(1, 2).reshape(-1, frames, 16))
            torch.testing.assert_close(attention(x, frames), back(expected), rtol=1e-5, atol=1e-5)
            y = conv.conv2(conv.act(conv.conv1(conv.norm(time_major).transpose(1, 2)))).transpose(1, 2)
            torch.testing.assert_close(conv(x, frames), back(time_major + y), rtol=1e-5, atol=1e-5)
            y = low.up(low.down(time_major.transpose(1, 2))).transpose(1, 2)
            torch.testing.assert_close(low(x, frames), back(time_major + y), rtol=1e-5, atol=1e-5)
    attention.attn.set_processor(AttnProcessor2_0())  # it would attend over tokens of each frame: refused
    with pytest.raises(TypeError, match="TemporalAttnProcessor"):
        attention(x, 40)


def test_identical_frames_give_the_2d_unet_output(tiny_dir, unet2d, clip):
    latents, text = clip
    still = latents[:, :, :1].repeat(1, 1, FRAMES, 1, 1)
    unet = inflated(tiny_dir)
    with torch.no_grad():
        out = unet(still, 10, text).sample
    batch, _ = per_frame_2d(unet2d, still, text)
    torch.testing.assert_close(fold_frames(out), batch, rtol=0, atol=1e-5)


def test_cross_frame_from_a_level_leaves_the_finer_levels_per_frame(tiny_dir, clip, tmp_path):
    latents, text = clip
    depth = len(TINY.unet_channels) - 1
    outputs = {}
    for level in (0, 1, depth + 1):
        unet = inflated(tiny_dir, cross_frame_from_level=level)
        cross = {name for name, p in unet.attn_processors.items() if isinstance(p, CrossFrameAttnProcessor)}
        full_resolution = {n for n in unet.attn_processors if n.startswith(("down_blocks.0.", f"up_blocks.{depth}.")) and ".attn1." in n}
        assert full_resolution and (full_resolution <= cross) == (level == 0) and not (full_resolution & cross and level > 0)
        assert bool(cross) == (level <= depth) and all(unet.attn_processors[n].first_frames_once for n in cross)  # no clip norm
        with torch.no_grad():
            outputs[level] = unet(latents, 10, text).sample
    # past the deepest level nothing is cross-frame: the plain per-frame design, exactly
    with torch.no_grad():
        plain = inflated(tiny_dir, cross_frame_attention=False)(latents, 10, text).sample
    torch.testing.assert_close(outputs[depth + 1], plain, rtol=0, atol=0)
    # from level 1: neither the full design nor the plain one; frame 0 is the same in all (it attends to itself)
    assert (outputs[1] - outputs[0]).abs().max() > 1e-4 and (outputs[1] - plain).abs().max() > 1e-4
    torch.testing.assert_close(outputs[1][:, :, 0], outputs[0][:, :, 0], rtol=0, atol=1e-5)
    # the level rides in the saved config and comes back with the model
    unet.save_pretrained(tmp_path / "level")
    assert InflatedUNet.from_pretrained(tmp_path / "level").inflation.cross_frame_from_level == depth + 1
    with pytest.raises(ValueError, match="cross_frame_from_level"):
        InflationConfig(cross_frame_from_level=-1)


def test_stage2_backward_reaches_only_the_named_parameters(tiny_dir, clip):
    latents, text = clip
    unet = inflated(tiny_dir)
    encoder = ControlEncoder(channels=TINY.unet_channels)
    names = freeze_for_stage2(unet, encoder)
    assert names and all(any(f".{p}." in f".{n}." for p in STAGE2_TRAINABLE) for n in names)
    assert {p for p in STAGE2_TRAINABLE if any(f".{p}." in f".{n}." for n in names)} == set(STAGE2_TRAINABLE)
    counts = parameter_counts(unet, encoder)
    assert counts["trainable"] == sum(p.numel() for n, p in unet.named_parameters() if n in names)
    assert 0 < counts["trainable"] < counts["total"]
    unet.train()
    randomise_temporal(unet)  # so gradients flow past the zero-initialised output layers
    loss = unet(latents, 10, text).sample.square().mean()
    loss.backward()
    with_grad = {n for n, p in unet.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == set(names)
    assert all(p.grad is None for p in encoder.parameters())


def test_gradient_checkpointing_keeps_the_pose_residuals(tiny_dir, clip):
    latents, text = clip
    unet = inflated(tiny_dir).train()
    randomise_temporal(unet)
    encoder = ControlEncoder(channels=TINY.unet_channels)
    with torch.no_grad():
        for parameter in encoder.out_convs.parameters():
            parameter.normal_(0, 0.1)
    pose = torch.rand(1, 3, FRAMES, 64, 64, generator=torch.Generator().manual_seed(2))
    freeze_for_stage2(unet)
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        sample, kwargs = control_unet_inputs(latents, encoder(pose))
        out = unet(sample, 10, text, **kwargs).sample
        out.square().mean().backward()
        grad = unet.down_blocks[0].attentions[0].transformer_blocks[0].temporal_conv.conv2.weight.grad.clone()
        unet.zero_grad()
        results.append((out.detach(), grad))
    no_pose = unet(latents, 10, text).sample.detach()
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)
    assert (results[1][0] - no_pose).abs().max() > 1e-3


def test_save_and_load_round_trips(tiny_dir, clip, tmp_path):
    latents, text = clip
    unet = inflated(tiny_dir, positional_encoding=True)
    randomise_temporal(unet)
    with torch.no_grad():
        for block in (unet.down_blocks[0].attentions[0].transformer_blocks[0], unet.up_blocks[1].attentions[0].transformer_blocks[0]):
            block.attn1.to_q.weight.mul_(1.5)
            block.attn2.to_q.weight.mul_(0.5)
        expected = unet(latents, 10, text).sample
    # small file: only the stage-2 weights (and conv_in) beside the base id
    save_inflated(unet, tmp_path / "delta", base=str(tiny_dir))
    weights = load_file(str(tmp_path / "delta" / WEIGHTS_NAME))
    assert all(".temporal_" in k or ".to_q." in k or k.startswith("conv_in.") for k in weights)
    assert sum(t.numel() for t in weights.values()) < 0.4 * sum(p.numel() for p in unet.parameters())
    assert json.loads((tmp_path / "delta" / "inflation.json").read_text())["inflation"]["positional_encoding"] is True
    restored = load_inflated(tmp_path / "delta").eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(latents, 10, text).sample, expected, rtol=0, atol=0)
    # a full copy through save_pretrained / from_pretrained comes back inflated
    unet.save_pretrained(tmp_path / "full")
    full = InflatedUNet.from_pretrained(tmp_path / "full").eval()
    assert full.inflation == unet.inflation
    with torch.no_grad():
        torch.testing.assert_close(full(latents, 10, text).sample, expected, rtol=0, atol=0)


def test_refuses_bad_use(tiny_dir, tmp_path):
    unet = inflated(tiny_dir)
    with pytest.raises(RuntimeError, match="already inflated"):
        unet.inflate()
    with pytest.raises(ValueError, match="inflate it"):
        freeze_for_stage2(UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet"))
    with pytest.raises(FileNotFoundError, match="inflation.json"):
        load_inflated(tmp_path)
    with pytest.raises(ValueError, match="temporal_conv_kind"):
        InflationConfig(temporal_conv_kind="wide")
    with pytest.raises(ValueError, match="odd"):
        InflationConfig(temporal_kernel_size=2)


# --- the release's design: clip-wide GroupNorm and the low-rank temporal conv --------------------------------


def test_clip_group_norm_equals_the_2d_unet_on_one_frame_and_on_identical_frames(tiny_dir, unet2d, clip):
    """The clip-wide counterpart of the zero-init property: statistics over F identical frames (or one frame) are the
    frame's own, so an untrained release-design UNet is SD frame by frame on a still clip and on single images."""
    latents, text = clip
    unet = inflated(tiny_dir, **asdict(InflationConfig.release()))
    assert sum(isinstance(m, ClipGroupNorm) for m in unet.modules()) == 2 * sum(1 for _ in resnets(unet)) + 1
    assert {p.first_frames_once for p in unet.attn_processors.values() if isinstance(p, CrossFrameAttnProcessor)} == {False}
    still = latents[:, :, :1].repeat(1, 1, FRAMES, 1, 1)
    with torch.no_grad():
        out_still = unet(still, 10, text).sample
        out_single = unet(latents[:, :, :1], 10, text).sample
    batch, _ = per_frame_2d(unet2d, still, text)
    torch.testing.assert_close(fold_frames(out_still), batch, rtol=0, atol=1e-4)  # float rounding of the statistics
    torch.testing.assert_close(fold_frames(out_single), batch[:1], rtol=0, atol=1e-5)


def test_clip_group_norm_normalises_the_frames_of_each_clip_together(tiny_dir, clip):
    """Frames of a clip share their statistics: the same frame normalised with other frames gives another output;
    two clips in one batch are normalised apart (each as it would be alone)."""
    latents, text = clip
    unet = inflated(tiny_dir, clip_group_norm=True, cross_frame_attention=False, temporal_attention=False, temporal_conv=False)
    other = torch.randn(latents.shape, generator=torch.Generator().manual_seed(9))
    mixed = torch.cat([latents[:, :, :1], other[:, :, 1:]], dim=2)
    with torch.no_grad():
        alone = unet(latents, 10, text).sample
        with_others = unet(mixed, 10, text).sample
        both = unet(torch.cat([latents, other]), 10, text.repeat(2, 1, 1)).sample
        other_alone = unet(other, 10, text).sample
    assert (alone[:, :, 0] - with_others[:, :, 0]).abs().max() > 1e-3  # same frame, other clip-mates
    torch.testing.assert_close(both, torch.cat([alone, other_alone]), rtol=0, atol=1e-5)
    norm = next(m for m in unet.modules() if isinstance(m, ClipGroupNorm))
    x = torch.randn(2 * FRAMES, norm.num_channels, 4, 4)
    norm.frames.value = FRAMES
    clip_wise = torch.nn.functional.group_norm(
        unfold_frames(x, FRAMES), norm.num_groups, norm.weight, norm.bias, norm.eps
    )  # the release: GroupNorm on the 5-D (B, C, F, H, W) tensor
    torch.testing.assert_close(norm(x), fold_frames(clip_wise), rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_recomputes_with_the_clip_statistics(tiny_dir, clip):
    latents, text = clip
    unet = inflated(tiny_dir, **asdict(InflationConfig.release())).train()
    randomise_temporal(unet)
    freeze_for_stage2(unet, trainable_set=RELEASE_STAGE2_TRAINABLE)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet(latents, 10, text).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None})
        unet.zero_grad()
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_low_rank_temporal_conv_is_the_release_shape_and_starts_as_identity(tiny_dir, clip):
    latents, text = clip
    unet = inflated(tiny_dir, temporal_conv_kind="low_rank", temporal_conv_rank=40)
    widths = {}
    for name, parameter in unet.named_parameters():
        if name.endswith("temporal_conv.down.weight"):
            widths[parameter.shape[1]] = parameter.shape[0]
            assert parameter.shape[2] == 3
        if ".temporal_conv." in name:
            assert name.endswith(("down.weight", "up.weight"))  # no biases, no norm
    assert widths == {c: (40 if c >= 40 else c // 2) for c in set(TINY.unet_channels)}
    assert all(p.abs().sum() == 0 for n, p in unet.named_parameters() if n.endswith("temporal_conv.up.weight"))
    plain = inflated(tiny_dir, temporal_conv=False)
    with torch.no_grad():
        torch.testing.assert_close(unet(latents, 10, text).sample, plain(latents, 10, text).sample, rtol=0, atol=0)


def test_the_release_trainable_set_leaves_the_temporal_layernorm_frozen(tiny_dir):
    unet = inflated(tiny_dir, **asdict(InflationConfig.release()))
    names = freeze_for_stage2(unet, trainable_set=RELEASE_STAGE2_TRAINABLE)
    assert names and not any(".temporal_attention.norm." in n for n in names)
    assert any(".temporal_attention.attn." in n for n in names) and any(".temporal_conv." in n for n in names)
    ours = freeze_for_stage2(unet)
    assert set(ours) - set(names) == {n for n in ours if ".temporal_attention.norm." in n}


def test_a_full_release_design_copy_round_trips(tiny_dir, clip, tmp_path):
    latents, text = clip
    unet = inflated(tiny_dir, **asdict(InflationConfig.release()))
    randomise_temporal(unet)
    with torch.no_grad():
        expected = unet(latents, 10, text).sample
    unet.save_pretrained(tmp_path / "full")
    for restored in (InflatedUNet.from_pretrained(tmp_path / "full"), load_inflated(tmp_path / "full")):
        assert restored.inflation == InflationConfig.release()
        with torch.no_grad():
            torch.testing.assert_close(restored.eval()(latents, 10, text).sample, expected, rtol=0, atol=0)


def resnets(unet):
    from diffusers.models.resnet import ResnetBlock2D

    return (m for m in unet.modules() if isinstance(m, ResnetBlock2D))


def test_other_attention_processors_never_silently_replace_the_frame_ones(tiny_dir):
    """xformers, attention slicing, a stock processor or diffusers' default would undo cross-frame and temporal
    attention: the inflated UNet keeps its processors and refuses (or, for the default, restores its own)."""
    unet = inflated(tiny_dir)
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    assert CrossFrameAttnProcessor in before.values()
    for attempt in (
        lambda: unet.set_attn_processor(AttnProcessor2_0()),
        lambda: unet.set_attention_slice(1),
        lambda: unet.set_use_memory_efficient_attention_xformers(False),  # its stock processors, without xformers
    ):
        with pytest.raises(ValueError, match="cross-frame and temporal attention"):
            attempt()
        assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    unet.set_default_attn_processor()
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    plain = UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet")
    plain.set_attention_slice(1)  # a 2-D UNet is left to diffusers
    assert any("Sliced" in type(p).__name__ for p in plain.attn_processors.values())
