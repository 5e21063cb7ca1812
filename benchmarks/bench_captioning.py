"""Captioning stage alone vs the whole HD-VILA job with captioning, measured in the same run.

    .venv/bin/python -m benchmarks.bench_captioning [--videos 6] [--seconds 8] [--clip-seconds 2] [--pairs 5]
        [--hidden 256] [--layers 4] [--image-size 224] [--new-tokens 20]

Input: synthetic 640x360 30 fps H.264 sources (``bench_hdvila.make_sources``), cut into clips of
``--clip-seconds`` at 8 fps and 128x128, 4 clips per shard. The captioner is the tests' random BLIP
(``pipelines.hdvila.tiny_captioner.save_tiny_blip``) scaled up (``--hidden``, ``--layers``, ``--image-size``) so
that the model takes most of the time, as a real captioner does; it is saved to a folder and loaded with
``from_pretrained`` like a hub model. One torch thread in both setups (Ray gives the caption actor one CPU).

A. Captioner alone: :class:`ClipCaptioner` in one process on the very clips the job cuts (cut beforehand, not
   timed; model loaded and warmed up first): clips/s.
B. Whole job on a local Ray (2 CPUs: one caption actor, one CPU cutting): planning, cutting tasks, the caption
   actor (decode sampled frames, model, gate, annotation), shard writing. Two figures: the wall time of the
   whole ``run()`` (Ray already up, but actor start-up and model load in), and the **steady state** the job
   reports itself (``stats.json`` ``last_run.caption_wall_s``: from the moment the caption actor is ready to the
   last shard written), as the LAION-Pose benchmark does: start-up is paid once per worker at scale.

Ratio = job rate / captioner-alone rate = median over rounds of A / B (target >= 0.8: the job is bound by the
model). Rounds interleave A and B (``benchmarks.timing``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from benchmarks.clip_sources import SourcesConfig, make_sources, write_metadata
from benchmarks.timing import RoundsConfig


def _caption_config(model: Path, new_tokens: int):
    from pipelines.hdvila.config import CaptionConfig

    return CaptionConfig(enabled=True, model=str(model), max_new_tokens=new_tokens, max_repeats=new_tokens + 1,
                         reject_cut_off=False, clips_per_call=4)  # fmt: skip


def _job_config(root: Path, output: Path, new_tokens: int):
    from pipelines.hdvila.config import CutConfig, HdvilaConfig, SourceConfig
    from pipelines.ray_runtime import RayConfig

    return HdvilaConfig(
        source=SourceConfig(metadata=str(root / "meta.jsonl"), videos=str(root / "videos"), clips_per_shard=4),
        cut=CutConfig(fps=8.0, size=128), output=str(output), ray=RayConfig(num_cpus=2),
        caption=_caption_config(root / "model", new_tokens),
    )  # fmt: skip


def captioner_alone(root: str, new_tokens: int):
    """Setup A: the stage on the job's own clips, cut here once; returns the timed call."""
    import torch

    from pipelines.hdvila.captioning import ClipCaptioner
    from pipelines.hdvila.job import _cut_task
    from pipelines.hdvila.metadata import VideoIndex, iter_videos
    from pipelines.hdvila.planning import ClipPlanner
    from pipelines.hdvila.stages import rows_to_batch

    torch.set_num_threads(1)
    config = _job_config(Path(root), Path(root) / "unused", new_tokens)
    planner = ClipPlanner(config.source, VideoIndex.scan(config.source.videos))
    rows = [row for plan in planner.plan(iter_videos(config.source.metadata)) for row in _cut_task(plan, config).plan.rows]
    stage = ClipCaptioner(config.caption)
    batch = rows_to_batch(rows)
    return lambda: stage(dict(batch))


