"""Evaluation speed per metric against a short decode-and-score script, the metric alone and the bare CLIP forward pass.

    python -m benchmarks.bench_evaluation [--videos 2] [--frames 16] [--size 256] [--batch 16] [--pairs 5]

Builds, in a temporary folder, generated-video triples from a real photo of a person (scikit-image's astronaut,
drifting) and a CLIP with the shape of ViT-B/32 but random weights (built from the config, saved, loaded back
through ``--clip-model``: the same cost per frame as the real one). Then, per metric row, these setups each in
its own process (:mod:`benchmarks.timing`: one warm-up, which loads the models, then interleaved for ``--pairs``
rounds; min/median/max, CPU seconds, peak memory):

- ``evaluator``: :func:`evaluation.evaluator.evaluate_folder` on the folder (decode, checks against the record and
  the pose video, metrics, state cache, 1000-resample bootstrap, results.json), its models kept loaded between
  repeats;
- ``decode+metric``: what a user would write instead, a short script: each video decoded with PyAV in the plainest
  way (``frame.to_ndarray(format="rgb24")`` per frame), its record read, then the metric's ``update`` on every
  video and ``compute``. Target: evaluator time / decode+metric <= 1.25;
- ``metrics``: the metric alone, its ``update`` on every video already decoded, then ``compute``. Target:
  evaluator time / metric alone <= 1.25 (the evaluator keeps >= 80% of the metric's speed);
- ``bare-clip`` (rows using CLIP): CLIP image forward passes alone on preprocessed batches of as many frames,
  the floor of any CLIP metric.

The verdict of a model metric's row is against the metric alone (decoding is a few percent of its time); the
verdict of a model-free row (``temporal_flickering``, ``warping_error``) is against decode+metric: the metric alone
runs on frames already decoded, which leaves out the decoding every use of such a metric pays (for flicker, a 4 ms
metric, nearly all there is to measure), so that ratio is printed for what it is, without a verdict.

Also printed: the share of the evaluator's time in model forward passes (target >= 80% for the model metrics),
over the whole run and over its per-video loop (without pooling and bootstrap, a fixed cost per run), and the
evaluator's own stage timers (medians over the timed repeats).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchmarks.timing import TorchRoundsConfig

ROWS = (("clip",), ("frame_consistency",), ("clip", "frame_consistency"), ("pose_ap",), ("temporal_flickering",), ("warping_error",))
CLIP_METRICS = ("clip", "frame_consistency")
MODEL_FREE = ("temporal_flickering", "warping_error")
"""Metrics without a model: their row's verdict is against decode+metric (see the module doc)."""


def make_videos(folder: Path, videos: int, frames: int, size: int) -> None:
    import skimage.data
    from PIL import Image

    from datasets.generated import make_record, write_record
    from evaluation.video_io import write_video
    from pose_extraction.backends import PoseConfig, build_estimator
    from pose_extraction.skeleton import render_sequence

    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((size, size)))
    estimator = build_estimator(PoseConfig(backend="mediapipe"))
    try:
        for index in range(videos):
            clip = np.stack([np.roll(photo, (index + 1) * t, axis=1) for t in range(frames)])
            keypoints = [p.keypoints for p in estimator(list(clip))]
            video = write_video(folder / f"video{index:03d}.mp4", clip, fps=8)
            write_video(folder / f"video{index:03d}.pose.mp4", render_sequence(keypoints, size, size), fps=8)
            record = make_record(prompt=f"an astronaut waving, take {index}", keypoints_per_frame=keypoints,
                                 width=size, height=size, frames=frames, fps=8, model="bench", settings={})
            write_record(video, record)
    finally:
        estimator.close()


