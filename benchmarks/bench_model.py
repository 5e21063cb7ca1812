"""Speed and memory of the Follow-Your-Pose model against a baseline measured in the same run.

    python -m benchmarks.bench_model [--frames 8 16] [--latent-size 32] [--gen-frames 16 32 64] [--device auto]

1. Stage-2 training step (forward + backward, base frozen, temporal parts trainable) of our inflated
   UNet, of the same UNet in the release's design (low-rank temporal conv, clip-wide GroupNorm, its
   trainable set) and of diffusers' AnimateDiff ``UNetMotionModel`` built from the same 2D UNet
   (``UNetMotionModel.from_unet2d`` with a ``MotionAdapter`` of matching widths), and ours with cross-frame attention
   from level 1 (``--level1-variant``: per-frame self-attention at full latent resolution), for each frame
   count: seconds per step as min/median/max of ``--repeats`` interleaved rounds (:mod:`benchmarks.timing`),
   CPU seconds, peak memory, and each design's ratio to AnimateDiff (target: <= 1; the time ratio is the
   median of per-round wall ratios; the per-round CPU ratio beside it is steadier on a busy machine). Each model lives in its own process, so its peak memory is its own;
   the verdict is on the memory a step has in use at its peak (:func:`benchmarks.timing.memory_in_use`: a process
   whose freed memory goes straight back to the system; ``max_memory_allocated`` on GPU), the timed processes'
   resident-set growth is printed beside it.
2. Generation (pipeline, pose-guided, CFG) seconds per frame for each ``--gen-frames`` length
   with the noise-reuse windows; the ratio longest / shortest shows flatness (each window of T
   frames yields T/2 new ones, so UNet calls per frame tend to 2/T: a ratio near the printed
   "ideal" is flat).

The models are random SD-1.x-shaped ones (``--shape``, :data:`benchmarks.tiny_pipeline.SHAPES`). The default,
``sd-scaled``, is SD 1.4 at a quarter of its widths, whose attention and per-token layers weigh in a step at 32x32
latents as SD's do at the paper's 512x512; ``tiny`` (the tests' model) overweights attention 2.5x; ``sd`` is SD 1.4's
own widths (``--shape sd --latent-size 64`` on a GPU).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tiny_pipeline import check_shape


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What the benchmark measures."""

    frames: tuple[int, ...] = (8, 16)
    """Clip lengths for the training-step comparison."""
    latent_size: int = 32
    """Latent side for the training step (pixels / 8)."""
    gen_frames: tuple[int, ...] = (16, 32, 64)
    """Video lengths for the generation benchmark."""
    gen_latent_size: int = 16
    """Latent side for generation."""
    steps: int = 4
    """DDIM steps per window in the generation benchmark."""
    window: int = 8
    """Frames per window in the generation benchmark."""
    repeats: int = 5
    """Interleaved rounds per training-step comparison (after one warm-up each; at least 5); the generation runs once
    per length."""
    shape: str = "sd-scaled"
    """UNet shape: sd-scaled (SD 1.4's proportions at a quarter of its widths), tiny (the tests' model) or sd."""
    device: str = "auto"
    """Torch device; auto picks cuda when available."""
    skip_generation: bool = False
    """Only run the training-step comparison."""
    level1_variant: bool = True
    """Also measure ours with ``cross_frame_from_level=1`` (per-frame self-attention at full latent resolution), the
    option that trades the finest level's cross-frame link for speed."""

    def __post_init__(self) -> None:
        if not self.frames or min(self.frames) < 2 or not self.gen_frames or min(self.gen_frames) < 1:
            raise ValueError("frames must be >= 2 and gen_frames >= 1")
        if self.latent_size % 8 or self.gen_latent_size % 8:
            raise ValueError("latent sizes must be multiples of 8")
        if self.repeats < 5 or self.steps < 1 or self.window < 2:
            raise ValueError("repeats must be >= 5 (interleaved pairs), steps positive, window >= 2")
        check_shape(self.shape)


def _device(name: str):
    import torch

    from pose_extraction.estimator import resolve_device

    return torch.device(resolve_device(name))


MODELS = ("ours", "ours_level1", "release", "animatediff")


def _build(kind: str, base: str, device):
    import torch
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    from follow_your_pose.models import InflatedUNet, freeze_for_stage2
    from follow_your_pose.models.inflated_unet import RELEASE_STAGE2_TRAINABLE, InflationConfig

    torch.manual_seed(0)
    if kind in ("ours", "ours_level1"):
        model = InflatedUNet.from_pretrained(base, subfolder="unet").inflate(InflationConfig(cross_frame_from_level=int(kind != "ours")))
        freeze_for_stage2(model)
    elif kind == "release":
        model = InflatedUNet.from_pretrained(base, subfolder="unet").inflate(InflationConfig.release())
        freeze_for_stage2(model, trainable_set=RELEASE_STAGE2_TRAINABLE)
    else:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        adapter = MotionAdapter(
            block_out_channels=tuple(unet.config.block_out_channels), motion_layers_per_block=unet.config.layers_per_block,
            motion_num_attention_heads=unet.config.attention_head_dim, motion_norm_num_groups=unet.config.norm_num_groups,
            motion_max_seq_length=64,
        )  # fmt: skip
        model = UNetMotionModel.from_unet2d(unet, motion_adapter=adapter)
        model.freeze_unet2d_params()
    return model.to(device).train()


