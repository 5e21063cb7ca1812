"""Stage 0 (toy base model) end to end on toy-world shards, and stage 1 on top of its export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.entry import parse_config
from training.config import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(make_toy_world) -> Path:
    return make_toy_world(images=8, images_per_shard=4) / "images"


def common(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--preset", "toy", "--data", str(data), "--output", str(output), "--batch-size", "2", "--data.num-workers", "0",
        "--log.progress-bar", "false", "--log.report-to", "none", *extra,
    ]  # fmt: skip


def test_presets_of_stage_zero():
    config = parse_config(["--preset", "toy"], stage=0, prog="stage0", description="")
    assert type(config).__name__ == "Stage0Config" and config.model.tiny_vae_log_variance == -12.0
    assert config.model.calibrate_latent_scale and config.data.resolution == 32
    assert config.model.tiny_vae_channels == (32, 32) and config.model.autoencoder_steps > 0
    assert parse_config(["--preset", "toy"], stage=1, prog="stage1", description="").data.crop_scale == (1.0, 1.0)
    with pytest.raises(ConfigError, match="toy scale only"):
        parse_config(["--preset", "paper"], stage=0, prog="stage0", description="")


def test_stage_zero_trains_the_whole_unet_and_stage_one_loads_its_export(images, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from training import stage0, stage1

    out0 = tmp_path / "stage0"
    result = stage0.main(common(images, out0, "--max-steps", "3", "--validation.every", "3", "--validation.num-inference-steps", "2",
                                "--model.autoencoder-steps", "3"))  # fmt: skip
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
    assert vae.config.block_out_channels == [32, 32], "the toy preset's 2-level VAE (16x16 latents at 32x32)"
    record = json.loads((out0 / "tiny-base" / "autoencoder.json").read_text())
    assert record["steps"] == 3 and record["final_loss"] > 0

    out1 = tmp_path / "stage1"
    stage1.main(common(images, out1, "--model.pretrained", str(model), "--max-steps", "2", "--validation.every", "-1"))
    base = json.loads((out1 / "model" / "base.json").read_text())
    assert Path(base["pretrained"]) == model.resolve()
    assert (out1 / "model" / "pose_encoder").is_dir() and not (out1 / "tiny-base").exists()


def _toy_pixels(images: Path, size: int = 32) -> torch.Tensor:
    from PIL import Image

    from datasets.laion_pose import iter_samples

    pictures = [Image.fromarray(s.image).resize((size, size), Image.BILINEAR) for s in iter_samples(images)]
    return torch.stack([torch.from_numpy(np.asarray(p)).permute(2, 0, 1) for p in pictures]).float() / 127.5 - 1


def test_autoencoder_learns_the_toy_images_and_replaces_the_base_vae(images, tmp_path, one_torch_thread):
    from diffusers import AutoencoderKL

    from training import autoencoder
    from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

    base = save_tiny_sd(tmp_path / "base", TinySDConfig(vae_channels=(32, 32), sample_size=32, vae_log_variance=-12.0))
    pixels = _toy_pixels(images)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    assert vae.encode(pixels[:1]).latent_dist.mean.shape == (1, 4, 16, 16), "VAE factor 2"

    def error(model) -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model.decode(model.encode(pixels).latent_dist.mean).sample, pixels).item()

    before = error(vae)
    record = autoencoder.train_into_base(vae, base, lambda i: pixels[i], len(pixels), steps=80, lr=2e-3, batch_size=8, seed=0)
    after = error(AutoencoderKL.from_pretrained(base, subfolder="vae"))
    assert after < 0.6 * before, f"reconstruction error {before:.3f} -> {after:.3f}"
    assert autoencoder.is_trained(base) and record["steps"] == 80
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".")) == [], "no temporary folder left"


def test_autoencoder_swap_interrupted_midway_is_repaired(tmp_path):
    from training import autoencoder
    from follow_your_pose.tiny import TinySDConfig, save_tiny_sd

    base = save_tiny_sd(tmp_path / "base", TinySDConfig(vae_channels=(32, 32), sample_size=32))
    original = (base / "vae" / "config.json").read_text()
    (base / "vae").replace(base / ".vae-random")  # killed after moving the random VAE aside...
    (base / ".vae-trained").mkdir()  # ...before the trained one (incomplete) was moved in
    autoencoder.repair(base)
    assert (base / "vae" / "config.json").read_text() == original
    assert not (base / ".vae-random").exists() and not (base / ".vae-trained").exists()
    assert not autoencoder.is_trained(base), "a repaired base trains again"
