"""Our model and pipeline against numbers the authors' released code computed (tests/fixtures/official_bundle).

The bundle is a tiny Follow-Your-Pose model with random weights in the release's file layout, plus the release's
own UNet outputs and one run of its pipeline. We convert it with ``training.convert_official`` and check, from the
UNet up to ``python -m training.generate``, that ours computes the same numbers within the bundle's tolerances
(its MANIFEST). The ``diag.*`` outputs (the release's weights with per-frame GroupNorm and/or no temporal conv)
are checked against our own per-frame variants, so a regression says which part broke.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

BUNDLE = Path(__file__).parent / "fixtures" / "official_bundle"
PROMPT, NEGATIVE = "a robot dancing on the beach, best quality", "blurry, low quality"
UNET_TOL = dict(atol=1e-4, rtol=1e-4)
LATENT_TOL = dict(atol=1e-3, rtol=1e-4)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """The bundle was computed with one torch thread."""


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    from follow_your_pose.convert import ConvertConfig, convert

    return convert(ConvertConfig(checkpoint=str(BUNDLE / "checkpoints"), output=str(tmp_path_factory.mktemp("release") / "model")))


@pytest.fixture(scope="module")
def pipeline(converted):
    from follow_your_pose.pipeline import FollowYourPosePipeline

    return FollowYourPosePipeline.from_export(converted)


@pytest.fixture(scope="module")
def unet_io() -> dict[str, torch.Tensor]:
    return load_file(str(BUNDLE / "unet_io.safetensors"))


@pytest.fixture(scope="module")
def pipeline_io() -> dict[str, torch.Tensor]:
    return load_file(str(BUNDLE / "pipeline_io.safetensors"))


def test_the_fixture_is_the_bundle_its_manifest_describes():
    manifest = json.loads((BUNDLE / "MANIFEST.json").read_text())
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((BUNDLE / name).read_bytes()).hexdigest() == entry["sha256"], name


def unet_outputs(unet, pose_encoder, io: dict, with_pose: bool) -> torch.Tensor:
    from follow_your_pose.models.control_encoder import control_unet_inputs

    features = pose_encoder(io["pose"].permute(0, 2, 1, 3, 4)) if with_pose else None  # release: (B, T, 3, H, W)
    sample, kwargs = control_unet_inputs(io["latents"], features)
    with torch.no_grad():
        return unet(sample, io["timestep"], io["encoder_hidden_states"], **kwargs).sample


@pytest.mark.parametrize("with_pose", [True, False], ids=["pose", "no_pose"])
def test_unet_noise_predictions_match_the_release(pipeline, unet_io, with_pose):
    out = unet_outputs(pipeline.unet, pipeline.pose_encoder, unet_io, with_pose)
    expected = unet_io["noise_pred_pose" if with_pose else "noise_pred_no_pose"]
    torch.testing.assert_close(out, expected, **UNET_TOL)


def test_pose_features_match_the_release_level_by_level(pipeline, unet_io):
    from follow_your_pose.models.control_encoder import unfold_frames

    with torch.no_grad():
        features = pipeline.pose_encoder(unet_io["pose"].permute(0, 2, 1, 3, 4)).down_residuals
    for level, feature in enumerate(features):
        torch.testing.assert_close(unfold_frames(feature, 4), unet_io[f"pose_features.{level}"], **UNET_TOL)


def variant(unet, *, clip_group_norm: bool, temporal_conv: bool):
    """The same weights with the release's clip-wide GroupNorm and/or temporal conv switched off."""
    from follow_your_pose.models.inflated_unet import InflatedUNet

    config = replace(unet.inflation, clip_group_norm=clip_group_norm)
    copy = InflatedUNet.from_config({k: v for k, v in unet.config.items() if k != "inflation"}).inflate(config)
    copy.load_state_dict(unet.state_dict())
    if not temporal_conv:
        for module in copy.modules():
            if hasattr(module, "temporal_conv"):
                module.temporal_conv = None
    return copy.eval()


@pytest.mark.parametrize(
    "name, clip_norm, conv",
    [("framewise_groupnorm", False, True), ("no_conv_temporal", True, False), ("framewise_groupnorm+no_conv_temporal", False, False)],
)
def test_diagnostic_outputs_match_our_per_frame_variants(pipeline, unet_io, name, clip_norm, conv):
    """Each part of the release's semantics on its own: a failure here names the part that broke."""
    unet = variant(pipeline.unet, clip_group_norm=clip_norm, temporal_conv=conv)
    for with_pose in (True, False):
        out = unet_outputs(unet, pipeline.pose_encoder, unet_io, with_pose)
        key = f"diag.{name}.noise_pred_{'pose' if with_pose else 'no_pose'}"
        torch.testing.assert_close(out, unet_io[key], **UNET_TOL)
        assert not torch.allclose(out, unet_io["noise_pred_pose" if with_pose else "noise_pred_no_pose"], atol=1e-2)


def test_release_pose_preprocessing_is_bit_exact(pipeline_io):
    from follow_your_pose.pose_sources import read_pose_input
    from follow_your_pose.control_frames import prepare_frames

    pose = read_pose_input(BUNDLE / "pose" / "skeleton.mkv", stride=5, limit=4)
    np.testing.assert_array_equal(pose.frames, pipeline_io["skeleton_frames_read_uint8"].numpy())
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fed = prepare_frames(pose.frames, 64, 64, "release")
        assert torch.equal(fed, pipeline_io["pose_fed"][0]), f"{threads} threads"
    torch.set_num_threads(1)
    default = prepare_frames(pose.frames, 64, 64, "default")
    assert not torch.equal(default, pipeline_io["pose_fed"][0])  # our cv2 path is another preprocessing


