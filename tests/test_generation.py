"""FollowYourPosePipeline and the generate CLI on a tiny random SD-1.x model exported to disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datasets.atomic import TEMP_MARKER
from datasets.generated import read_record, sidecar_paths
from follow_your_pose.long_video import plan_windows
from follow_your_pose.models import ControlEncoder, save_inflated
from follow_your_pose.pipeline import FollowYourPosePipeline
from follow_your_pose.tiny import TinySDConfig, build_clip_tokenizer, save_tiny_sd

TINY = TinySDConfig()
WINDOW = 4


def randomise(module: torch.nn.Module, names: tuple[str, ...], seed: int, scale: float = 0.1) -> None:
    """Give the zero-initialised parts random values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if any(part in name for part in names):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A stage-2 export (base.json, pose_encoder/, unet/) on a tiny base, laid out as training writes it."""
    from follow_your_pose.models import InflatedUNet

    root = tmp_path_factory.mktemp("fyp")
    base = save_tiny_sd(root / "base", TINY)
    model = root / "model"
    unet = InflatedUNet.from_pretrained(base, subfolder="unet").inflate()
    randomise(unet, ("temporal_",), seed=1)
    save_inflated(unet, model / "unet", base=str(base))
    encoder = ControlEncoder(channels=TINY.unet_channels)
    randomise(encoder, ("out_convs",), seed=2, scale=0.5)
    encoder.save_pretrained(model / "pose_encoder")
    (model / "base.json").write_text(json.dumps({"pretrained": str(base), "revision": None}))
    return model


@pytest.fixture(scope="module")
def pipe(export_dir):
    pipeline = FollowYourPosePipeline.from_export(export_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def walking_keypoints(frames: int, size: int = 128) -> list[np.ndarray]:
    """A figure whose arms swing: COCO-17 keypoints in a ``size`` x ``size`` frame."""
    people = []
    for t in range(frames):
        s = size / 128
        swing = 20 * np.sin(t)
        points = [
            (64, 20), (60, 16), (68, 16), (56, 18), (72, 18), (50, 40), (78, 40), (42 - swing, 62), (86 + swing, 62),
            (38 - swing, 84), (90 + swing, 84), (54, 82), (74, 82), (52, 104), (76, 104), (50, 124), (78, 124),
        ]  # fmt: skip
        people.append(np.array([[[x * s, y * s, 0.9] for x, y in points]], dtype=np.float32))
    return people


def skeletons(frames: int) -> np.ndarray:
    from pose_extraction.skeleton import render_sequence

    return render_sequence(walking_keypoints(frames, 64), 64, 64)


def run(pipe, pose, **kwargs):
    kwargs.setdefault("num_inference_steps", 1)
    kwargs.setdefault("guidance_scale", 3.0)
    kwargs.setdefault("output_type", "np")
    seed = kwargs.pop("seed", 0)
    return pipe("a dancer on a beach", pose, generator=torch.Generator().manual_seed(seed), window_size=WINDOW, **kwargs)


@pytest.mark.slow
def test_long_video_runs_window_by_window_reusing_the_prior_noise(pipe):
    frames = 3 * WINDOW
    windows = plan_windows(frames, WINDOW)
    assert [(w.start, w.prior) for w in windows] == [(0, 0), (2, 2), (4, 2), (6, 2), (8, 2)]
    calls: list[torch.Tensor] = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args, kw: calls.append(args[0][:1].clone()), with_kwargs=True)
    try:
        first = run(pipe, skeletons(frames), num_inference_steps=2, output_type="latent", guidance_scale=1.0, eta=0.5)
    finally:
        hook.remove()
    steps = 2
    assert first.frames.shape == (1, 4, frames, 8, 8) and len(calls) == len(windows) * steps
    half = WINDOW // 2
    for w in range(1, len(windows)):
        for s in range(steps):
            now, before = calls[w * steps + s], calls[(w - 1) * steps + s]
            # the window's first T/2 frames enter every step as the previous window's last T/2 frames did
            torch.testing.assert_close(now[:, :, :half], before[:, :, WINDOW - half :], rtol=0, atol=0)
        # its other frames start from fresh noise
        assert (calls[w * steps][:, :, half:] - calls[(w - 1) * steps][:, :, half:]).abs().min() > 0
    again = run(pipe, skeletons(frames), num_inference_steps=2, output_type="latent", guidance_scale=1.0, eta=0.5)
    torch.testing.assert_close(again.frames, first.frames, rtol=0, atol=0)
    other = run(pipe, skeletons(WINDOW), num_inference_steps=2, output_type="latent", guidance_scale=1.0, eta=0.5, seed=1)
    assert (other.frames - first.frames[:, :, :WINDOW]).abs().max() > 1e-3


@pytest.mark.slow
def test_windows_in_lockstep_give_the_same_video_in_fewer_unet_calls(pipe):
    """``window_batch`` windows denoised together (one UNet call per step for them all) give the video of one window
    after another: exactly so in float64, where the batch size cannot change the arithmetic."""
    frames, steps = 3 * WINDOW + 1, 2
    windows = len(plan_windows(frames, WINDOW, 3))
    settings = dict(num_inference_steps=steps, guidance_scale=5.0, output_type="latent", window_overlap=3, pose_guidance=True)
    pipe.to(torch.float64)
    try:
        videos, calls = {}, {}
        for batch in (1, 2, windows):
            seen: list[int] = []
            hook = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
            try:
                videos[batch] = run(pipe, skeletons(frames), window_batch=batch, **settings).frames
            finally:
                hook.remove()
            calls[batch] = seen
    finally:
        pipe.to(torch.float32)
    assert calls[1] == [2] * windows * steps and calls[windows] == [2 * windows] * steps  # CFG doubles each window
    assert len(calls[2]) == -(-windows // 2) * steps
    for batch in (2, windows):
        torch.testing.assert_close(videos[batch], videos[1], rtol=0, atol=1e-12)


def test_pose_guidance_scale_and_round_trip(pipe, tmp_path):
    pose = skeletons(WINDOW)
    out = run(pipe, pose, negative_prompt="blurry")
    assert out.frames.shape == (1, WINDOW, 64, 64, 3) and 0 <= out.frames.min() and out.frames.max() <= 1
    np.testing.assert_array_equal(out.pose_frames, pose)
    dropped = run(pipe, pose, negative_prompt="blurry", conditioning_scale=0.0)
    no_pose = run(pipe, None, negative_prompt="blurry", num_frames=WINDOW)
    np.testing.assert_allclose(dropped.frames, no_pose.frames, atol=1e-5)
    assert np.abs(out.frames - no_pose.frames).max() > 1e-3
    # pose guidance: the pose only in the conditional branch. Without guidance there is one branch, so nothing changes;
    # with it, the output moves, and dropping the pose (scale 0) still gives the pose-free video
    unguided = dict(guidance_scale=1.0, output_type="latent")
    np.testing.assert_allclose(run(pipe, pose, pose_guidance=True, **unguided).frames, run(pipe, pose, **unguided).frames, atol=1e-6)
    guided = run(pipe, pose, negative_prompt="blurry", pose_guidance=True)
    assert np.abs(guided.frames - out.frames).max() > 1e-3
    np.testing.assert_allclose(run(pipe, pose, negative_prompt="blurry", pose_guidance=True, conditioning_scale=0.0).frames,
                               no_pose.frames, atol=1e-5)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = FollowYourPosePipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(loaded, pose, negative_prompt="blurry").frames, out.frames, atol=1e-5)


def test_lora_loads_the_standard_way_and_changes_the_output(pipe, export_dir, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    base = json.loads((export_dir / "base.json").read_text())["pretrained"]
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora", unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    )
    pose = skeletons(2)
    before = run(pipe, pose)
    pipe.load_lora_weights(tmp_path / "lora", adapter_name="style")
    try:
        with_lora = run(pipe, pose)
        assert any("lora_A" in name for name, _ in pipe.unet.named_parameters())
        assert not any("temporal_attention.attn.to_q.lora" in name for name, _ in pipe.unet.named_parameters())
    finally:
        pipe.unload_lora_weights()
    assert np.abs(with_lora.frames - before.frames).max() > 1e-3
    np.testing.assert_allclose(run(pipe, pose).frames, before.frames, atol=1e-5)


def write_pose_sequence(folder, keypoints, size: int, fps: float) -> None:
    """A pose sequence folder in the layout of ``python -m pose_extraction.video``."""
    from datasets.pose_sequence import (
        KIND,
        SCHEMA_VERSION,
        PoseSequence,
        write_keypoints,
    )

    folder.mkdir(parents=True)
    header = {"schema": KIND, "schema_version": SCHEMA_VERSION, "fps": fps, "width": size, "height": size, "frames": len(keypoints)}
    sequence = PoseSequence(
        header=header, keypoints=keypoints, boxes=[np.zeros((1, 4), np.float32)] * len(keypoints),
        box_scores=[np.ones(1, np.float32)] * len(keypoints), track_ids=[[0]] * len(keypoints),
        times=[i / fps for i in range(len(keypoints))], source_frames=list(range(len(keypoints))),
    )  # fmt: skip
    write_keypoints(folder, sequence, "json")


def test_cli_writes_the_video_and_the_sidecars_evaluation_reads(export_dir, tmp_path):
    import av

    from training.generate import main

    poses = tmp_path / "poses"
    write_pose_sequence(poses, walking_keypoints(5, 128), size=128, fps=10.0)
    out = tmp_path / "gen" / "dance.mp4"
    common = ["--model", str(export_dir), "--prompt", "a robot dancing", "--steps", "1", "--window", str(WINDOW)]
    assert main([*common, "--pose", str(poses), "--frames", "5", "--out", str(out), "--gif", "true", "--pose-fit", "none"]) == 0
    pose_video, record_path = sidecar_paths(out)
    assert out.exists() and pose_video.exists() and record_path.exists() and out.with_suffix(".gif").exists()
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 64, 3)
    record = read_record(out)
    assert record["frames"] == 5 and record["fps"] == 10.0 and record["prompt"] == "a robot dancing"
    # keypoints are mapped from the 128-pixel pose frames to the 64-pixel output
    np.testing.assert_allclose(np.asarray(record["keypoints"][3]), walking_keypoints(5, 64)[3], atol=1e-3)
    assert record["settings"]["steps"] == 1 and record["key"] == "dance"
    # the skeleton video it wrote is itself a valid --pose input (no keypoints then)
    again = tmp_path / "gen" / "again.mp4"
    toy = {"figure": "red", "background": "blue", "figure_style": {"limb_width": 0.5}}  # a JSON object flag, kept in the record
    assert main([*common, "--pose", str(pose_video), "--out", str(again), "--toy", json.dumps(toy)]) == 0
    assert read_record(again)["keypoints"] is None and read_record(again)["frames"] == 5
    assert read_record(again)["settings"]["toy"] == toy
    assert not [p for p in (tmp_path / "gen").iterdir() if TEMP_MARKER in p.name or p.name.endswith(".partial")]
    # bad input: a clear message and a non-zero exit, nothing written
    assert main([*common, "--pose", str(poses), "--frames", "9", "--out", str(tmp_path / "gen" / "x.mp4")]) == 2
    assert not (tmp_path / "gen" / "x.mp4").exists()
    with pytest.raises(SystemExit):
        main([*common, "--pose", str(poses), "--out", str(tmp_path / "x.avi")])
    with pytest.raises(SystemExit):
        main([*common, "--pose", str(poses), "--out", str(tmp_path / "gen" / "y.mp4"), "--toy", "[1, 2]"])


def test_tokenizer_gives_open_clip_ids():
    import open_clip

    tokenizer = build_clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-B-32")
    for text in ["Iron Man, dancing on the beach!", "a  girl   in a café, 4k", "it's 2023"]:
        ours = tokenizer(text, padding="max_length", max_length=77).input_ids
        theirs = reference([text])[0].tolist()
        length = theirs.index(49407) + 1
        assert ours[:length] == theirs[:length]


def test_diffusers_conventions_prompts_batch_outputs_and_return_dict(pipe):
    """A list of prompts with several videos each is the batch of one call per prompt; output types and return_dict
    are diffusers'; given ``latents`` the videos are the same with no generator at all."""
    pose = skeletons(WINDOW)
    prompts = ["a dancer on a beach", "a robot in the snow"]
    latents = torch.randn((4, 4, WINDOW, 8, 8), generator=torch.Generator().manual_seed(7))
    settings = dict(num_inference_steps=1, guidance_scale=3.0, window_size=WINDOW, negative_prompt="blurry")
    batch = pipe(prompts, pose, num_videos_per_prompt=2, latents=latents, output_type="np", **settings)
    assert batch.frames.shape == (4, WINDOW, 64, 64, 3) and batch.latents.shape == (4, 4, WINDOW, 8, 8)
    for index in range(4):
        one = pipe(prompts[index // 2], pose, latents=latents[index : index + 1], output_type="np", **settings)
        np.testing.assert_allclose(batch.frames[index], one.frames[0], atol=1e-4)
    assert np.abs(batch.frames[0] - batch.frames[2]).max() > 1e-3  # other prompt, same noise
    pil = pipe(prompts[0], pose, latents=latents[:1], **settings)  # pil by default, as in diffusers
    assert len(pil.frames) == 1 and len(pil.frames[0]) == WINDOW and pil.frames[0][0].size == (64, 64)
    np.testing.assert_array_equal(np.asarray(pil.frames[0][3]), (batch.frames[0][3] * 255).round().astype(np.uint8))
    pt = pipe(prompts[0], pose, latents=latents[:1], output_type="pt", **settings)
    assert tuple(pt.frames.shape) == (1, WINDOW, 3, 64, 64)
    (frames,) = pipe(prompts[0], pose, latents=latents[:1], output_type="np", return_dict=False, **settings)
    np.testing.assert_array_equal(frames, pt.frames.permute(0, 1, 3, 4, 2).numpy())


def test_callback_on_step_end_sees_every_step_and_can_change_the_latents(pipe):
    frames, steps = 2 * WINDOW, 2
    seen = []

    def record(pipeline, step, timestep, tensors):
        seen.append((step, int(timestep), tuple(tensors["latents"].shape)))
        return {}

    kwargs = dict(num_inference_steps=steps, guidance_scale=3.0, window_size=WINDOW, output_type="latent")
    plain = pipe("a dancer", skeletons(frames), generator=torch.Generator().manual_seed(0), callback_on_step_end=record, **kwargs)
    windows = len(plan_windows(frames, WINDOW))
    assert [s for s, _, _ in seen] == list(range(windows * steps)) and all(shape[2] == WINDOW for _, _, shape in seen)
    untouched = pipe("a dancer", skeletons(frames), generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(plain.frames, untouched.frames, rtol=0, atol=0)  # a callback returning nothing changes nothing

    def zero_last(pipeline, step, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if step == windows * steps - 1 else {}

    zeroed = pipe("a dancer", skeletons(frames), generator=torch.Generator().manual_seed(0), callback_on_step_end=zero_last, **kwargs)
    assert zeroed.frames[:, :, -(WINDOW // 2):].abs().max() == 0  # the last window's new frames are what it set
    with pytest.raises(ValueError, match="callback tensor inputs"):
        pipe("a dancer", skeletons(WINDOW), callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"], **kwargs)


def test_memory_options_keep_the_frames(export_dir):
    """VAE slicing and tiling decode the same frames; model CPU offload (here onto the CPU itself) runs the same video."""
    pipeline = FollowYourPosePipeline.from_export(export_dir)
    pipeline.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, WINDOW, 8, 8), generator=torch.Generator().manual_seed(3))
    settings = dict(num_inference_steps=1, guidance_scale=3.0, window_size=WINDOW, latents=latents, output_type="np")
    plain = pipeline("a dancer", skeletons(WINDOW), **settings).frames
    pipeline.enable_vae_slicing()
    np.testing.assert_allclose(pipeline("a dancer", skeletons(WINDOW), **settings).frames, plain, atol=1e-5)
    pipeline.enable_vae_tiling()
    vae = pipeline.vae
    vae.tile_sample_min_size, vae.tile_latent_min_size = 32, 4  # tiles smaller than these 64-px frames
    tiled = pipeline("a dancer", skeletons(WINDOW), **settings).frames
    # decoded tile by tile: it ran through the pipeline and changed the decode (at seams that, with this tiny random
    # VAE's 4-latent tiles, cover most of the frame), into valid frames
    assert tiled.shape == plain.shape and np.abs(tiled - plain).mean() > 1e-3 and 0 <= tiled.min() and tiled.max() <= 1
    pipeline.disable_vae_tiling()
    pipeline.disable_vae_slicing()
    pipeline.enable_model_cpu_offload(device="cpu")
    np.testing.assert_allclose(pipeline("a dancer", skeletons(WINDOW), **settings).frames, plain, atol=1e-5)


def test_memory_flags_of_the_command_line(export_dir, tmp_path):
    """``--offload model --vae-slicing true`` runs the command and writes the same video as without them."""
    from PIL import Image

    from training.generate import main

    poses = tmp_path / "poses"
    poses.mkdir()
    for index, frame in enumerate(skeletons(WINDOW)):
        Image.fromarray(frame).save(poses / f"{index:03d}.png")
    common = ["--model", str(export_dir), "--prompt", "a dancer", "--pose", str(poses), "--steps", "1", "--save-frames", "true"]
    assert main([*common, "--out", str(tmp_path / "a.mp4")]) == 0
    assert main([*common, "--out", str(tmp_path / "b.mp4"), "--offload", "model", "--vae-slicing", "true", "--device", "cpu"]) == 0
    for name in sorted(p.name for p in (tmp_path / "a.frames").iterdir()):
        a, b = (np.asarray(Image.open(tmp_path / f"{v}.frames" / name)).astype(int) for v in "ab")
        assert np.abs(a - b).max() <= 1


def test_the_python_api_refuses_photos_as_pose_frames(pipe, people_photos):
    """A photo passed as ``pose`` would condition the model on its pixels: refused, unless pose_check=False."""
    import cv2

    photo = cv2.resize(people_photos["astronaut"], (64, 64), interpolation=cv2.INTER_AREA)
    frames = np.repeat(photo[None], WINDOW, axis=0)
    with pytest.raises(ValueError, match="look like a photo or video"):
        run(pipe, frames)
    assert run(pipe, frames, pose_check=False, output_type="latent").frames.shape == (1, 4, WINDOW, 8, 8)
    assert run(pipe, skeletons(WINDOW), output_type="latent").frames.shape == (1, 4, WINDOW, 8, 8)  # ours pass