def whole_job(root: str, new_tokens: int):
    """Setup B: the job into a fresh folder each call, on a local Ray started once here; the steady-state seconds
    of every call are appended to ``ROOT/steady.jsonl``."""
    import ray
    import torch

    from pipelines.hdvila.job import run

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(Path(root) / "ray"))
    count = iter(range(10**6))

    def call() -> None:
        output = Path(root) / f"job{next(count)}"
        totals = run(_job_config(Path(root), output, new_tokens))
        with open(Path(root) / "steady.jsonl", "a") as handle:
            handle.write(json.dumps({"steady_s": totals["last_run"]["caption_wall_s"], "kept": totals["counts"]["kept"],
                                     "share": totals["last_run"]["captioner_share"]}) + "\n")  # fmt: skip
        shutil.rmtree(output)

    return call


@dataclass(frozen=True, kw_only=True)
class CaptionBenchConfig(RoundsConfig):
    """What to measure."""

    sources: SourcesConfig = SourcesConfig(videos=6, seconds=8, clip_seconds=2)
    """The clips: 24 of 2 s."""
    hidden: int = 256
    """Hidden width of the random BLIP captioner (scaled so the model takes most of the job's time)."""
    layers: int = 4
    """Layers of its vision and text parts."""
    image_size: int = 224
    """Its input image side."""
    new_tokens: int = 20
    """Tokens generated per caption."""

    def __post_init__(self) -> None:
        if min(self.pairs, self.hidden, self.layers, self.new_tokens) < 1:
            raise ValueError("every count and size must be at least 1")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.timing import Spread, Worker, interleave, start, verdict
    from pipelines.hdvila.tiny_captioner import save_tiny_blip

    args = start(CaptionBenchConfig, argv, prog="python -m benchmarks.bench_captioning", doc=__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-caption-", dir="/tmp") as temp:
        root = Path(temp)
        (root / "videos").mkdir()
        ids = make_sources(root / "videos", args.sources.videos, args.sources.seconds)
        write_metadata(root / "meta.jsonl", ids, args.sources.seconds, args.sources.clip_seconds)
        save_tiny_blip(root / "model", hidden=args.hidden, layers=args.layers, image_size=args.image_size)
        clips = args.sources.clips
        print(f"{clips} clips of {args.sources.clip_seconds} s (8 fps, 128 px) from {args.sources.videos} sources; random BLIP hidden "
              f"{args.hidden}, {args.layers} layers, {args.image_size} px, {args.new_tokens} new tokens; {args.pairs} rounds")  # fmt: skip
        workers = {"alone": Worker(captioner_alone, (temp, args.new_tokens)), "job": Worker(whole_job, (temp, args.new_tokens))}
        timings = interleave(workers, pairs=args.pairs, warmup=1)
        steady = [json.loads(line) for line in (root / "steady.jsonl").read_text().splitlines()][1:]  # without warm-up
    alone, job = timings["alone"], timings["job"]
    steady_s = Spread(tuple(s["steady_s"] for s in steady))
    print(f"A captioner alone:  wall {alone.wall_spread} s, CPU {alone.cpu_spread} s, peak +{alone.peak_mib:.0f} MiB "
          f"-> {clips / alone.wall_spread.median:.2f} clips/s")  # fmt: skip
    print(f"B whole job (run): wall {job.wall_spread} s (start-up included), driver CPU {job.cpu_spread} s")
    print(f"B steady state:    {steady_s} s -> {clips / steady_s.median:.2f} clips/s; kept {steady[0]['kept']}/{clips}; "
          f"captioner share of the actor's time {Spread(tuple(s['share'] for s in steady))}")  # fmt: skip
    ratio = Spread(tuple(a / s["steady_s"] for a, s in zip(alone.wall, steady)))
    whole = Spread(tuple(a / b for a, b in zip(alone.wall, job.wall)))
    print(f"ratio job / captioner alone (steady state): {ratio} median of per-round ratios; {verdict(ratio.median, 0.8, at_most=False)}")
    print(f"ratio job / captioner alone (whole run() incl. actor start and model load): {whole}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
