"""Training configs and their command line, presets, and the loop's small parts (optimiser, timesteps, loss
weighting, the stage contract): no model runs here beyond a few tensors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from training.entry import parse_config
from training.config import SD14, ConfigError
from training.presets import preset
from training.stages import PoseImageStage, VideoStage


def parse1(argv: list[str]):
    return parse_config(argv, stage=1, prog="stage1", description="")


def parse2(argv: list[str]):
    return parse_config(argv, stage=2, prog="stage2", description="")



def test_every_field_is_a_flag_with_dotted_flat_and_alias_names():
    config = parse1([
        "--preset", "paper", "--data", "/d", "--output", "/o", "--max-steps", "7", "--optim.lr", "1e-4",
        "--weight-decay", "0", "--ema", "--data.crop-scale", "0.3", "0.9", "--validation.prompts", "a", "b c",
        "--model.revision", "none", "--mixed_precision", "bf16", "--data.random-flip", "false", "--pose-levels", "0", "2",
    ])
    assert (config.data.root, config.output_dir, config.max_steps) == ("/d", "/o", 7)
    assert config.optim.lr == 1e-4 and config.optim.weight_decay == 0.0 and config.ema is True
    assert config.data.crop_scale == (0.3, 0.9) and config.validation.prompts == ("a", "b c")
    assert config.model.revision is None and config.mixed_precision == "bf16" and config.data.random_flip is False
    assert config.model.pose_levels == (0, 2)
    assert config.model.pretrained == SD14  # untouched preset value


def test_each_stage_takes_only_its_own_model_options(capsys):
    """Stage 2 has no pose-injection or stage-0 option and stage 1 no video design: a stray one stops the parse."""
    for parse, flag in ((parse2, ["--model.pose-injection", "concat"]), (parse2, ["--model.autoencoder-steps", "3"]),
                        (parse1, ["--model.inflation", "release"]), (parse1, ["--init", "/x"])):  # fmt: skip
        with pytest.raises(SystemExit) as stopped:
            parse(["--preset", "tiny", "--data", "/d", "--output", "/o", *flag])
        assert stopped.value.code == 2 and flag[0] in capsys.readouterr().err
    assert parse2(["--preset", "tiny", "--model.inflation", "release"]).model.inflation == "release"


def test_presets_hold_the_paper_and_release_settings():
    one, two = preset(1, "paper"), preset(2, "paper")
    assert (one.max_steps, two.max_steps) == (100_000, 50_000)
    assert one.model.pretrained == SD14 and one.data.resolution == two.data.resolution == 512
    assert (one.optim.lr, one.batch_size, one.gradient_accumulation_steps) == (1e-5, 8, 2)
    assert (two.optim.lr, two.optim.betas, two.optim.weight_decay, two.optim.max_grad_norm) == (3e-5, (0.9, 0.999), 1e-2, 1.0)
    assert (two.data.num_frames, two.data.frame_stride, two.batch_size) == (8, 4, 1)
    tiny = preset(1, "tiny")
    assert tiny.data.resolution == 64 and tiny.max_steps <= 100 and tiny.model.pretrained == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'; valid presets: paper, tiny"),
        (["--lr", "-1"], "lr must be positive"),
        (["--data.crop-scale", "0.9", "0.2"], "crop_scale"),
        (["--data.cache-latents", "true"], "cache_latents needs the same crop of an image every epoch"),
        (["--mixed-precision", "fp8"], None),  # argparse: invalid choice
    ],
)
def test_invalid_values_are_refused(argv, message):
    if message is None:
        with pytest.raises(SystemExit):
            parse1(argv)
    else:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            parse1(argv)


def test_fused_adamw_on_cpu_makes_the_same_update():
    from training.optimizers import make_optimizer

    def step(fused: bool) -> tuple[torch.optim.Optimizer, torch.Tensor]:
        weight = torch.nn.Parameter(torch.linspace(-1, 1, 64))
        optimizer = make_optimizer(parse1(["--optim.fused", str(fused).lower(), "--lr", "0.01"]), [weight])
        for _ in range(3):
            (weight**3).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        return optimizer, weight.detach()

    (fused, a), (plain, b) = step(True), step(False)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, torch.linspace(-1, 1, 64))


def test_timestep_sampling_uniform_and_cubic():
    from training.stages import sample_timesteps

    generator = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(20_000, 1000, generator, "cpu", "uniform").float()
    cubic = sample_timesteps(20_000, 1000, generator, "cpu", "cubic").float()
    assert 0 <= min(uniform.min(), cubic.min()) and max(uniform.max(), cubic.max()) <= 999
    assert abs(uniform.mean().item() - 499.5) < 10
    assert abs(cubic.mean().item() - 750) < 10  # E[1 - u^3] = 3/4: noisy steps favoured, as T2I-Adapter does
    assert abs((cubic >= 500).float().mean().item() - 0.5 ** (1 / 3)) < 0.02  # P(u^3 <= 1/2)


def test_loss_weighting_by_snr():
    from diffusers import DDPMScheduler

    from follow_your_pose.tiny import SD14_SCHEDULER

    scheduler = DDPMScheduler(**{k: v for k, v in SD14_SCHEDULER.items() if k not in ("set_alpha_to_one",)})
    prediction, target = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(3, 4, 2, 2)
    timesteps = torch.tensor([10, 500, 990])
    per_sample = prediction.pow(2).flatten(1).mean(1)
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)

    def loss(weighting: str) -> float:
        stage = PoseImageStage(replace(preset(1, "tiny"), loss_weighting=weighting, snr_gamma=5.0))
        stage.base = {"noise_scheduler": scheduler}
        return stage.weighted_mse(prediction, target, timesteps).item()

    assert loss("none") == pytest.approx(per_sample.mean().item())
    assert snr[0] > 5 > snr[2], "the test spans both sides of gamma"
    assert loss("min_snr") == pytest.approx((per_sample * snr.clamp(max=5) / snr).mean().item(), rel=1e-5)
    assert loss("x0") == pytest.approx((per_sample * (1 / snr).clamp(min=1)).mean().item(), rel=1e-5)
    assert loss("x0") > 10 * loss("none"), "x0 weighting stresses the noisiest steps"
    with pytest.raises(ConfigError):
        replace(preset(1, "tiny"), snr_gamma=0.0)


def test_every_stage_meets_the_loop_contract():
    from training.base_stage import BaseImageStage
    from training.protocol import Stage

    for stage_class, stage in ((BaseImageStage, 0), (PoseImageStage, 1), (VideoStage, 2)):
        assert isinstance(stage_class(preset(stage, "tiny")), Stage), stage_class.__name__
    assert not issubclass(BaseImageStage, PoseImageStage)  # stage 0 composes the shared helpers, it does not borrow stage 1