def make_clip(folder: Path) -> Path:
    """A CLIP with ViT-B/32's architecture (random weights) and the real tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from follow_your_pose.tiny import build_clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(text_config={}, vision_config={"patch_size": 32}, projection_dim=512)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=build_clip_tokenizer())
    processor.save_pretrained(folder)
    return folder


def eval_config(metrics: tuple[str, ...], clip_dir: str, batch: int):
    from evaluation.config import EvalConfig
    from pose_extraction.backends import PoseConfig

    return EvalConfig(metrics=metrics, clip_model=clip_dir, clip_batch_size=batch, resume=False, report=False,
                      bootstrap=1000, pose=PoseConfig(backend="mediapipe"), pose_frames_per_call=batch)  # fmt: skip


def evaluation_run(setup: str, metrics: tuple[str, ...], root: str, frames: int, batch: int, threads: int):
    """Build ``setup`` (in a worker process) and return one repeat. The evaluator appends its time shares to
    ``root/shares-<metrics>.jsonl``, one line per repeat (the warm-up's first)."""
    import torch

    from evaluation.metrics import MetricContext, build_metrics
    from evaluation.sample import load_sample, scan_videos

    if threads:
        torch.set_num_threads(threads)
    folder, clip_dir = Path(root) / "videos", str(Path(root) / "clip")
    if setup == "bare-clip":
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(clip_dir).eval()
        pixels = torch.randn(batch, 3, 224, 224)

        def bare() -> None:
            with torch.inference_mode():
                for _ in range(0, frames, batch):
                    model.get_image_features(pixel_values=pixels)

        return bare
    context = MetricContext(eval_config(metrics, clip_dir, batch))  # lives as long as the worker: models stay loaded
    if setup in ("metrics", "decode+metric"):
        paths = scan_videos(folder)
        decoded = [load_sample(path) for path in paths] if setup == "metrics" else None
        scorers = build_metrics(metrics, context)

        def score() -> None:
            context._image_cache = None  # a repeat starts cold, like the evaluator's first video
            samples = decoded or [plain_sample(path) for path in paths]
            for metric in scorers:
                metric.prepare()
                metric.compute([metric.safe_update(sample) for sample in samples])

        return score
    from evaluation.evaluator import evaluate_folder

    shares = Path(root) / f"shares-{'+'.join(metrics)}.jsonl"

    def evaluate() -> None:
        context.timings.clear()
        context._image_cache = None
        start = time.perf_counter()
        results = evaluate_folder(folder, Path(root) / f"out-{'+'.join(metrics)}", context.config, context)
        with shares.open("a") as handle:
            handle.write(json.dumps({"wall": time.perf_counter() - start, **results["timings"]}) + "\n")

    return evaluate


def plain_sample(path: Path):
    """A generated video as a short script would read it: PyAV, one ``to_ndarray`` per frame, the record's JSON."""
    import av

    from evaluation.sample import VideoSample

    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    record = json.loads(path.with_suffix(".json").read_text())
    return VideoSample(key=path.stem, path=path, pose_path=None, record=record, frames=frames)


def time_shares(timings: dict) -> tuple[float, float]:
    """Share of forward passes over the run's wall time and over its per-video loop (model loading excluded)."""
    def total(prefix: str) -> float:
        return sum(v for k, v in timings.items() if k.startswith(prefix))

    whole = timings["wall"] - total("load/")
    loop = whole - total("bootstrap/") - total("compute/")
    return total("forward/") / max(whole, 1e-9), total("forward/") / max(loop, 1e-9)


def compare_row(metrics: tuple[str, ...], root: Path, args) -> None:
    from benchmarks.timing import Worker, interleave, pair_ratio, verdict

    setups = ["evaluator", "decode+metric", "metrics"] + (["bare-clip"] if any(m in CLIP_METRICS for m in metrics) else [])
    frames = args.videos * args.frames
    workers = {s: Worker(evaluation_run, (s, metrics, str(root), frames, args.batch, args.threads)) for s in setups}
    results = interleave(workers, pairs=args.pairs)
    name = "+".join(metrics)
    print(f"\n== {name}: {frames} frames per repeat ==")
    print(f"{'setup':>13} {'s/repeat median (min-max)':>26} {'CPU s':>7} {'frames/s':>9} {'peak MiB':>9}")
    for setup, timings in results.items():
        print(f"{setup:>13} {str(timings.wall_spread):>26} {timings.cpu_spread.median:>7.3f} "
              f"{frames / timings.wall_spread.median:>9.1f} {timings.peak_mib:>9.1f}")  # fmt: skip
    model_free = all(m in MODEL_FREE for m in metrics)
    peer = pair_ratio(results["evaluator"], results["decode+metric"])
    alone = pair_ratio(results["evaluator"], results["metrics"])
    print(f"{name}: evaluator / decode+metric time {peer}  {verdict(peer.median, 1.25)}"
          f"{'  (the verdict of this model-free row)' if model_free else ''}")  # fmt: skip
    if model_free:
        print(f"{name}: evaluator / metric alone time {alone}  (on frames already decoded; no verdict: decoding is "
              f"part of any use of a model-free metric)")  # fmt: skip
    else:
        print(f"{name}: evaluator / metric alone time {alone}  {verdict(alone.median, 1.25)}  (the verdict of this row)")
    if "bare-clip" in results:
        print(f"{name}: evaluator / bare CLIP forward time {pair_ratio(results['evaluator'], results['bare-clip'])}")
    lines = (root / f"shares-{name}.jsonl").read_text().splitlines()[1:]  # the first is the warm-up
    timings = [json.loads(line) for line in lines]
    for t in timings:  # what no stage timer covers: record reading, fingerprints, state cache, results.json, progress bar
        t["other"] = t["wall"] - sum(v for k, v in t.items() if k != "wall" and not k.startswith("load/"))
    stages = {key: float(np.median([t.get(key, 0.0) for t in timings])) for key in timings[0] if not key.startswith("load/")}
    print(f"{name}: evaluator stages, median s: " + ", ".join(f"{key} {value:.4f}" for key, value in stages.items()))
    if any(k.startswith("forward/") for k in timings[0]):
        whole, loop = (float(np.median(values)) for values in zip(*(time_shares(t) for t in timings)))
        print(f"{name}: forward share {whole:.0%} of the evaluator's time, {loop:.0%} of its per-video loop  "
              f"{verdict(whole, 0.8, at_most=False)}")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class EvaluationBenchConfig(TorchRoundsConfig):
    """What to measure."""

    videos: int = 2
    """Generated videos scored per repeat (at least 2: FVD and the bootstrap need two)."""
    frames: int = 16
    """Frames per video."""
    size: int = 256
    """Frame side in pixels."""
    batch: int = 16
    """CLIP frames per forward pass (and pose frames per call)."""
    metrics: tuple[str, ...] | None = None
    """Rows to measure, named as the table prints them (None: all)."""

    def __post_init__(self) -> None:
        if min(self.videos, self.frames, self.batch, self.pairs) < 1 or self.videos < 2 or self.size < 64 or self.threads < 0:
            raise ValueError("videos must be at least 2, frames, batch and pairs at least 1, size at least 64, threads at least 0")
        rows = ["+".join(row) for row in ROWS]
        unknown = [name for name in self.metrics or () if name not in rows]
        if unknown:
            raise ValueError(f"unknown metrics row(s) {', '.join(unknown)}; choose from {', '.join(rows)}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import start

    args = start(EvaluationBenchConfig, argv, prog="python -m benchmarks.bench_evaluation", doc=__doc__)
    root = Path(tempfile.mkdtemp(prefix="bench_evaluation_"))
    try:
        (root / "videos").mkdir()
        make_videos(root / "videos", args.videos, args.frames, args.size)
        make_clip(root / "clip")
        print(f"{args.videos} videos x {args.frames} frames at {args.size}x{args.size}; CLIP ViT-B/32 shape (random), batch {args.batch}")
        for metrics in ROWS:
            if args.metrics is None or "+".join(metrics) in args.metrics:
                compare_row(metrics, root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
