"""Stage 2 in the release's design, and stage 2 trained on from the converted release weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.entry import parse_config
from training.presets import preset
from training.loop import Trainer
from training.stages import VideoStage

BUNDLE = Path(__file__).parent / "fixtures" / "official_bundle"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Two shared cores (see conftest)."""


@pytest.fixture(scope="module")
def clip_data(make_toy_world) -> Path:
    return make_toy_world(images=2, images_per_shard=2, clips=2, clips_per_shard=2) / "clips"


@pytest.fixture(scope="module")
def release_model(tmp_path_factory) -> Path:
    from follow_your_pose.convert import ConvertConfig, convert

    return convert(ConvertConfig(checkpoint=str(BUNDLE / "checkpoints"), output=str(tmp_path_factory.mktemp("release") / "model")))


def config_for(init: Path, data: Path, output: Path, *extra: str):
    argv = [
        "--preset", "tiny", "--init", str(init), "--data", str(data), "--output", str(output), "--max-steps", "2",
        "--data.num-frames", "4", "--data.frame-stride", "1", "--data.num-workers", "0", "--log.progress-bar", "false",
        "--log.report-to", "none", "--validation.every", "-1", "--checkpoint.every", "0", *extra,
    ]  # fmt: skip
    return parse_config(argv, stage=2, prog="stage2", description="")


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def test_the_paper_preset_trains_the_release_design():
    assert preset(2, "paper").model.inflation == "release"
    assert preset(2, "tiny").model.inflation == "default"


def test_stage2_trains_on_from_the_release_weights_and_its_export_is_interchangeable(release_model, clip_data, tmp_path):
    from follow_your_pose.models.inflated_unet import InflationConfig, load_inflated
    from follow_your_pose.pipeline import FollowYourPosePipeline

    config = config_for(release_model, clip_data, tmp_path / "run", "--model.inflation", "release")
    stage = VideoStage(config)
    trainer = Trainer(config, stage)
    release_unet = FollowYourPosePipeline.from_export(release_model).unet
    before = state(stage.unet)
    assert all(torch.equal(before[k], v) for k, v in state(release_unet).items())  # starts from the release's weights
    assert stage.unet.inflation == InflationConfig.release()
    trainer.run()
    after = state(stage.unet)
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(stage.trainable_names())
    assert not any(".temporal_attention.norm." in k for k in stage.trainable_names())  # frozen, as in the release
    assert any(".temporal_conv.down." in k for k in changed) and any(".attn2.to_q." in k for k in changed)
    exported = load_inflated(tmp_path / "run" / "model" / "unet")
    assert exported.inflation == InflationConfig.release()
    assert all(torch.equal(exported.state_dict()[k], after[k]) for k in after)


def test_an_init_of_another_design_is_refused_naming_the_flag(release_model, clip_data, tmp_path, capsys):
    from training import stage2

    argv = ["--preset", "tiny", "--init", str(release_model), "--data", str(clip_data), "--output", str(tmp_path / "run"),
            "--data.num-workers", "0", "--log.report-to", "none"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        stage2.main(argv)
    assert exit_info.value.code == 2
    assert "--model.inflation release --model.cross-frame-from-level 0" in capsys.readouterr().err
    # the right design at another cross-frame level is another design too
    with pytest.raises(SystemExit) as exit_info:
        stage2.main([*argv, "--model.inflation", "release", "--model.cross-frame-from-level", "1"])
    assert exit_info.value.code == 2
    assert "--model.inflation release --model.cross-frame-from-level 0" in capsys.readouterr().err