def training_step(kind: str, base: str, frames: int, latent: int, device_name: str):
    """Build ``kind`` (in a benchmark worker process) and return its forward + backward step on a clip of ``frames``."""
    import torch

    device = _device(device_name)
    model = _build(kind, base, device)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, frames, latent, latent, generator=generator).to(device)
    text = torch.randn(1, 77, model.config.cross_attention_dim, generator=generator).to(device)
    timestep = torch.tensor([500], device=device)
    if kind == "animatediff":  # UNetMotionModel takes the text per frame (its pipeline repeats it)
        text = text.repeat_interleave(frames, dim=0)

    def step() -> None:
        model(sample, timestep, encoder_hidden_states=text).sample.square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def compare_training(base: str, config: BenchConfig) -> None:
    """Ours (and its level-1 variant), the release's design and AnimateDiff, each in its own process, interleaved,
    per frame count; then each one's memory in use (:func:`benchmarks.timing.memory_in_use`)."""
    from benchmarks.timing import Spread, Worker, interleave, memory_in_use, pair_ratio, verdict

    device = str(_device(config.device))
    kinds = [kind for kind in MODELS if config.level1_variant or kind != "ours_level1"]
    print(f"{'frames':>6} {'model':>12} {'s/step median (min-max)':>26} {'CPU s/step':>11} {'in use MiB':>11} {'resident':>9}")
    for frames in config.frames:
        setup = {kind: (kind, base, frames, config.latent_size, config.device) for kind in kinds}
        results = interleave({kind: Worker(training_step, args, device=device) for kind, args in setup.items()}, pairs=config.repeats)
        in_use = {kind: memory_in_use(training_step, args, device=device).median for kind, args in setup.items()}
        for kind, timings in results.items():
            print(f"{frames:>6} {kind:>12} {str(timings.wall_spread):>26} {timings.cpu_spread.median:>11.3f} {in_use[kind]:>11.1f} {timings.peak_mib:>9.1f}")
        reference = results["animatediff"]
        for kind in (kind for kind in kinds if kind != "animatediff"):
            time_ratio = pair_ratio(results[kind], reference)
            memory_ratio = in_use[kind] / max(in_use["animatediff"], 1e-6)
            cpu_ratio = Spread(tuple(x / y for x, y in zip(results[kind].cpu, reference.cpu)))
            print(f"{frames:>6} {kind + '/AD':>12} time {time_ratio} ({verdict(time_ratio.median, 1.0)}), "
                  f"CPU {cpu_ratio}, memory in use {memory_ratio:.2f} ({verdict(memory_ratio, 1.0)})")  # fmt: skip
        print(f"{'':>6} load average after {frames} frames: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def measure_generation(base: str, config: BenchConfig) -> list[dict]:
    import torch

    from benchmarks.tiny_pipeline import build_pipeline, swaying_poses

    pipe = build_pipeline(base).to(_device(config.device))
    poses = swaying_poses(max(config.gen_frames), config.gen_latent_size * 8)
    results = []
    for index, frames in enumerate((min(config.gen_frames), *config.gen_frames)):  # the first run warms up
        start = time.perf_counter()
        pipe("a person dancing", poses[:frames], num_inference_steps=config.steps, guidance_scale=7.5,
             window_size=config.window, generator=torch.Generator().manual_seed(0), output_type="np")  # fmt: skip
        if index:
            results.append({"frames": frames, "seconds_per_frame": (time.perf_counter() - start) / frames})
    return results


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import start
    from follow_your_pose.long_video import plan_windows
    from benchmarks.tiny_pipeline import save_base

    config = start(BenchConfig, argv, prog="python -m benchmarks.bench_model", doc=__doc__)
    with tempfile.TemporaryDirectory() as folder:
        sample = max(64, -(-max(config.latent_size, config.gen_latent_size) * 8 // 64) * 64)
        base = str(save_base(Path(folder) / "base", config.shape, sample))
        print("\n== stage-2 training step (forward + backward): ours, the release's design, AnimateDiff UNetMotionModel ==")
        compare_training(base, config)
        if not config.skip_generation:
            print(f"\n== generation, {config.steps} DDIM steps, CFG, window {config.window} (noise reuse of window/2) ==")
            results = measure_generation(base, config)
            for row in results:
                calls = len(plan_windows(row["frames"], config.window))
                print(f"{row['frames']:>6} frames  {row['seconds_per_frame']:.3f} s/frame   ({calls} windows)")
            first, last = results[0], results[-1]
            ideal = (len(plan_windows(last["frames"], config.window)) / last["frames"]) / (
                len(plan_windows(first["frames"], config.window)) / first["frames"]
            )
            ratio = last["seconds_per_frame"] / first["seconds_per_frame"]
            print(f"s/frame ratio {last['frames']} vs {first['frames']} frames: {ratio:.2f} (windows-per-frame ratio: {ideal:.2f}; flat means bounded, not growing with length)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
