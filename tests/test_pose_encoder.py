"""The pose encoder on a tiny random SD-1.x UNet saved to disk and loaded back."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from follow_your_pose.models import ControlEncoder, expand_conv_in, control_unet_inputs
from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

TINY = TinySDConfig()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), TINY)


@pytest.fixture()
def unet(tiny_dir):
    return UNet2DConditionModel.from_pretrained(tiny_dir, subfolder="unet").eval()


@pytest.fixture()
def inputs():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, TINY.cross_attention_dim, generator=generator)
    pose = torch.rand(2, 3, 64, 64, generator=generator)
    return latents, text, pose


def tiny_encoder(**kwargs) -> ControlEncoder:
    return ControlEncoder(channels=TINY.unet_channels, **kwargs).eval()


def randomise_outputs(encoder: ControlEncoder) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in encoder.out_convs.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def run(unet, latents, text, features=None):
    sample, kwargs = control_unet_inputs(latents, features)
    with torch.no_grad():
        return unet(sample, 10, text, **kwargs).sample


def test_zero_init_equals_stock_unet_and_dropping_the_condition_restores_it(unet, inputs):
    latents, text, pose = inputs
    stock = run(unet, latents, text)
    encoder = tiny_encoder()
    with torch.no_grad():
        torch.testing.assert_close(run(unet, latents, text, encoder(pose)), stock, rtol=0, atol=1e-6)
        randomise_outputs(encoder)
        conditioned = run(unet, latents, text, encoder(pose))
        assert (conditioned - stock).abs().max() > 1e-3
        # dropping the condition: no features, or a zero conditioning scale
        torch.testing.assert_close(run(unet, latents, text, None), stock, rtol=0, atol=0)
        torch.testing.assert_close(
            run(unet, latents, text, encoder(pose, conditioning_scale=0.0)), stock, rtol=0, atol=1e-6
        )
        half = run(unet, latents, text, encoder(pose, conditioning_scale=0.5))
        assert 0 < (half - stock).abs().max() < (conditioned - stock).abs().max()


def test_every_level_lands_after_the_second_layer_and_in_the_skip(unet, inputs):
    """The paper's injection point, including the last DownBlock2D whose skip diffusers feeds in place."""
    latents, text, pose = inputs
    encoder = tiny_encoder()
    randomise_outputs(encoder)
    with torch.no_grad():
        features = encoder(pose)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        unet.down_blocks[k].attentions[1].register_forward_hook(
            lambda m, a, o, k=k: seen.__setitem__(f"layer2_{k}", o[0].clone())
        )
        for k in range(3)
    ]
    hooks.append(unet.down_blocks[3].resnets[1].register_forward_hook(lambda m, a, o: seen.__setitem__("layer2_3", o.clone())))
    skips: list[tuple] = []
    for block in unet.up_blocks:
        hooks.append(
            block.register_forward_pre_hook(lambda m, a, kw: skips.append(kw["res_hidden_states_tuple"]), with_kwargs=True)
        )
    try:
        run(unet, latents, text, features)
    finally:
        for hook in hooks:
            hook.remove()
    # up block 3 - k receives, as its last skip, the output of down block k's second layer
    last_skips = [skips[3 - k][-1] for k in range(4)]
    for k in range(4):
        torch.testing.assert_close(last_skips[k], seen[f"layer2_{k}"] + features.down_residuals[k])


def test_video_frames_fold_into_batch(inputs):
    _, _, pose = inputs
    encoder = tiny_encoder()
    randomise_outputs(encoder)
    clip = torch.stack([pose[0], pose[1], pose[0]], dim=1)[None]  # (1, 3, T=3, H, W)
    with torch.no_grad():
        folded = encoder(clip).down_residuals
        per_frame = [encoder(clip[:, :, t]).down_residuals for t in range(3)]
    for k in range(4):
        torch.testing.assert_close(folded[k], torch.cat([f[k] for f in per_frame]))


def test_fewer_injected_levels(unet, inputs):
    latents, text, pose = inputs
    encoder = tiny_encoder(injected_levels=(0,))
    assert sorted(encoder.out_convs.keys()) == ["0"] and len(encoder.body) == 1
    randomise_outputs(encoder)
    with torch.no_grad():
        features = encoder(pose)
    assert features.down_residuals[0].abs().max() > 0
    assert all(r.abs().max() == 0 for r in features.down_residuals[1:])
    assert [r.shape[-1] for r in features.down_residuals] == [8, 4, 2, 1]
    assert (run(unet, latents, text, features) - run(unet, latents, text)).abs().max() > 1e-4


def test_concat_variant_widens_conv_in_with_zero_channels(unet, inputs, tmp_path):
    latents, text, pose = inputs
    stock = run(unet, latents, text)
    encoder = tiny_encoder(injection="concat", concat_channels=4)
    with torch.no_grad():
        for parameter in encoder.out_convs.parameters():  # the pose maps are nonzero...
            parameter.normal_(0, 0.5)
        features = encoder(pose)
    assert features.concat.shape == (2, 4, 8, 8) and features.down_residuals is None
    expand_conv_in(unet, 4)
    assert unet.config.in_channels == 8
    # ...but the new input channels of conv_in start at zero, so the widened UNet is still SD
    torch.testing.assert_close(run(unet, latents, text, features), stock, rtol=0, atol=1e-6)
    with torch.no_grad():
        unet.conv_in.weight[:, 4:].normal_(0, 0.1)
    assert (run(unet, latents, text, features) - stock).abs().max() > 1e-3
    unet.save_pretrained(tmp_path / "unet")
    reloaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    torch.testing.assert_close(run(reloaded, latents, text, features), run(unet, latents, text, features))


def test_save_load_round_trip(tmp_path, inputs):
    _, _, pose = inputs
    encoder = tiny_encoder(injected_levels=(0, 1, 2))
    randomise_outputs(encoder)
    encoder.save_pretrained(tmp_path / "pose_encoder")
    assert (tmp_path / "pose_encoder" / "diffusion_pytorch_model.safetensors").exists()
    loaded = ControlEncoder.from_pretrained(tmp_path / "pose_encoder").eval()
    assert loaded.config.injected_levels == [0, 1, 2] and tuple(loaded.config.channels) == TINY.unet_channels
    with torch.no_grad():
        for a, b in zip(encoder(pose).down_residuals, loaded(pose).down_residuals):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="injection"):
        ControlEncoder(injection="add")
    with pytest.raises(ValueError, match="injected_levels"):
        ControlEncoder(channels=(8, 8), injected_levels=(2,))
    encoder = ControlEncoder(channels=(32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        encoder(torch.rand(1, 3, 60, 64))
