"""The training loop against a bare loop and against its data loader alone, per stage of the ``tiny`` preset,
with and without gradient checkpointing, all measured in the same run.

    python -m benchmarks.bench_training [--steps 8] [--pairs 5] [--threads 1] [--resolution 64]

Per stage, four setups, each in its own process (:mod:`benchmarks.timing`: warm-up, then interleaved for
``--pairs`` rounds; min/median/max, CPU seconds, peak memory), each built the same way on synthetic shards
in the real formats and timed over ``--steps`` optimiser steps (or batches) per repeat:

- ``trainer``: the real training loop (:meth:`training.loop.Trainer.micro_step` on the loader's batches:
  accelerate, loss gather and finiteness check, gradient clipping, optimiser and lr scheduler);
- ``trainer+ckpt``: the same with gradient checkpointing (its time and memory against ``trainer``);
- ``bare``: the loop a user would write with diffusers and torch alone (no earlier benchmark had one; this is
  the peer chosen for it): the same modules and the same stage loss (VAE and text encoding, diffusers
  scheduler noise, forward, MSE), ``loss.backward()`` and a plain ``torch.optim.AdamW`` step, on batches
  held in memory. Target: trainer time / bare <= 1.1 (the loop's own cost, loader included, at most 10%);
- ``loader``: the training DataLoader alone with the preset's workers. Target: trainer time / loader time
  >= 3 (the loader is never the bottleneck).

Peak memory: resident-set growth over the repeats once the models are loaded (on CUDA
``max_memory_allocated``): activations, gradients and optimiser state. Threads default to 1: on a shared
2-core machine torch's spinning OpenMP threads collapse under oversubscription.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from benchmarks.timing import TorchRoundsConfig

SETUPS = ("trainer", "trainer+ckpt", "bare", "loader")


def make_data(root: Path) -> tuple[Path, Path]:
    from training.synthetic import write_clips, write_laion_pose

    images = root / "laion-pose"
    clips = root / "clips"
    if not images.exists():
        write_laion_pose(images, 96, size=96, per_shard=32, seed=0)
    if not clips.exists():
        write_clips(clips, 24, size=64, frames=12, per_shard=8, seed=0)
    return images, clips


def build_trainer(stage_number: int, setup: str, root: Path, resolution: int | None = None):
    """The real :class:`Trainer` of the tiny preset for ``setup`` (its own output folder; stage 2 starts from stage 1's)."""
    from training.presets import preset
    from training.loop import Trainer
    from training.stages import PoseImageStage, VideoStage

    images, clips = make_data(root)
    config = preset(stage_number, "tiny")
    output = root / f"stage{stage_number}-{setup}"
    init = {}
    if stage_number == 2:
        init = {"init": str(root / "stage1-export")}
    config = replace(
        config, output_dir=str(output), gradient_checkpointing=setup == "trainer+ckpt", max_steps=10_000,
        model=replace(config.model, pretrained=str(root / "tiny-base"), **init),
        data=replace(config.data, root=str(images if stage_number == 1 else clips), resolution=resolution or config.data.resolution),
        log=replace(config.log, progress_bar=False, report_to="none"),
    )
    return Trainer(config, PoseImageStage(config) if stage_number == 1 else VideoStage(config))


def _forever(trainer):
    epoch = 0
    while True:
        trainer.sampler.set_position(epoch, 0)
        yield from trainer.loader
        epoch += 1


def training_run(stage_number: int, setup: str, root: str, steps: int, threads: int, resolution: int | None):
    """Build ``setup`` (in a worker process) and return one repeat: ``steps`` optimiser steps, or loader batches."""
    import multiprocessing

    import torch

    multiprocessing.set_start_method("fork", force=True)  # the DataLoader's, as in a training run (spawned: inherited)
    if threads:
        torch.set_num_threads(threads)
    trainer = build_trainer(stage_number, setup, Path(root), resolution)
    batches = iter(_forever(trainer))
    if setup == "loader":
        return lambda: [next(batches) for _ in range(steps)]
    if setup != "bare":
        window = {"loss": 0.0, "micro": 0, "samples": 0, "start": 0.0}
        return lambda: [trainer.micro_step(next(batches), window) for _ in range(steps)]
    held = [next(batches) for _ in range(steps)]
    stage, model = trainer.stage, trainer.stage.trainable_module()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=trainer.config.optim.lr)
    generator = torch.Generator(device=trainer.accelerator.device).manual_seed(0)

    def bare() -> None:
        for batch in held:
            stage.loss(model, batch, generator, trainer.config.timestep_sampling).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return bare


def export_stage1(root: str, resolution: int | None) -> None:
    """Stage 1's export (untrained: speed does not depend on the weights), which every stage-2 setup starts from."""
    trainer = build_trainer(1, "export", Path(root), resolution)
    trainer.export()
    trainer.release()


def compare_stage(stage_number: int, root: Path, args) -> None:
    import multiprocessing

    from benchmarks.timing import interleave_setups, pair_ratio, print_timings, verdict

    if stage_number == 2:  # in a process of its own, like every setup
        process = multiprocessing.get_context("spawn").Process(target=export_stage1, args=(str(root), args.resolution))
        process.start()
        process.join()
    run_args = (str(root), args.steps, args.threads, args.resolution)
    setups = {setup: (stage_number, setup, *run_args) for setup in SETUPS}
    results = interleave_setups(training_run, setups, args.pairs, daemon=False)  # their DataLoaders start processes
    print(f"\n== stage {stage_number}: {args.steps} optimiser steps (loader: batches) per repeat ==")
    print_timings(results)
    trainer = results["trainer"]
    bare, loader, ckpt = (pair_ratio(trainer, results[name]) for name in ("bare", "loader", "trainer+ckpt"))
    print(f"stage {stage_number}: trainer / bare loop time {bare}  {verdict(bare.median, 1.1)}")
    print(f"stage {stage_number}: trainer / loader alone time {loader}  {verdict(loader.median, 3.0, at_most=False)}")
    print(f"stage {stage_number}: gradient checkpointing costs {1 / ckpt.median:.2f}x time; peak memory "
          f"{results['trainer+ckpt'].peak_mib:.1f} vs {trainer.peak_mib:.1f} MiB")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TrainingBenchConfig(TorchRoundsConfig):
    """What to measure."""

    steps: int = 8
    """Optimiser steps (loader: batches) per timed repeat."""
    resolution: int | None = None
    """Override the tiny preset's 64 px (a multiple of 64), e.g. 256 to see activation memory."""
    stages: tuple[Literal[1, 2], ...] = (1, 2)
    """The training stages to measure."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.pairs < 1 or self.threads < 0 or (self.resolution is not None and (self.resolution < 64 or self.resolution % 64)):
            raise ValueError("steps and pairs must be at least 1, threads at least 0, resolution a positive multiple of 64")


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from benchmarks.timing import start
    from follow_your_pose.tiny import save_tiny_sd

    args = start(TrainingBenchConfig, argv, prog="python -m benchmarks.bench_training", doc=__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        save_tiny_sd(root / "tiny-base")
        make_data(root)
        for stage_number in sorted(args.stages):
            compare_stage(stage_number, root, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
