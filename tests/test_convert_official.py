"""``python -m training.convert_official`` on every layout the release ships, and on bad input.

Each converted model is checked by what it computes: the release's own UNet noise prediction from the bundle
(tests/fixtures/official_bundle), through the same loader ``training.generate --model`` uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from follow_your_pose.convert import ConvertConfig, convert
from training.convert_official import main

BUNDLE = Path(__file__).parent / "fixtures" / "official_bundle"
CHECKPOINTS = BUNDLE / "checkpoints"
BASE = CHECKPOINTS / "stable-diffusion-v1-4"
WEIGHTS = CHECKPOINTS / "followyourpose_checkpoint-1000" / "pytorch_model.bin"


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Two shared cores (see conftest)."""


@pytest.fixture(scope="module")
def release_state() -> dict[str, torch.Tensor]:
    return torch.load(str(WEIGHTS), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def unet_io() -> dict[str, torch.Tensor]:
    return load_file(str(BUNDLE / "unet_io.safetensors"))


def noise_prediction(model_dir: Path, io: dict) -> torch.Tensor:
    from follow_your_pose.models.control_encoder import control_unet_inputs
    from follow_your_pose.pipeline import FollowYourPosePipeline

    pipeline = FollowYourPosePipeline.from_export(model_dir)
    with torch.no_grad():
        sample, kwargs = control_unet_inputs(io["latents"], pipeline.pose_encoder(io["pose"].permute(0, 2, 1, 3, 4)))
        return pipeline.unet(sample, io["timestep"], io["encoder_hidden_states"], **kwargs).sample


def assert_is_the_release(model_dir: Path, io: dict) -> None:
    torch.testing.assert_close(noise_prediction(model_dir, io), io["noise_pred_pose"], atol=1e-4, rtol=1e-4)


def write_3d_unet_folder(folder: Path, state: dict) -> Path:
    """The ``save_pretrained`` UNet folder the release's training script writes: 3-D block type names, same tensors."""
    config = json.loads((BASE / "unet" / "config.json").read_text())
    config.update(
        _class_name="UNet3DConditionModel",
        down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
        mid_block_type="UNetMidBlock3DCrossAttn",
    )
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    return folder


def test_accelerate_folder_converts_to_the_small_export(tmp_path, unet_io):
    out = convert(ConvertConfig(checkpoint=str(WEIGHTS.parent), base=str(BASE), output=str(tmp_path / "m")))
    assert sorted(p.name for p in out.iterdir()) == ["base.json", "conversion.json", "pose_encoder", "unet"]
    assert (out / "unet" / "inflated_weights.safetensors").is_file()  # only what stage 2 changed
    record = json.loads((out / "conversion.json").read_text())
    assert record["unet"] == "stage-2 weights only" and record["frozen_weights_differing_from_base"] == 0
    assert record["pose_encoder_source"] == "skeleton_adapter" and record["warnings"] == []
    assert_is_the_release(out, unet_io)


def test_checkpoints_folder_finds_its_base_and_a_bare_ddp_file_converts(tmp_path, release_state, unet_io):
    out = convert(ConvertConfig(checkpoint=str(CHECKPOINTS), output=str(tmp_path / "whole")))
    assert json.loads((out / "base.json").read_text())["pretrained"] == str(BASE.resolve())
    ddp = tmp_path / "ddp" / "pytorch_model.bin"
    ddp.parent.mkdir()
    torch.save({f"module.{k}": v for k, v in release_state.items()}, ddp)
    assert_is_the_release(convert(ConvertConfig(checkpoint=str(ddp), base=str(BASE), output=str(tmp_path / "d"))), unet_io)


def test_save_pretrained_3d_unet_folder_converts(tmp_path, release_state, unet_io):
    pipeline_dir = tmp_path / "stage2-output"
    write_3d_unet_folder(pipeline_dir / "unet", release_state)
    (pipeline_dir / "model_index.json").write_text("{}")
    for source in (pipeline_dir / "unet", pipeline_dir):
        out = convert(ConvertConfig(checkpoint=str(source), base=str(BASE), output=str(tmp_path / f"from-{source.name}")))
        assert_is_the_release(out, unet_io)


def test_pose_encoder_falls_back_to_pose_encoder_pth_and_a_difference_is_reported(tmp_path, release_state, unet_io, caplog):
    without = tmp_path / "no-adapter"
    without.mkdir()
    torch.save({k: v for k, v in release_state.items() if not k.startswith("skeleton_adapter.")}, without / "pytorch_model.bin")
    shutil.copy(CHECKPOINTS / "pose_encoder.pth", without / "pose_encoder.pth")
    out = convert(ConvertConfig(checkpoint=str(without), base=str(BASE), output=str(tmp_path / "fallback")))
    assert json.loads((out / "conversion.json").read_text())["pose_encoder_source"].endswith("pose_encoder.pth")
    assert_is_the_release(out, unet_io)  # the bundle's pose_encoder.pth equals the checkpoint's adapter

    both = tmp_path / "both"
    shutil.copytree(WEIGHTS.parent, both / "followyourpose_checkpoint-1000")
    other = torch.load(str(CHECKPOINTS / "pose_encoder.pth"), weights_only=True)
    other["conv_in.weight"] = other["conv_in.weight"] + 1
    torch.save(other, both / "pose_encoder.pth")
    caplog.set_level("WARNING")
    out = convert(ConvertConfig(checkpoint=str(both), base=str(BASE), output=str(tmp_path / "both-out")))
    assert "differs" in caplog.text and json.loads((out / "conversion.json").read_text())["warnings"]
    assert_is_the_release(out, unet_io)  # the checkpoint's copy won, as in the release's inference


def test_frozen_weights_that_differ_from_the_base_give_a_full_copy(tmp_path, release_state, unet_io):
    changed = dict(release_state)
    changed["conv_in.bias"] = changed["conv_in.bias"] + 0.5  # a weight stage 2 never trains
    source = tmp_path / "changed.bin"
    torch.save(changed, source)
    out = convert(ConvertConfig(checkpoint=str(source), base=str(BASE), output=str(tmp_path / "full")))
    assert (out / "unet" / "config.json").is_file() and not (out / "unet" / "inflation.json").exists()
    assert json.loads((out / "conversion.json").read_text())["frozen_weights_differing_from_base"] == 1
    from follow_your_pose.pipeline import FollowYourPosePipeline

    unet = FollowYourPosePipeline.from_export(out).unet
    assert torch.equal(unet.conv_in.bias, changed["conv_in.bias"])
    assert not torch.allclose(noise_prediction(out, unet_io), unet_io["noise_pred_pose"], atol=1e-3)


# --- bad input: one line naming the problem, exit status 2 ---------------------------------------------


def refusal(capsys, *argv: str) -> str:
    status = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_folders_and_files_are_refused_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "no such file or folder" in refusal(capsys, "--checkpoint", str(tmp_path / "missing"), "--base", str(BASE), "--output", out)
    (tmp_path / "empty").mkdir()
    assert "not the release's weights" in refusal(capsys, "--checkpoint", str(tmp_path / "empty"), "--base", str(BASE), "--output", out)
    truncated = tmp_path / "truncated" / "pytorch_model.bin"
    truncated.parent.mkdir()
    truncated.write_bytes(WEIGHTS.read_bytes()[: WEIGHTS.stat().st_size // 2])
    assert "not a complete" in refusal(capsys, "--checkpoint", str(truncated), "--base", str(BASE), "--output", out)
    assert "--base" in refusal(capsys, "--checkpoint", str(WEIGHTS), "--output", out)
    assert not (tmp_path / "out").exists()


def test_a_pickle_that_is_not_only_tensors_is_never_unpickled(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    bad = tmp_path / "evil.bin"
    torch.save({"conv_in.weight": Payload()}, bad)
    assert "cannot read" in refusal(capsys, "--checkpoint", str(bad), "--base", str(BASE), "--output", str(tmp_path / "out"))
    assert not (tmp_path / "pwned").exists()


def test_missing_keys_and_a_wrong_base_are_named(tmp_path, release_state, capsys):
    lacking = tmp_path / "lacking.bin"
    torch.save({k: v for k, v in release_state.items() if "up_blocks.1" not in k}, lacking)
    assert "lacks" in refusal(capsys, "--checkpoint", str(lacking), "--base", str(BASE), "--output", str(tmp_path / "o1"))

    sd2 = tmp_path / "sd2-base"
    shutil.copytree(BASE, sd2)
    config = json.loads((sd2 / "unet" / "config.json").read_text())
    (sd2 / "unet" / "config.json").write_text(json.dumps({**config, "use_linear_projection": True}))
    assert "2.x" in refusal(capsys, "--checkpoint", str(WEIGHTS), "--base", str(sd2), "--output", str(tmp_path / "o2"))

    wider = tmp_path / "other-base"
    shutil.copytree(BASE, wider, ignore=shutil.ignore_patterns("*.bin"))
    from diffusers import UNet2DConditionModel

    (wider / "unet" / "config.json").unlink()
    UNet2DConditionModel.from_config({**config, "cross_attention_dim": 64}).save_pretrained(wider / "unet")
    message = refusal(capsys, "--checkpoint", str(WEIGHTS), "--base", str(wider), "--output", str(tmp_path / "o3"))
    assert "do not fit the base" in message and "attn2.to_k" in message


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys, unet_io):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--overwrite" in refusal(capsys, "--checkpoint", str(CHECKPOINTS), "--output", str(out))
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["--checkpoint", str(CHECKPOINTS), "--output", str(out), "--overwrite", "true"]) == 0
    assert not (out / "keep.txt").exists()
    assert_is_the_release(out, unet_io)


def test_the_command_line_refuses_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.convert_official", "--checkpoint", str(tmp_path), "--base", str(BASE), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("python -m training.convert_official: error:")
