"""Pose model throughput on this machine: MediaPipe images/s, HRNet-w32 crops/s at batch 1 vs 16.

    python benchmarks/bench_pose.py [--crops 32] [--mediapipe-passes 5] [--flip-test] [--device auto] [--threads N]

MediaPipe runs on the real photos the tests use (scikit-image astronaut and
camera, matplotlib grace_hopper). HRNet-w32 (the shipped COCO 256x192 config,
random weights: speed does not depend on the values) runs on ``--crops``
person boxes of those photos through :meth:`MMPoseEstimator.estimate_in_boxes`,
once with ``batch_size=1`` and once with ``batch_size=16``; the ratio of the two
is the gain of batching. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class PoseBenchConfig:
    """What to measure."""

    mediapipe_passes: int = 5
    """Timed passes of MediaPipe over the three photos (after one warm-up pass)."""
    crops: int = 32
    """Person boxes sent through HRNet per timed run."""
    batch_sizes: tuple[int, ...] = (1, 16)
    """HRNet batch sizes to compare; the first is the baseline of the ratio."""
    flip_test: bool = False
    """Run HRNet with flip test (the shipped config's default; doubles its cost)."""
    device: str = "auto"
    """Torch device for HRNet (``auto``: cuda when there is one)."""
    skip_mediapipe: bool = False
    """Measure HRNet only."""
    threads: int | None = None
    """Torch CPU threads (None keeps torch's default). 1 avoids OpenMP thrashing on a machine shared with other jobs."""

    def __post_init__(self) -> None:
        if self.mediapipe_passes < 1 or self.crops < 1:
            raise ValueError("mediapipe_passes and crops must be at least 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch_sizes must be positive")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")


def photos() -> list[np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        grace = np.asarray(Image.open(handle).convert("RGB"))
    camera = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
    return [skimage.data.astronaut(), camera, grace]


def bench_mediapipe(config: PoseBenchConfig, images: list[np.ndarray]) -> float:
    """Images per second of the MediaPipe backend."""
    from pose_extraction.backends import PoseConfig, build_estimator

    with build_estimator(PoseConfig(backend="mediapipe")) as estimator:
        estimator(images)
        start = time.perf_counter()
        for _ in range(config.mediapipe_passes):
            estimator(images)
        seconds = time.perf_counter() - start
    return config.mediapipe_passes * len(images) / seconds


def person_boxes(images: list[np.ndarray], crops: int) -> list[np.ndarray]:
    """``crops`` boxes spread over the photos: the upper body and shifted/shrunk variants of it."""
    rng = np.random.default_rng(0)
    boxes: list[list[np.ndarray]] = [[] for _ in images]
    for index in range(crops):
        which = index % len(images)
        height, width = images[which].shape[:2]
        x1, y1 = rng.uniform(0, width * 0.3), rng.uniform(0, height * 0.3)
        x2, y2 = rng.uniform(width * 0.6, width), rng.uniform(height * 0.6, height)
        boxes[which].append(np.float32([x1, y1, x2, y2]))
    return [np.stack(b) if b else np.zeros((0, 4), np.float32) for b in boxes]


def bench_hrnet(config: PoseBenchConfig, images: list[np.ndarray], batch_size: int) -> float:
    """Crops per second of HRNet-w32 at ``batch_size`` (whole top-down path: crop, forward, decode)."""
    from pose_extraction.backends import PoseConfig, build_estimator

    pose_config = PoseConfig.of(
        "mmpose",
        device=config.device,
        batch_size=batch_size,
        whole_image_when_no_detector=True,
        allow_random_weights=True,
        pose_cfg_options={"model.test_cfg.flip_test": config.flip_test},
    )
    boxes = person_boxes(images, config.crops)
    with build_estimator(pose_config) as estimator:
        estimator.estimate_in_boxes(images, [b[:batch_size] for b in boxes])  # warm-up
        start = time.perf_counter()
        estimator.estimate_in_boxes(images, boxes)
        seconds = time.perf_counter() - start
    return config.crops / seconds


def parse_config(argv: list[str] | None) -> PoseBenchConfig:
    defaults = PoseBenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mediapipe-passes", type=int, default=defaults.mediapipe_passes)
    parser.add_argument("--crops", type=int, default=defaults.crops)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(defaults.batch_sizes))
    parser.add_argument("--flip-test", action="store_true")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--skip-mediapipe", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    return PoseBenchConfig(
        mediapipe_passes=args.mediapipe_passes,
        crops=args.crops,
        batch_sizes=tuple(args.batch_sizes),
        flip_test=args.flip_test,
        device=args.device,
        skip_mediapipe=args.skip_mediapipe,
        threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    import torch

    from pose_extraction.estimator import resolve_device

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    images = photos()
    print(f"torch threads {torch.get_num_threads()}, HRNet device {resolve_device(config.device)}, flip test {config.flip_test}")
    if not config.skip_mediapipe:
        print(f"mediapipe/blazepose-full: {bench_mediapipe(config, images):.1f} images/s")
    rates = {}
    for batch_size in config.batch_sizes:
        rates[batch_size] = bench_hrnet(config, images, batch_size)
        print(f"hrnet-w32 256x192, batch {batch_size:>2}: {rates[batch_size]:.2f} crops/s")
    baseline = config.batch_sizes[0]
    for batch_size in config.batch_sizes[1:]:
        print(f"batch {batch_size} / batch {baseline}: {rates[batch_size] / rates[baseline]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
