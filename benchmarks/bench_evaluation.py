"""Evaluation speed: frames per second per metric, and where the time goes.

    .venv/bin/python benchmarks/bench_evaluation.py [--videos 4] [--frames 16] [--size 512]

Builds, in a temporary folder, generated-video triples from a real photo of a
person (scikit-image's astronaut, drifting) and a CLIP with the shape of
ViT-B/32 but random weights (built from the config, saved, loaded back through
``--clip-model``: the same cost per frame as the real one), then runs the
evaluator once per metric. For each it prints frames/s (model loading excluded)
and the share of time in model forward passes versus decoding, preprocessing and
bookkeeping (target: forward >= 80% for the model metrics). The baseline,
measured in the same run, is the bare CLIP image forward pass on preprocessed
batches: the ratio says how close the whole metric gets to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


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


def bare_forward_fps(clip_dir: Path, frames: int, batch: int) -> float:
    """Baseline: CLIP image forward passes alone, on already preprocessed batches."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        model.get_image_features(pixel_values=pixels)  # warm-up
        start = time.perf_counter()
        done = 0
        while done < frames:
            model.get_image_features(pixel_values=pixels)
            done += batch
    return done / (time.perf_counter() - start)


def run_metric(metrics: tuple[str, ...], videos: Path, out: Path, clip_dir: Path, batch: int) -> dict:
    from evaluation.config import EvalConfig
    from evaluation.evaluator import evaluate_folder
    from pose_extraction.backends import PoseConfig

    config = EvalConfig(metrics=metrics, clip_model=str(clip_dir), clip_batch_size=batch, resume=False, report=False,
                        bootstrap=1000, pose=PoseConfig(backend="mediapipe"), pose_frames_per_call=batch)
    start = time.perf_counter()
    results = evaluate_folder(videos, out, config)
    wall = time.perf_counter() - start
    timings = results["timings"]
    def total(prefix: str) -> float:
        return sum(v for k, v in timings.items() if k.startswith(prefix))

    load, forward, pooled = total("load/"), total("forward/"), total("bootstrap/") + total("compute/")
    frames = sum(v["frames"] for v in results["videos"])
    per_video = wall - load - pooled
    return {"metrics": "+".join(metrics), "frames": frames, "seconds": wall - load, "fps": frames / (wall - load),
            "forward_share": forward / (wall - load), "forward_share_per_video": forward / per_video,
            "decode_share_per_video": timings.get("decode", 0.0) / per_video, "pooled_seconds": pooled,
            "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_evaluation_"))
    try:
        videos = root / "videos"
        videos.mkdir()
        make_videos(videos, args.videos, args.frames, args.size)
        clip_dir = make_clip(root / "clip-vit-b32-random")
        rows = []
        for index, metrics in enumerate([("clip",), ("frame_consistency",), ("clip", "frame_consistency"),
                                         ("pose_ap",), ("temporal_flickering",), ("warping_error",)]):
            # the machine is shared: measure the baseline right before the row it is compared with
            uses_clip = any(m in ("clip", "frame_consistency") for m in metrics)
            baseline = bare_forward_fps(clip_dir, args.videos * args.frames, args.batch) if uses_clip else None
            rows.append({**run_metric(metrics, videos, root / f"out{index}", clip_dir, args.batch), "baseline_fps": baseline})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.videos} videos x {args.frames} frames at {args.size}x{args.size}; CLIP ViT-B/32 shape, batch {args.batch}")
    print("forward: share of time in model forward passes, over the whole run (model loading excluded) and over")
    print("the per-video loop (without pooling + 1000-resample bootstrap, a fixed cost per run); decode: share of")
    print("the per-video loop spent decoding mp4s; vs bare: frames/s against bare CLIP image forward passes on")
    print("preprocessed batches (the baseline), measured right before the row; bare: that baseline in frames/s")
    print(f"{'metrics':26s} {'frames/s':>9s} {'forward':>8s} {'per-video':>10s} {'decode':>7s} {'pool+CI s':>10s} {'bare':>6s} {'vs bare':>8s}")
    for row in rows:
        model = any(k.startswith("forward/") for k in row["timings"])
        share = f"{100 * row['forward_share']:.0f}%" if model else "-"
        loop = f"{100 * row['forward_share_per_video']:.0f}%" if model else "-"
        bare = row["baseline_fps"]
        ratio = f"{row['fps'] / bare:.2f}x" if bare else ""
        print(f"{row['metrics']:26s} {row['fps']:9.1f} {share:>8s} {loop:>10s} {100 * row['decode_share_per_video']:6.0f}% "
              f"{row['pooled_seconds']:10.2f} {f'{bare:.1f}' if bare else '':>6s} {ratio:>8s}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