def test_text_and_schedule_match_the_release(pipeline, pipeline_io):
    ids = pipeline.tokenizer([PROMPT, NEGATIVE], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids[0], pipeline_io["prompt_input_ids"][0]) and torch.equal(ids[1], pipeline_io["negative_prompt_input_ids"][0])
    with torch.no_grad():
        embeddings = pipeline.encode_prompt(PROMPT, NEGATIVE, guidance=True)
    torch.testing.assert_close(embeddings, pipeline_io["text_embeddings"], atol=1e-5, rtol=0)
    pipeline.scheduler.set_timesteps(3)
    assert torch.equal(pipeline.scheduler.timesteps, pipeline_io["timesteps"])
    drawn = torch.randn(pipeline_io["initial_latents"].shape, generator=torch.Generator("cpu").manual_seed(33))
    assert torch.equal(drawn, pipeline_io["initial_latents"])


def run(pipeline, frames, **kwargs):
    settings = dict(num_frames=4, height=64, width=64, num_inference_steps=3, guidance_scale=12.5, negative_prompt=NEGATIVE, eta=0.0,
                    output_type="np", pose_check=False)  # the bundle's skeleton is drawn in rainbow colours
    return pipeline(PROMPT, frames, **{**settings, **kwargs})


def test_pipeline_api_reproduces_the_release_run(pipeline, pipeline_io):
    frames = pipeline_io["skeleton_frames_read_uint8"].numpy()
    seeded = run(pipeline, frames, pose_preprocessing="release", generator=torch.Generator("cpu").manual_seed(33))
    torch.testing.assert_close(seeded.latents, pipeline_io["final_latents"], **LATENT_TOL)
    np.testing.assert_allclose(seeded.frames[0], pipeline_io["video"].numpy(), atol=1e-4, rtol=0)
    given = run(pipeline, frames, pose_preprocessing="release", latents=pipeline_io["initial_latents"], output_type="latent")
    assert torch.equal(given.frames, seeded.latents)  # latents= is the seeded draw, with no generator at all
    float_pose = run(pipeline, pipeline_io["pose_fed"][0], latents=pipeline_io["initial_latents"], output_type="latent")
    assert torch.equal(float_pose.frames, seeded.latents)  # a float pose tensor at the right size is used as it is


def test_pipeline_without_pose_matches_the_release_run_without_pose(pipeline, pipeline_io):
    out = run(pipeline, None, latents=pipeline_io["initial_latents"])
    torch.testing.assert_close(out.latents, pipeline_io["no_pose.final_latents"], **LATENT_TOL)
    np.testing.assert_allclose(out.frames[0], pipeline_io["no_pose.video"].numpy(), atol=1e-4, rtol=0)


def test_pipeline_diagnostic_run_matches_per_frame_norms_without_temporal_conv(pipeline, pipeline_io):
    from follow_your_pose.pipeline import FollowYourPosePipeline

    components = {**pipeline.components, "unet": variant(pipeline.unet, clip_group_norm=False, temporal_conv=False)}
    out = run(FollowYourPosePipeline(**components), pipeline_io["pose_fed"][0], latents=pipeline_io["initial_latents"], output_type="latent")
    torch.testing.assert_close(out.frames, pipeline_io["diag.framewise_groupnorm+no_conv_temporal.final_latents"], **LATENT_TOL)


def test_generate_command_reproduces_the_release_video(converted, pipeline_io, tmp_path):
    """Through the front door: ``python -m training.generate`` with the release's settings and seed."""
    from training import generate

    out = tmp_path / "robot.mp4"
    status = generate.main([
        "--model", str(converted), "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
        "--pose", str(BUNDLE / "pose" / "skeleton.mkv"), "--pose-stride", "5", "--pose-preprocessing", "release",
        "--frames", "4", "--window", "4", "--height", "64", "--width", "64", "--steps", "3", "--guidance-scale", "12.5",
        "--seed", "33", "--out", str(out), "--save-frames", "--save-latents",
        "--pose-force", "true",  # the bundle's skeleton is drawn in rainbow colours: generate from it as the release did
    ])  # fmt: skip
    assert status == 0 and out.is_file()
    latents = load_file(str(tmp_path / "robot.latents.safetensors"))["latents"]
    torch.testing.assert_close(latents, pipeline_io["final_latents"], **LATENT_TOL)
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "robot.frames").glob("*.png"))]).astype(int)
    expected = np.round(pipeline_io["video"].numpy() * 255).astype(int)
    assert frames.shape == expected.shape == (4, 64, 64, 3)
    difference = np.abs(frames - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # a level off only where a value sits on .5


def test_long_videos_normalise_each_window_as_one_clip(pipeline):
    """Clip-wide GroupNorm sees the frames denoised together: a long video's first window is exactly the video of
    its first frames generated alone (later windows never reach back into its statistics)."""
    from follow_your_pose.pose_sources import read_pose_input

    frames = read_pose_input(BUNDLE / "pose" / "skeleton.mkv", stride=2, limit=10).frames
    settings = dict(height=64, width=64, num_inference_steps=2, guidance_scale=7.5, window_size=4, output_type="latent", pose_check=False)
    long = pipeline(PROMPT, frames, num_frames=10, generator=torch.Generator("cpu").manual_seed(1), **settings)
    short = pipeline(PROMPT, frames[:4], num_frames=4, generator=torch.Generator("cpu").manual_seed(1), **settings)
    assert long.latents.shape[2] == 10
    torch.testing.assert_close(long.latents[:, :, :4], short.latents, rtol=0, atol=1e-6)
    whole = pipeline(PROMPT, frames, num_frames=10, generator=torch.Generator("cpu").manual_seed(1), **{**settings, "window_size": 10})
    assert (whole.latents[:, :, :4] - short.latents).abs().max() > 1e-3  # one pass: all ten frames share statistics
