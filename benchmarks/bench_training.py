"""Training throughput and peak memory of the ``tiny`` preset, per stage, with and without gradient
checkpointing, beside the data loader's throughput alone.

    .venv/bin/python benchmarks/bench_training.py [--steps 12] [--threads N]

Each configuration runs in its own process (so peak memory is its own) through the real training
loop (:class:`training.loop.Trainer`: data loader, VAE/text encoding, forward, backward, optimiser
step) on synthetic shards in the real formats. Peak memory is the peak resident set over the steps
minus the resident set once the models are loaded (on CUDA: ``torch.cuda.max_memory_allocated``
minus what was allocated before the first step): activations, gradients and optimiser state.
Threads default to 1: on a shared 2-core machine torch's spinning OpenMP threads collapse under
oversubscription (``--threads 2`` measured 10-25x slower here while other jobs ran).
The loader is timed alone with the preset's worker count; the target is loader samples/s >= 3x
training samples/s (the loader is never the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def make_data(root: Path) -> tuple[Path, Path]:
    from training.synthetic import write_clips, write_laion_pose

    images = root / "laion-pose"
    clips = root / "clips"
    if not images.exists():
        write_laion_pose(images, 96, size=96, per_shard=32, seed=0)
    if not clips.exists():
        write_clips(clips, 24, size=64, frames=12, per_shard=8, seed=0)
    return images, clips


def measure(stage_number: int, checkpointing: bool, steps: int, root: Path, resolution: int | None = None) -> dict:
    """Run in a child process: time ``steps`` optimiser steps after two warm-up steps, then the loader alone."""
    import torch

    from training.presets import preset
    from training.loop import Trainer
    from training.stages import PoseImageStage, VideoStage

    images, clips = make_data(root)
    config = preset(stage_number, "tiny")
    output = root / f"stage{stage_number}-{int(checkpointing)}"
    init = {}
    if stage_number == 2:
        init = {"init": str(root / "stage1-0")}
    config = replace(
        config, output_dir=str(output), gradient_checkpointing=checkpointing, max_steps=10_000,
        model=replace(config.model, pretrained=str(root / "tiny-base"), **init),
        data=replace(config.data, root=str(images if stage_number == 1 else clips), resolution=resolution or config.data.resolution),
        log=replace(config.log, progress_bar=False, report_to="none"),
    )
    trainer = Trainer(config, PoseImageStage(config) if stage_number == 1 else VideoStage(config))
    cuda = trainer.accelerator.device.type == "cuda"
    window = {"loss": 0.0, "micro": 0, "samples": 0, "start": 0.0}
    batches = iter(_forever(trainer))
    baseline = _rss_mb("VmRSS")  # models loaded, nothing trained yet: the peak below is activations, grads, optimiser
    _reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    for _ in range(2):
        trainer.micro_step(next(batches), window)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.micro_step(next(batches), window)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb("VmHWM")) - baseline
    samples = steps * config.batch_size
    loader_rate = loader_throughput(trainer, batches=max(steps, 16))
    if stage_number == 1 and not checkpointing:
        trainer.export()  # stage 2 starts from this
    return {
        "stage": stage_number, "checkpointing": checkpointing, "batch": config.batch_size,
        "train_samples_per_s": samples / elapsed, "steps_per_s": steps / elapsed, "peak_mb": peak,
        "loader_samples_per_s": loader_rate, "workers": config.data.num_workers, "device": str(trainer.accelerator.device),
        "resolution": config.data.resolution,
    }


def _forever(trainer):
    epoch = 0
    while True:
        trainer.sampler.set_position(epoch, 0)
        yield from trainer.loader
        epoch += 1


def loader_throughput(trainer, batches: int) -> float:
    """Samples/s of the training DataLoader alone (fresh iterator, workers started inside the timing)."""
    trainer.sampler.set_position(7, 0)
    start, seen = time.perf_counter(), 0
    iterator = iter(_forever(trainer))
    for _ in range(batches):
        seen += len(next(iterator)["caption"])
    return seen / (time.perf_counter() - start)


def run_child(stage_number: int, checkpointing: bool, steps: int, root: Path, threads: int, resolution: int | None) -> dict:
    command = [sys.executable, __file__, "--child", f"{stage_number},{int(checkpointing)}", "--steps", str(steps), "--root", str(root)]
    if resolution:
        command += ["--resolution", str(resolution)]
    command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--resolution", type=int, default=None, help="override the tiny preset's 64 px (a multiple of 64), e.g. 256 to see activation memory")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        stage_number, checkpointing = (int(v) for v in args.child.split(","))
        print(json.dumps(measure(stage_number, bool(checkpointing), args.steps, Path(args.root), args.resolution)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        from follow_your_pose.tiny import save_tiny_sd

        save_tiny_sd(root / "tiny-base")
        make_data(root)
        rows = [run_child(s, c, args.steps, root, args.threads, args.resolution) for s in (1, 2) for c in (False, True)]
    print(
        f"tiny preset at {rows[0]['resolution']} px, {args.steps} timed steps per row, device {rows[0]['device']}, "
        f"threads {args.threads or 'torch default'}"
    )
    header = f"{'stage':>5} {'grad ckpt':>9} {'batch':>5} {'train samples/s':>15} {'peak MB':>8} {'loader samples/s':>16} {'loader/train':>12}"
    print(header)
    for row in rows:
        ratio = row["loader_samples_per_s"] / row["train_samples_per_s"]
        print(
            f"{row['stage']:>5} {'on' if row['checkpointing'] else 'off':>9} {row['batch']:>5} "
            f"{row['train_samples_per_s']:>15.2f} {row['peak_mb']:>8.1f} {row['loader_samples_per_s']:>16.1f} {ratio:>11.1f}x"
        )
    for stage_number in (1, 2):
        off, on = (r for r in rows if r["stage"] == stage_number)
        print(
            f"stage {stage_number}: checkpointing costs {off['train_samples_per_s'] / on['train_samples_per_s']:.2f}x time, "
            f"peak memory {on['peak_mb']:.1f} vs {off['peak_mb']:.1f} MB"
        )
    worst = min(r["loader_samples_per_s"] / r["train_samples_per_s"] for r in rows)
    print(f"loader/train ratio, worst row: {worst:.1f}x (target >= 3x): {'met' if worst >= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
