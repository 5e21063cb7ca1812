"""HD-VILA clip builder and clip reader throughput, against the tools a user would reach for instead, in the same run.

    .venv/bin/python -m benchmarks.bench_hdvila [--videos 3] [--seconds 20] [--clip-seconds 5] [--size 256] [--pairs 5]

1. One clip, ours against the ffmpeg command line: the span ``--span`` (1-6 s) of a 1768x994 30 fps VP9
   source (made once with the ffmpeg CLI from lavfi ``testsrc2`` + noise, cached in the temp dir) and of a
   640x360 30 fps H.264 source, cut into a frame-exact ``--fps`` (8) ``--size`` (256) H.264 clip. Ours is
   what the builder does per video: open, probe, :func:`exact_cut` to mp4 bytes. The peer is one process of

       ffmpeg -ss START -to END -i SRC -vf fps=8,scale=256:256:force_original_aspect_ratio=increase,crop=256:256
              -c:v libx264 -crf 20 -preset fast -g 8 -pix_fmt yuv420p -an out.mp4

   (the builder's crf, preset, keyframe spacing and pixel format). Single-threaded: both processes pinned to
   one core (``sched_setaffinity``; ffmpeg inherits it) and one thread per codec (ours ``CutConfig(threads=1)``,
   which sets the decoder's and the encoder's threads; ffmpeg ``-threads 1`` on the input and the output and
   ``-filter_threads 1``). Then multi-threaded: no pinning, ours ``threads`` = cores, ffmpeg its defaults.
   Target: ours / ffmpeg <= 1.
2. A shard of clips from ``--videos`` 640x360 H.264 sources: the builder's exact cut (:class:`ClipCutter`
   through ``build_shard``, source rate, ``--size``), its keyframe-aligned stream copy, and a loop of one
   ffmpeg process per clip (the same command without the fps filter), single-threaded as above.
3. Reading: :class:`ClipDataset` (8 frames at stride 4) in frames/s against plain decord reading the same mp4
   files with the same frame indices (the ratio is the reader's overhead: tar streaming, JSON, tensors).

Every comparison of 1 and 2 runs each setup in its own process (:mod:`benchmarks.timing`): a warm-up, then
``--pairs`` interleaved rounds; CPU time counts the ffmpeg child processes.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.clip_sources import SourcesConfig, ffmpeg_exe, make_sources, vp9_source, write_metadata
from benchmarks.timing import RoundsConfig

@dataclass(frozen=True, kw_only=True)
class CutBenchConfig(RoundsConfig):
    """What to measure."""

    sources: SourcesConfig = SourcesConfig()
    """The H.264 sources of the shard comparison (the one-clip comparison also cuts the first)."""
    size: int = 256
    """Clip side (resize to cover, center crop)."""
    fps: int = 8
    """Clip frame rate in the one-clip comparison."""
    span: tuple[float, float] = (1.0, 6.0)
    """One-clip span: start and end seconds."""
    epochs: int = 5
    """Reading epochs."""
    skip_threaded: bool = False
    """Skip the multi-threaded one-clip figures."""
    skip_reading: bool = False
    """Skip the ClipDataset comparison."""
    profile: bool = False
    """Only profile the one-clip cut stage by stage."""

    def __post_init__(self) -> None:
        if min(self.pairs, self.epochs, self.fps) < 1 or self.sources.seconds < 7:
            raise ValueError("pairs, epochs and fps must be positive and --sources.seconds at least 7")
        if not 0 <= self.span[0] < self.span[1] <= 7.7:
            raise ValueError("--span must satisfy 0 <= START < END <= 7.7 (the VP9 source's length)")


def ffmpeg_command(
    source: str, start: float, end: float, fps: int | None, size: int, out: str, threads: int | None
) -> list[str]:
    """The command a user would write for the same clip (``threads`` 1: one thread per codec and for the filters)."""
    keyint = fps or 30
    filters = ([f"fps={fps}"] if fps else []) + [f"scale={size}:{size}:force_original_aspect_ratio=increase", f"crop={size}:{size}"]
    one = ["-threads", "1"] if threads == 1 else []
    return [
        ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *one, "-ss", f"{start:g}", "-to", f"{end:g}", "-i", source,
        "-vf", ",".join(filters), *(["-filter_threads", "1"] if threads == 1 else []), "-c:v", "libx264", "-crf", "20",
        "-preset", "fast", "-g", str(keyint), "-pix_fmt", "yuv420p", *one, "-an", out,
    ]  # fmt: skip


def _pin(single: bool) -> None:
    """Single-threaded setups run on one core (the last one allowed); ffmpeg children inherit it."""
    if single:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def ours_one_clip(source: str, start: float, end: float, fps: int, size: int, threads: int):
    """Benchmark worker: open, probe and exact-cut one span to mp4 bytes, as the builder does per video."""
    from pipelines.hdvila.config import CutConfig
    from pipelines.hdvila.cutting import exact_cut
    from pipelines.hdvila.probe import open_video, probe_video

    _pin(threads == 1)
    config = CutConfig(fps=fps, size=size, threads=threads)

    def run() -> None:
        container, stream = open_video(source)
        try:
            info = probe_video(container, stream, vfr_tolerance=config.vfr_tolerance)
            exact_cut(container, stream, info, Fraction(str(start)), Fraction(str(end)), config)
        finally:
            container.close()

    return run


def ffmpeg_clips(sources: list[str], spans: list[tuple[float, float]], fps: int | None, size: int, threads: int | None):
    """Benchmark worker: one ffmpeg process per (source, span), each writing an mp4 to a temp dir."""
    _pin(threads == 1)
    folder = Path(tempfile.mkdtemp(prefix="bench-ffmpeg-"))

    def run() -> None:
        for index, (source, (start, end)) in enumerate((s, span) for s in sources for span in spans):
            subprocess.run(ffmpeg_command(source, start, end, fps, size, str(folder / f"{index}.mp4"), threads), check=True)

    return run


STAGES = {
    "open + probe": "open, demux every packet (frame times, keyframes)",
    "+ decode all (before)": "decode the span's frames from the keyframe before it, every frame",
    "+ decode shown/refs (now)": "the same, skipping frames neither shown nor referenced",
    "+ shape (before)": "decode all + full-size RGB + OpenCV INTER_AREA resize + crop of the shown frames",
    "+ shape (now)": "decode shown/refs + libswscale yuv444p resize + crop of the shown frames",
    "whole cut (now)": "open + probe + exact_cut: the above and x264 (crf 20, fast) into mp4 bytes",
    "ffmpeg -f null": "the ffmpeg command's decoding alone (-ss/-to, no filters, no encoder)",
    "ffmpeg command": "the whole ffmpeg command",
}


def cut_stage(stage: str, source: str, start: float, end: float, fps: int, size: int):
    """Benchmark worker: one cumulative stage of the single-threaded one-clip cut (see :data:`STAGES`), pinned."""
    from datasets.clips import output_times, square_geometry
    from pipelines.hdvila.config import CutConfig
    from pipelines.hdvila.cutting import FrameShaper, _decoded, _picked, shown_pts
    from pipelines.hdvila.probe import open_video, probe_video

    if stage.startswith("ffmpeg"):
        command = ffmpeg_command(source, start, end, fps, size, str(Path(tempfile.mkdtemp(prefix="bench-ffmpeg-")) / "out.mp4"), 1)
        if stage == "ffmpeg -f null":
            command = [*command[: command.index("-vf")], "-f", "null", "-"]
        _pin(True)
        return lambda: subprocess.run(command, check=True)
    if stage == "whole cut (now)":
        return ours_one_clip(source, start, end, fps, size, 1)
    _pin(True)
    span = Fraction(str(start)), Fraction(str(end))
    times = output_times(*span, Fraction(fps))

    def run() -> None:
        container, stream = open_video(source)
        with container:
            info = probe_video(container, stream, vfr_tolerance=CutConfig().vfr_tolerance)
            stream.codec_context.thread_count = 1
            if stage == "open + probe":
                return
            geometry = square_geometry(info.width, info.height, size)
            before = "before" in stage
            decoded = _decoded(container, stream, info, span[0], None if before else shown_pts(info, times))
            if "decode" in stage:
                for _ in itertools.takewhile(lambda item: item[0] < span[1], decoded):
                    pass
                return
            shape = (lambda frame: geometry.apply(frame.to_ndarray(format="rgb24"))) if before else FrameShaper(geometry)
            for _ in _picked(decoded, times, info, shape):
                pass

    return run


def profile(sources: dict[str, str], args: CutBenchConfig) -> None:
    from benchmarks.timing import Worker

    print("\nprofile of the single-threaded one-clip cut (cumulative stages, each in its own pinned process):")
    for name, value in STAGES.items():
        print(f"  {name:26s} {value}")
    for source_name, path in sources.items():
        print(f" {source_name}:")
        compare({stage: Worker(cut_stage, (stage, path, *args.span, args.fps, args.size)) for stage in STAGES}, args.pairs)


def builder_shard(metadata: str, videos: str, cut_options: dict):
    """Benchmark worker: one shard of every planned clip, built by the real shard code with :class:`ClipCutter`."""
    from pipelines.hdvila.config import CutConfig, SourceConfig
    from pipelines.hdvila.metadata import VideoIndex, iter_videos
    from pipelines.hdvila.planning import ClipPlanner
    from pipelines.hdvila.shard import build_shard
    from pipelines.hdvila.stages import ClipCutter

    _pin(True)
    source = SourceConfig(metadata=metadata, videos=videos, clips_per_shard=10_000)
    plans = list(ClipPlanner(source, VideoIndex.scan(source.videos)).plan(iter_videos(source.metadata)))
    cutter = ClipCutter(CutConfig(threads=1, **cut_options), source)

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-shard-") as out:
            stats = [build_shard(plan, Path(out), cutter) for plan in plans]
            if sum(s["counts"]["kept"] for s in stats) == 0:
                raise RuntimeError("the benchmark shard kept no clip")

    return run


def compare(workers: dict, pairs: int) -> dict:
    """Interleave the workers, print their table, and return the timings."""
    from benchmarks.timing import interleave, print_timings

    results = interleave(workers, pairs=pairs)
    print_timings(results, indent="  ")
    return results


def cpu_ratio(a, b) -> str:
    """The per-round ratios of CPU seconds (which a busy machine disturbs less than wall time)."""
    from benchmarks.timing import Spread

    return str(Spread(tuple(x / y for x, y in zip(a.cpu, b.cpu))))


def one_clip(sources: dict[str, str], args: CutBenchConfig) -> None:
    from benchmarks.timing import Worker, pair_ratio, verdict

    start, end = args.span
    settings = [("single-threaded, pinned to one core", 1, 1)]
    if not args.skip_threaded:
        settings.append((f"multi-threaded ({os.cpu_count()} cores)", os.cpu_count() or 1, None))
    peer = " ".join(ffmpeg_command("SRC", start, end, args.fps, args.size, "out.mp4", None)[1:])
    print(f"\n1. one clip [{start:g}, {end:g}) s -> {args.fps} fps {args.size}x{args.size} H.264; peer: ffmpeg {peer}")
    for label, ours_threads, ffmpeg_threads in settings:
        for name, path in sources.items():
            print(f" {name}, {label}:")
            results = compare({
                "ours (open+probe+exact_cut)": Worker(ours_one_clip, (path, start, end, args.fps, args.size, ours_threads)),
                "ffmpeg CLI": Worker(ffmpeg_clips, ([path], [(start, end)], args.fps, args.size, ffmpeg_threads)),
            }, args.pairs)  # fmt: skip
            ours, peer = results["ours (open+probe+exact_cut)"], results["ffmpeg CLI"]
            ratio = pair_ratio(ours, peer)
            print(f"  ours / ffmpeg CLI: wall {ratio} ({verdict(ratio.median, 1.0)}); CPU {cpu_ratio(ours, peer)}")


def shard(root: Path, ids: list[str], args: CutBenchConfig) -> None:
    from benchmarks.timing import Worker, pair_ratio, verdict

    spans = [(float(t), float(t + args.sources.clip_seconds)) for t in range(0, args.sources.seconds - args.sources.clip_seconds + 1, args.sources.clip_seconds)]
    clips = len(ids) * len(spans)
    print(f"\n2. a shard of {clips} clips of {args.sources.clip_seconds} s from {len(ids)} x {args.sources.seconds} s of 640x360 30 fps H.264, "
          f"exact at the source rate and {args.size}x{args.size}; single-threaded, pinned to one core:")  # fmt: skip
    metadata, videos = str(root / "meta.jsonl"), str(root / "videos")
    results = compare({
        "builder exact": Worker(builder_shard, (metadata, videos, {"size": args.size})),
        "builder stream copy": Worker(builder_shard, (metadata, videos, {"mode": "copy"})),
        "ffmpeg CLI, a process a clip": Worker(ffmpeg_clips, ([f"{videos}/{i}.mp4" for i in ids], spans, None, args.size, 1)),
    }, args.pairs)  # fmt: skip
    for name, timings in results.items():
        seconds = np.median(timings.wall)
        print(f"  {name:28s} {clips / seconds:.2f} clips/s, {clips * args.sources.clip_seconds / seconds:.1f} s of video/s")
    exact, peer = results["builder exact"], results["ffmpeg CLI, a process a clip"]
    ratio = pair_ratio(exact, peer)
    print(f"  builder exact / ffmpeg CLI: wall {ratio} ({verdict(ratio.median, 1.0)}); CPU {cpu_ratio(exact, peer)}")
    print(f"  builder exact / stream copy: {pair_ratio(results['builder exact'], results['builder stream copy'])}")


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


def reading(root: Path, args: CutBenchConfig) -> None:
    from pipelines.hdvila.config import CutConfig, SourceConfig
    from pipelines.hdvila.metadata import VideoIndex, iter_videos
    from pipelines.hdvila.planning import ClipPlanner
    from pipelines.hdvila.shard import build_shard
    from pipelines.hdvila.stages import ClipCutter

    source = SourceConfig(metadata=str(root / "meta.jsonl"), videos=str(root / "videos"), clips_per_shard=10_000)
    cutter = ClipCutter(CutConfig(size=args.size), source)
    for plan in ClipPlanner(source, VideoIndex.scan(source.videos)).plan(iter_videos(source.metadata)):
        build_shard(plan, root / "exact", cutter)
    dataset_fps, decord_fps = time_reading(root / "exact", args.size, args.epochs)
    print(f"\n3. read ClipDataset: {dataset_fps:.0f} frames/s; plain decord on the same files: {decord_fps:.0f} frames/s")
    print(f"  ClipDataset / plain decord: {dataset_fps / decord_fps:.2f}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import start

    args = start(CutBenchConfig, argv, prog="python -m benchmarks.bench_hdvila", doc=__doc__)
    print(f"ffmpeg: {ffmpeg_exe()}")
    with tempfile.TemporaryDirectory(prefix="bench-hdvila-") as temp:
        root = Path(temp)
        (root / "videos").mkdir()
        ids = make_sources(root / "videos", args.sources.videos, args.sources.seconds)
        write_metadata(root / "meta.jsonl", ids, args.sources.seconds, args.sources.clip_seconds)
        sources = {"VP9 1768x994 30 fps": str(vp9_source()), "H.264 640x360 30 fps": str(root / "videos" / f"{ids[0]}.mp4")}
        if args.profile:
            profile(sources, args)
            return 0
        one_clip(sources, args)
        shard(root, ids, args)
        if not args.skip_reading:
            reading(root, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
