"""Stage 0 (toy base model) end to end on toy-world shards, and stage 1 on top of its export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.arguments import parse_config
from training.config import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from pipelines import build_toy_world

    output = tmp_path_factory.mktemp("toy0") / "world"
    code = build_toy_world.main([
        "--output", str(output), "--preset", "smoke", "--size", "64", "--images", "8", "--images-per-shard", "4",
        "--clips", "1", "--clips-per-shard", "1", "--clip-frames", "8", "--eval-videos", "1", "--eval-long-videos", "1",
        "--workers", "1",
    ])  # fmt: skip
    assert code == 0
    return output / "images"


def common(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--preset", "toy", "--data", str(data), "--output", str(output), "--batch-size", "2", "--data.num-workers", "0",
        "--log.progress-bar", "false", "--log.report-to", "none", *extra,
    ]  # fmt: skip


def test_presets_of_stage_zero():
    config = parse_config(["--preset", "toy"], stage=0, prog="stage0", description="")
    assert type(config).__name__ == "Stage0Config" and config.model.tiny_vae_log_variance == -12.0
    assert config.model.calibrate_latent_scale and config.data.resolution == 64
    assert parse_config(["--preset", "toy"], stage=1, prog="stage1", description="").data.crop_scale == (1.0, 1.0)
    with pytest.raises(ConfigError, match="toy scale only"):
        parse_config(["--preset", "paper"], stage=0, prog="stage0", description="")


def test_stage_zero_trains_the_whole_unet_and_stage_one_loads_its_export(images, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from training import stage0, stage1

    out0 = tmp_path / "stage0"
    result = stage0.main(common(images, out0, "--max-steps", "3", "--validation.every", "3", "--validation.num-inference-steps", "2"))
    model = out0 / "model"
    assert result.export_dir == model and (model / "model_index.json").is_file()
    assert any((out0 / "samples").rglob("images.png")), "validation drew images without a pose"
    random = UNet2DConditionModel.from_pretrained(out0 / "tiny-base", subfolder="unet")
    trained = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    changed = [
        name for (name, a), (_, b) in zip(random.named_parameters(), trained.named_parameters()) if not torch.equal(a, b)
    ]
    assert len(changed) > 0.9 * len(list(random.parameters())), "the whole UNet trains, not a part of it"
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
    assert vae.config.scaling_factor != pytest.approx(0.18215) and vae.config.scaling_factor > 0
    assert torch.all(vae.quant_conv.bias[4:] == -12.0), "near-deterministic posterior"

    out1 = tmp_path / "stage1"
    stage1.main(common(images, out1, "--model.pretrained", str(model), "--max-steps", "2", "--validation.every", "-1"))
    base = json.loads((out1 / "model" / "base.json").read_text())
    assert Path(base["pretrained"]) == model.resolve()
    assert (out1 / "model" / "pose_encoder").is_dir() and not (out1 / "tiny-base").exists()
