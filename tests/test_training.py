"""Two-stage training on tiny random SD models and tiny real-format shards: whole runs, resume, freezing, failures.

The data and the command line's checks are tests/test_training_data.py (it shares this module's fixtures)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training import checkpoint as ckpt
from training.entry import parse_config
from training.config import load_config
from training.loop import NonFiniteLossError, Trainer, train
from training.records import read_metrics
from training.stages import PoseImageStage, VideoStage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest)."""


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from follow_your_pose.tiny import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("base") / "tiny-sd")


@pytest.fixture(scope="session")
def toy_world(make_toy_world) -> Path:
    """LAION-Pose and clip shards written by a real builder (pipelines/build_toy_world.py, shared shard writer); read
    only, so one world serves every module that imports this fixture."""
    return make_toy_world(images=12, images_per_shard=5, clips=4, clips_per_shard=2)


@pytest.fixture(scope="module")
def pose_data(toy_world) -> Path:
    return toy_world / "images"


@pytest.fixture(scope="module")
def clip_data(toy_world) -> Path:
    return toy_world / "clips"

def stage1_args(base: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--preset", "tiny", "--model.pretrained", str(base), "--data", str(data), "--output", str(output),
        "--batch-size", "2", "--data.num-workers", "0", "--log.progress-bar", "false", "--log.report-to", "none",
        "--validation.every", "-1", *extra,
    ]


def stage2_args(init: Path | None, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--preset", "tiny", *(["--init", str(init)] if init else []), "--data", str(data), "--output", str(output),
        "--data.num-workers", "0", "--log.progress-bar", "false", "--log.report-to", "none",
        "--validation.every", "-1", *extra,
    ]


def parse1(argv: list[str]):
    return parse_config(argv, stage=1, prog="stage1", description="")


def parse2(argv: list[str]):
    return parse_config(argv, stage=2, prog="stage2", description="")


# --- stage 1 end to end -----------------------------------------------------------------------------


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, tiny_base, pose_data):
    """Four stage-1 steps (checkpoints at 2 and 4, validation samples at the end, TensorBoard on, one worker)."""
    output = tmp_path_factory.mktemp("stage1") / "run"
    config = parse1(stage1_args(
        tiny_base, pose_data, output, "--max-steps", "4", "--checkpoint.every", "2", "--checkpoint.keep-last", "2",
        "--validation.every", "0", "--validation.num-poses", "2", "--validation.num-inference-steps", "2",
        "--data.num-workers", "1", "--log.report-to", "tensorboard", "--log.every", "1",
    ))
    stage = PoseImageStage(config)
    trainer = Trainer(config, stage)
    before = {name: state(stage.base[name]) for name in ("unet", "vae", "text_encoder")}
    before["pose_encoder"] = state(stage.module.pose_encoder)
    result = trainer.run()
    return config, stage, before, result


def test_stage1_trains_only_the_pose_encoder(stage1_run):
    _, stage, before, result = stage1_run
    assert result.global_step == 4 and len(result.losses) == 4 and all(np.isfinite(list(result.losses.values())))
    for name in ("unet", "vae", "text_encoder"):
        after = state(stage.base[name])
        assert all(torch.equal(before[name][k], after[k]) for k in after), f"{name} changed"
    after = state(stage.module.pose_encoder)
    changed = [k for k in after if not torch.equal(before["pose_encoder"][k], after[k])]
    assert changed and all(k.startswith(("conv_in", "body", "out_convs")) for k in changed)
    assert any(k.startswith("out_convs") and after[k].abs().sum() > 0 for k in changed)  # zero-init outputs moved


