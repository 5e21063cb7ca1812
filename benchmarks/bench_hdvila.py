"""HD-VILA clip builder and clip reader throughput, with ratios measured in the same run.

    .venv/bin/python benchmarks/bench_hdvila.py [--videos 3] [--seconds 20] [--clip-seconds 5] [--size 256] [--epochs 5]

1. Cutting, one process, the builder's own stage (:class:`ClipCutter`) on
   synthetic 640x360 30 fps H.264 sources: clips/s and seconds of video per
   second for frame-exact cuts (decode, resize + crop to ``--size``, x264
   re-encode) versus the keyframe-aligned stream copy.
2. Reading: the exact clips are written as a shard; :class:`ClipDataset`
   (8 frames at stride 4, frames already at ``--size``) is timed in frames/s
   against plain decord reading the same mp4 files from disk with the same
   frame indices (the ratio is the reader's overhead: tar streaming, JSON,
   tensor conversion).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def make_sources(folder: Path, videos: int, seconds: int) -> list[str]:
    """Moving gradients with noise (so the encoder has work to do), 640x360 at 30 fps, keyframe every 2 s."""
    from datasets.video_io import VideoWriter

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:360, 0:640]
    ids = []
    for v in range(videos):
        video_id = f"bench{v}"
        with VideoWriter(folder / f"{video_id}.mp4", 30, crf=23, preset="veryfast", options={"g": "60"}) as writer:
            for i in range(seconds * 30):
                image = np.stack([(xs + 3 * i) % 256, (ys + 2 * i + 40 * v) % 256, (xs + ys - i) % 256], axis=2).astype(np.uint8)
                writer.write(np.clip(image.astype(np.int16) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8))
        ids.append(video_id)
    return ids


def write_metadata(path: Path, ids: list[str], seconds: int, clip_seconds: int) -> None:
    def stamp(t: int) -> str:
        return f"00:{t // 60:02d}:{t % 60:02d}.000"

    with open(path, "w") as handle:
        for video_id in ids:
            spans = [[stamp(t), stamp(t + clip_seconds)] for t in range(0, seconds - clip_seconds + 1, clip_seconds)]
            clips = [{"clip_id": f"{video_id}.{i}", "span": span} for i, span in enumerate(spans)]
            handle.write(json.dumps({"video_id": video_id, "url": "", "clip": clips}) + "\n")


def time_cutting(metadata: Path, videos: Path, out: Path, cut) -> tuple[float, int, float]:
    """Seconds, kept clips and kept seconds of video for one shard built by the real shard code."""
    from pipelines.hdvila.config import SourceConfig
    from pipelines.hdvila.metadata import VideoIndex, iter_videos
    from pipelines.hdvila.planning import ClipPlanner
    from pipelines.hdvila.shard import build_shard
    from pipelines.hdvila.stages import ClipCutter

    source = SourceConfig(metadata=str(metadata), videos=str(videos), clips_per_shard=10_000)
    plans = list(ClipPlanner(source, VideoIndex.scan(source.videos)).plan(iter_videos(source.metadata)))
    started = time.perf_counter()
    stats = [build_shard(plan, out, ClipCutter(cut, source)) for plan in plans]
    elapsed = time.perf_counter() - started
    return elapsed, sum(s["counts"]["kept"] for s in stats), sum(s["kept_seconds"] for s in stats)


def time_reading(clips: Path, size: int, epochs: int) -> tuple[float, float]:
    """frames/s of ClipDataset and of plain decord on the same files and frame indices, epochs interleaved."""
    import cv2  # noqa: F401  # before decord (see datasets.clips.decode_frames)
    import decord
    import webdataset as wds

    from datasets.clip_reader import ClipDataset, ClipDatasetConfig
    from datasets.clips import shard_paths

    files = clips.parent / "decord-files"
    files.mkdir()
    for sample in wds.WebDataset([str(p) for p in shard_paths(clips)], shardshuffle=False, empty_check=False):
        (files / f"{sample['__key__']}.mp4").write_bytes(sample["mp4"])
    dataset = ClipDataset(ClipDatasetConfig(root=str(clips), num_frames=8, frame_stride=4, resolution=size, start="random"))
    for _ in dataset:  # warm-up: lazy imports (torch.distributed, decord) and the page cache
        pass
    frames, dataset_time, decord_time = 0, 0.0, 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        picks, started = [], time.perf_counter()
        for sample in dataset:
            frames += sample["pixel_values"].shape[0]
            picks.append((sample["key"], sample["frame_indices"].tolist()))
        dataset_time += time.perf_counter() - started
        started = time.perf_counter()
        for key, indices in picks:
            decord.VideoReader(str(files / f"{key}.mp4"), ctx=decord.cpu(0), num_threads=1).get_batch(indices).asnumpy()
        decord_time += time.perf_counter() - started
    return frames / dataset_time, frames / decord_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clip-seconds", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    from pipelines.hdvila.config import CutConfig
    from pipelines.hdvila.shard import build_shard  # noqa: F401 - import (webdataset, torch) before any timing

    with tempfile.TemporaryDirectory(prefix="bench-hdvila-") as temp:
        root = Path(temp)
        (root / "videos").mkdir()
        ids = make_sources(root / "videos", args.videos, args.seconds)
        write_metadata(root / "meta.jsonl", ids, args.seconds, args.clip_seconds)
        print(f"sources: {args.videos} x {args.seconds} s of 640x360 at 30 fps; clips of {args.clip_seconds} s; --size {args.size}")
        exact = time_cutting(root / "meta.jsonl", root / "videos", root / "exact", CutConfig(size=args.size))
        copy = time_cutting(root / "meta.jsonl", root / "videos", root / "copy", CutConfig(mode="copy"))
        for name, (elapsed, clips, seconds) in {"exact": exact, "copy": copy}.items():
            print(f"cut {name:5s}: {clips} clips in {elapsed:.2f} s = {clips / elapsed:.2f} clips/s, {seconds / elapsed:.1f} s of video/s")
        print(f"stream copy / exact: {(copy[1] / copy[0]) / (exact[1] / exact[0]):.1f}x clips/s")
        dataset_fps, decord_fps = time_reading(root / "exact", args.size, args.epochs)
    print(f"read ClipDataset: {dataset_fps:.0f} frames/s; plain decord on the same files: {decord_fps:.0f} frames/s")
    print(f"ClipDataset / plain decord: {dataset_fps / decord_fps:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
