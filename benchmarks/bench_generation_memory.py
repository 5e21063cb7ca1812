"""Peak memory and time of generation with each memory option, against plain generation measured in the same run.

    python -m benchmarks.bench_generation_memory [--frames 16] [--size 256] [--rounds 3] [--device auto]

Every setup is the same tiny random SD-shaped pipeline (``FollowYourPosePipeline``, 4 DDIM steps, classifier-free
guidance, a pose) in its own process (:mod:`benchmarks.timing`): its peak memory is its own, what a run has in use
at its peak (:func:`benchmarks.timing.memory_in_use`, a separate pass whose freed memory goes straight back to the
system; ``max_memory_allocated`` on GPU), with the timed processes' resident-set growth beside it. Setups: ``plain``, ``vae_slicing`` (one frame decoded at a
time), ``vae_tiling`` (with tiles of half the frame, so they engage at this size), ``bfloat16`` weights, and
``model_offload`` (diffusers' model CPU offload). On a CPU the offload has nothing to offload to: its figure only
shows what it costs; the GPU memory it saves needs a GPU to measure.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SETUPS = ("plain", "vae_slicing", "vae_tiling", "bfloat16", "model_offload")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What the benchmark measures."""

    frames: int = 16
    """Frames per video (one window)."""
    size: int = 256
    """Frame side in pixels (a multiple of 64)."""
    steps: int = 4
    """DDIM steps."""
    rounds: int = 3
    """Interleaved rounds per setup, after one warm-up each."""
    shape: str = "tiny"
    """UNet shape (:data:`benchmarks.tiny_pipeline.SHAPES`): tiny, sd-scaled or sd."""
    device: str = "auto"
    """Torch device; auto picks cuda when available."""

    def __post_init__(self) -> None:
        from benchmarks.tiny_pipeline import check_shape

        check_shape(self.shape)


def generation_run(setup: str, base: str, config: BenchConfig):
    """Build the pipeline of ``setup`` (in a worker process) and return one generation to time."""
    import torch

    from benchmarks.tiny_pipeline import build_pipeline, swaying_poses
    from pose_extraction.estimator import resolve_device

    device = torch.device(resolve_device(config.device))
    pipe = build_pipeline(base, torch.bfloat16 if setup == "bfloat16" else torch.float32)
    if setup == "vae_slicing":
        pipe.enable_vae_slicing()
    if setup == "vae_tiling":
        pipe.enable_vae_tiling()
        pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = config.size // 2, config.size // 16
    if setup == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    poses = swaying_poses(config.frames, config.size)

    def run() -> None:
        pipe("a person dancing", poses, num_inference_steps=config.steps, guidance_scale=7.5, window_size=config.frames,
             generator=torch.Generator().manual_seed(0), output_type="np")  # fmt: skip

    return run


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import Worker, interleave, memory_in_use, pair_ratio, start
    from benchmarks.tiny_pipeline import save_base

    config = start(BenchConfig, argv, prog="python -m benchmarks.bench_generation_memory", doc=__doc__)
    with tempfile.TemporaryDirectory() as folder:
        base = str(save_base(Path(folder) / "base", config.shape, config.size))
        workers = {setup: Worker(generation_run, (setup, base, config)) for setup in SETUPS}
        results = interleave(workers, pairs=config.rounds)
        in_use = {setup: memory_in_use(generation_run, (setup, base, config)) for setup in SETUPS}
    plain = results["plain"]
    print(f"\n{config.frames} frames of {config.size}x{config.size}, {config.steps} DDIM steps with guidance")
    print(f"{'setup':>14} {'s/video median (min-max)':>26} {'in use MiB (min-max)':>24} {'resident':>9} {'time / plain':>13} {'memory / plain':>15}")
    for setup, timings in results.items():
        print(f"{setup:>14} {str(timings.wall_spread):>26} {str(in_use[setup]):>24} {timings.peak_mib:>9.1f} "
              f"{pair_ratio(timings, plain).median:>13.2f} {in_use[setup].median / max(in_use['plain'].median, 1e-6):>15.2f}")  # fmt: skip
    return 0

if __name__ == "__main__":
    sys.exit(main())
