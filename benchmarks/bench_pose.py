"""Pose extraction against the pose backend alone, measured in the same run: MediaPipe and HRNet-w32.

    python -m benchmarks.bench_pose [--crops 32] [--pairs 5] [--batch-size 16] [--flip-test] [--threads 1] [--device auto]

Every setup lives in its own process (:mod:`benchmarks.timing`: warm-up, then the setups interleaved for
``--pairs`` rounds; min/median/max, CPU seconds, peak memory) and sees the same inputs:

1. MediaPipe on the real photos the tests use (scikit-image astronaut and camera, matplotlib grace_hopper):
   our estimator (``build_estimator(PoseConfig(backend="mediapipe"))``: checks, COCO-17 mapping, boxes,
   scores) against the backend alone, MediaPipe's own ``solutions.pose.Pose(...).process`` on each photo,
   the call a user would write without us. Target: our time / MediaPipe's <= 1.1 (our glue costs at most 10%).
2. HRNet-w32 (the shipped COCO 256x192 config, random weights: speed does not depend on the values) on
   ``--crops`` person boxes of those photos: :meth:`MMPoseEstimator.estimate_in_boxes` with
   ``batch_size=--batch-size`` (crops of all photos batched together) and with ``batch_size=1``, against
   the backend alone, MMPose's own ``mmpose.apis.inference_topdown`` per photo with its boxes (one forward
   per photo) on the same model. Target: our batched time / MMPose's <= 1.1; batch 1 is printed beside it
   (what batching gains on this device).

Torch runs on ``--threads`` threads in every worker (default 1: on a shared 2-core machine torch's spinning
OpenMP threads collapse under oversubscription).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from benchmarks.timing import TorchRoundsConfig


@dataclass(frozen=True, kw_only=True)
class PoseBenchConfig(TorchRoundsConfig):
    """What to measure."""

    crops: int = 32
    """Person boxes sent through HRNet per timed repeat."""
    batch_size: int = 16
    """HRNet crops per forward pass of our batched run."""
    flip_test: bool = False
    """Run HRNet with flip test (the shipped config's default; doubles its cost)."""
    device: str = "auto"
    """Torch device for HRNet (``auto``: cuda when there is one)."""
    skip_mediapipe: bool = False
    """Measure HRNet only."""
    skip_hrnet: bool = False
    """Measure MediaPipe only."""

    def __post_init__(self) -> None:
        if self.crops < 1 or self.batch_size < 1 or self.pairs < 1 or self.threads < 0:
            raise ValueError("crops, batch size and pairs must be at least 1, threads at least 0")


def photos() -> list[np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        grace = np.asarray(Image.open(handle).convert("RGB"))
    camera = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
    return [skimage.data.astronaut(), camera, grace]


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


def mediapipe_run(setup: str, threads: int):
    """Build ``ours`` or ``mediapipe`` (in a worker process) and return one pass over the photos."""
    _set_threads(threads)
    images = photos()
    if setup == "ours":
        from pose_extraction.backends import PoseConfig, build_estimator

        estimator = build_estimator(PoseConfig(backend="mediapipe"))
        return lambda: estimator(images)
    import mediapipe as mp

    pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)
    return lambda: [pose.process(image) for image in images]


def hrnet_run(setup: str, config: PoseBenchConfig):
    """Build HRNet for ``setup`` (``ours``, ``ours-batch1`` or ``mmpose``) and return one pass over the crops."""
    _set_threads(config.threads)
    from pose_extraction.backends import PoseConfig, build_estimator

    pose_config = PoseConfig.of(
        "mmpose", device=config.device, batch_size=1 if setup == "ours-batch1" else config.batch_size,
        whole_image_when_no_detector=True, allow_random_weights=True,
        pose_cfg_options={"model.test_cfg.flip_test": config.flip_test},
    )  # fmt: skip
    estimator = build_estimator(pose_config)
    images, boxes = photos(), person_boxes(photos(), config.crops)
    if setup != "mmpose":
        return lambda: estimator.estimate_in_boxes(images, boxes)
    from mmpose.apis import inference_topdown  # importable once the estimator has set up mmcv's ops

    bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # what MMPose's API takes
    return lambda: [inference_topdown(estimator.pose_model, image, b, bbox_format="xyxy") for image, b in zip(bgr, boxes)]


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def compare(title: str, workers: dict, pairs: int, unit: str, count: int, target: float) -> None:
    """Interleave ``workers`` (the first is ours, the last the backend alone) and print their figures."""
    from benchmarks.timing import interleave, pair_ratio, verdict

    results = interleave(workers, pairs=pairs)
    print(f"\n== {title} ==")
    print(f"{'setup':>12} {'s/pass median (min-max)':>26} {'CPU s/pass':>11} {unit + '/s':>10} {'peak MiB':>9}")
    for name, timings in results.items():
        print(f"{name:>12} {str(timings.wall_spread):>26} {timings.cpu_spread.median:>11.3f} "
              f"{count / timings.wall_spread.median:>10.2f} {timings.peak_mib:>9.1f}")  # fmt: skip
    names = list(results)
    baseline = results[names[-1]]
    for name in names[:-1]:
        ratio = pair_ratio(results[name], baseline)
        line = f"time {name} / {names[-1]}: {ratio} (median of per-round ratios)"
        print(line + (f"  {verdict(ratio.median, target)}" if name == names[0] else ""))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import Worker, start

    config = start(PoseBenchConfig, argv, prog="python -m benchmarks.bench_pose", doc=__doc__)
    if not config.skip_mediapipe:
        workers = {setup: Worker(mediapipe_run, (setup, config.threads)) for setup in ("ours", "mediapipe")}
        compare("MediaPipe BlazePose full, 3 photos per pass: our estimator vs MediaPipe alone", workers, config.pairs,
                "images", len(photos()), 1.1)  # fmt: skip
    if not config.skip_hrnet:
        from pose_extraction.estimator import resolve_device

        device = resolve_device(config.device)
        workers = {setup: Worker(hrnet_run, (setup, config), device=device) for setup in ("ours", "ours-batch1", "mmpose")}
        compare(f"HRNet-w32 256x192 on {device}, {config.crops} crops per pass, flip test {config.flip_test}: "
                f"ours at batch {config.batch_size} and 1 vs MMPose's inference_topdown", workers, config.pairs,
                "crops", config.crops, 1.1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