def test_stage1_writes_checkpoints_logs_samples_and_a_loadable_export(stage1_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from follow_your_pose.models.control_encoder import ControlEncoder
    from training.base_model import read_base_reference

    config, stage, _, result = stage1_run
    output = Path(config.output_dir)
    assert [p.name for p in ckpt.list_checkpoints(output)] == ["step-00000002", "step-00000004"]
    saved = load_config(output / "checkpoints" / "step-00000004" / "config.json")
    assert saved == config
    assert set(read_metrics(output)) == {1, 2, 3, 4}
    events = EventAccumulator(str(next((output / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    assert {"train/loss", "train/lr", "train/samples_per_s"} <= set(events.Tags()["scalars"])
    grid = result.samples[0]
    assert grid.name == "poses.png" and grid.parent.name == "step-00000004"
    from PIL import Image

    assert Image.open(grid).size == (2 * 64, 2 * 64)  # rows: (skeleton, sample) per validation pose
    exported = ControlEncoder.from_pretrained(output / "model" / "pose_encoder")
    trained = stage.module.pose_encoder.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in exported.state_dict().items())
    assert (output / "model" / "pose_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert read_base_reference(output / "model")[0] == str(Path(config.model.pretrained).resolve())


def test_stage1_validation_draws_what_the_exported_model_generates(stage1_run):
    """Validation samples through the pipeline that ships: the same prompt, pose and seed give the same image as
    ``FollowYourPosePipeline.from_export`` on the stage's export."""
    from follow_your_pose.pipeline import FollowYourPosePipeline
    from training.validation import sample

    config, stage, _, _ = stage1_run
    poses, _ = stage.validation_poses(1)
    drawn = sample(stage, stage.module.unet, stage.module.pose_encoder, ["a person dancing"], poses, steps=2, guidance_scale=3.0, seed=5)
    pipeline = FollowYourPosePipeline.from_export(Path(config.output_dir) / "model")
    pipeline.set_progress_bar_config(disable=True)
    size = config.data.resolution
    out = pipeline("a person dancing", poses[:1], num_frames=1, height=size, width=size, num_inference_steps=2,
                   guidance_scale=3.0, generator=torch.Generator().manual_seed(5), output_type="np")  # fmt: skip
    assert drawn.shape == (1, size, size, 3)
    assert np.abs(drawn[0].astype(int) - (out.frames[0, 0] * 255).round().astype(int)).max() <= 1


def test_stage1_resume_continues_the_same_loss_curve_bitwise(stage1_run, tmp_path, tiny_base, pose_data):
    from training import stage1

    config, _, _, result = stage1_run
    output = tmp_path / "resumed"
    (output / "checkpoints").mkdir(parents=True)
    shutil.copytree(Path(config.output_dir) / "checkpoints" / "step-00000002", output / "checkpoints" / "step-00000002")
    resumed = stage1.main(stage1_args(
        tiny_base, pose_data, output, "--max-steps", "4", "--checkpoint.every", "2", "--resume", "latest",
    ))
    assert resumed.losses == {3: result.losses[3], 4: result.losses[4]}  # exact float equality
    a = load_file(str(Path(config.output_dir) / "checkpoints" / "step-00000004" / ckpt.WEIGHTS))
    b = load_file(str(output / "checkpoints" / "step-00000004" / ckpt.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- stage 2 end to end -----------------------------------------------------------------------------


def test_stage2_trains_only_its_parameters_and_resumes(stage1_run, tmp_path, clip_data):
    from training import stage2
    from follow_your_pose.models.inflated_unet import STAGE2_TRAINABLE, load_inflated

    init = Path(stage1_run[0].output_dir)
    output = tmp_path / "stage2"
    config = parse2(stage2_args(
        init, clip_data, output, "--max-steps", "3", "--checkpoint.every", "2", "--data.num-frames", "3",
        "--data.frame-stride", "2", "--validation.every", "0", "--validation.num-frames", "3",
        "--validation.num-inference-steps", "2", "--validation.prompts", "a person moving",
    ))
    stage = VideoStage(config)
    trainer = Trainer(config, stage)
    unet_before, pose_before = state(stage.unet), state(stage.pose_encoder)
    result = trainer.run()
    unet_after, pose_after = state(stage.unet), state(stage.pose_encoder)
    changed = {k for k in unet_after if not torch.equal(unet_before[k], unet_after[k])}
    trainable = set(stage.trainable_names())
    assert changed and changed <= trainable
    assert all(any(f".{p}." in f".{k}." for p in STAGE2_TRAINABLE) for k in trainable)
    assert any(".temporal_" in k for k in changed) and any(".attn1.to_q." in k for k in changed)
    assert all(torch.equal(pose_before[k], pose_after[k]) for k in pose_after)
    gif = result.samples[0]
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.size == (128, 64)  # skeleton | sample, side by side
    reloaded = load_inflated(output / "model" / "unet")
    assert all(torch.equal(reloaded.state_dict()[k], unet_after[k]) for k in trainable)
    check_generate_loads_the_export(output / "model", tmp_path)
    # resume from the step-2 checkpoint in a fresh folder: step 3 is the same
    again = tmp_path / "stage2-resumed"
    (again / "checkpoints").mkdir(parents=True)
    shutil.copytree(output / "checkpoints" / "step-00000002", again / "checkpoints" / "step-00000002")
    resumed = stage2.main(stage2_args(
        init, clip_data, again, "--max-steps", "3", "--data.num-frames", "3", "--data.frame-stride", "2", "--resume", "latest",
    ))
    assert resumed.losses == {3: result.losses[3]}


def check_generate_loads_the_export(model: Path, tmp_path: Path) -> None:
    """``python -m training.generate --model OUTPUT/model`` runs on what stage 2 exported."""
    from PIL import Image

    from pose_extraction.skeleton import render_sequence
    from training import generate
    from training.validation import default_pose_sequence

    poses = tmp_path / "poses"
    poses.mkdir()
    for index, frame in enumerate(render_sequence(default_pose_sequence(3, 64), 64, 64)):
        Image.fromarray(frame).save(poses / f"{index:03d}.png")
    out = tmp_path / "video.mp4"
    code = generate.main([
        "--model", str(model), "--prompt", "a person moving", "--pose", str(poses), "--out", str(out),
        "--frames", "3", "--steps", "2", "--height", "64", "--width", "64", "--device", "cpu",
    ])
    assert code == 0 and out.is_file() and out.with_suffix(".json").is_file()


# --- failures ---------------------------------------------------------------------------------------


def test_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, tiny_base, pose_data, monkeypatch):
    """A save that dies after writing the weights (EMA and accumulation on) leaves step 1 intact; resume finishes."""
    from training import stage1

    output = tmp_path / "crash"
    args = stage1_args(tiny_base, pose_data, output, "--max-steps", "2", "--checkpoint.every", "1", "--ema",
                       "--ema-decay", "0.9", "--gradient-accumulation-steps", "2")
    real = ckpt._write_training_state

    def dying(folder, **kwargs):
        if kwargs["state"].global_step == 2:
            assert (folder / ckpt.WEIGHTS).is_file()  # the crash hits a half-written checkpoint
            raise OSError("injected crash while saving")
        return real(folder, **kwargs)

    monkeypatch.setattr(ckpt, "_write_training_state", dying)
    with pytest.raises(OSError, match="injected"):
        stage1.main(args)
    monkeypatch.setattr(ckpt, "_write_training_state", real)
    assert [p.name for p in ckpt.list_checkpoints(output)] == ["step-00000001"]
    assert (output / "checkpoints" / ".tmp-step-00000002").is_dir()  # the torn save, ignored
    assert ckpt.resolve_resume(output, "latest").path.name == "step-00000001"
    latest = output / "checkpoints" / "step-00000001"
    assert json.loads((latest / ckpt.STATE).read_text())["global_step"] == 1
    assert load_file(str(latest / ckpt.WEIGHTS)) and load_file(str(latest / ckpt.EMA_WEIGHTS))
    result = stage1.main([*args, "--resume", "latest"])
    assert result.global_step == 2 and set(result.losses) == {2}
    assert not list((output / "checkpoints").glob(".tmp-*"))
    ema = load_file(str(output / "checkpoints" / "step-00000002" / ckpt.EMA_WEIGHTS))
    exported = load_file(str(output / "model" / "pose_encoder" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[k.removeprefix("pose_encoder.")], v) for k, v in ema.items())


class NaNAtThirdStep(PoseImageStage):
    """Stage 1 whose loss turns NaN on its third batch (a diverging run, injected)."""

    calls = 0

    def loss(self, model, batch, generator, sampling):
        self.calls += 1
        loss = super().loss(model, batch, generator, sampling)
        return loss * float("nan") if self.calls == 3 else loss


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, pose_data):
    """Also: with no --model.pretrained the tiny preset builds its random base into OUTPUT/tiny-base."""
    output = tmp_path / "nan"
    config = parse1(stage1_args(Path(""), pose_data, output, "--model.pretrained", "", "--max-steps", "5", "--checkpoint.every", "2"))
    assert config.model.pretrained == ""
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3") as error:
        train(config, NaNAtThirdStep(config))
    assert "step-00000002" in str(error.value)
    assert [p.name for p in ckpt.list_checkpoints(output)] == ["step-00000002"]
    weights = load_file(str(output / "checkpoints" / "step-00000002" / ckpt.WEIGHTS))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (output / "model").exists()
    assert (output / "tiny-base" / "model_index.json").is_file()


def test_cached_latents_are_the_draws_of_encoding_again_without_the_encoder(tmp_path, tiny_base, pose_data):
    from training.loop import make_accelerator

    config = parse1(stage1_args(tiny_base, pose_data, tmp_path / "run", "--data.crop-scale", "1", "1",
                                "--data.crop-ratio", "1", "1", "--data.cache-latents", "true"))  # fmt: skip
    stage = PoseImageStage(config)
    stage.setup(make_accelerator(config))
    data = stage.dataset()
    encoded = []
    stage.base["vae"].encoder.register_forward_hook(lambda module, args, out: encoded.append(len(args[0])))

    def latents(epoch: int, seed: int = 5, **crop_change) -> torch.Tensor:
        batch = torch.utils.data.default_collate([data[(epoch, index)] for index in range(4)])
        for index, value in crop_change.items():
            batch["crop"][int(index[1:])] += value
        return stage.image_latents(batch, torch.Generator().manual_seed(seed))

    first = latents(0)
    batch = torch.utils.data.default_collate([data[(0, index)] for index in range(4)])
    fresh = stage.encode_images(batch["pixel_values"], torch.Generator().manual_seed(5))
    assert torch.allclose(first, fresh, atol=1e-6) and encoded == [4, 4] and len(stage.latent_cache) == 4
    assert torch.allclose(latents(3), fresh, atol=1e-6) and encoded == [4, 4]  # a later epoch: kept, not encoded
    assert not torch.allclose(latents(3, seed=6), fresh, atol=1e-3)  # a new draw from the same posterior
    latents(4, i2=0.5)  # image 2 cropped differently: encoded again, its kept crop replaced
    assert encoded == [4, 4, 1] and stage.latent_cache[batch["key"][2]][0] == (batch["crop"][2] + 0.5).tolist()


def test_two_processes_with_torchrun_train_and_checkpoint_every_rank(tmp_path, tiny_base, pose_data):
    """The multi-GPU path (DDP through accelerate, ranks splitting the data) run on CPU with gloo."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(port), "-m", "training.stage1",
        *stage1_args(tiny_base, pose_data, output, "--max-steps", "2", "--checkpoint.every", "1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(read_metrics(output)) == {1, 2}
    latest = ckpt.list_checkpoints(output)[-1]
    assert sorted(p.name for p in (latest / "rng").iterdir()) == ["rank-0.pt", "rank-1.pt"]
    assert json.loads((latest / ckpt.STATE).read_text())["samples_per_batch"] == 4  # 2 per process x 2 processes
    assert (output / "model" / "pose_encoder" / "config.json").is_file()
