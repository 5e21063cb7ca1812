"""Captioning on Ray: long-lived actors holding one captioning model each, fed by CPU tasks that cut or read clips.

:class:`CaptionWorker` is the body of an actor (one :class:`.captioning.ClipCaptioner`,
so the model loads once per actor, on the GPU Ray assigns it); it captions one
shard's rows at a time and writes the shard. :func:`run_feeding` keeps the CPU
tasks (cutting in the builder, reading in the caption-only mode) ahead of the
actors, hands each finished shard to the least busy actor and logs progress
and the captioner's share of the time. Nothing here imports Ray at module level.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from datasets.output_folder import OutputLock
from datasets.shards import ProgressLogger
from pipelines.hdvila.captioning import ClipCaptioner
from pipelines.hdvila.config import CaptionConfig
from pipelines.hdvila.planning import ShardPlan
from pipelines.hdvila.shard import build_shard
from pipelines.hdvila.stages import batch_to_rows, rows_to_batch

logger = logging.getLogger(__name__)
QUEUED_PER_WORKER = 2
"""Shards handed to an actor at once: one captioned while the next waits, so the model never idles between shards."""


@dataclass(frozen=True)
class CutShard:
    """One shard's rows, every status decided (cut or read), on their way to a caption worker."""

    plan: ShardPlan
    seconds: float
    """Time the CPU task took (cutting or reading)."""


def caption_stats(timing: dict, cut_seconds: float) -> dict:
    """The shard-stats fields of the captioning stage (summed into ``stats.json``)."""
    return {
        "cut_s": round(cut_seconds, 3),
        "caption_decode_s": timing.get("decode_s", 0.0),
        "caption_model_s": timing.get("model_s", 0.0),
        "caption_gate_s": timing.get("gate_s", 0.0),
        "captioned_clips": timing.get("captioned", 0),
    }


class CaptionWorker:
    """Actor body: one captioning model, many shards; writes each shard (or its caption table) it finishes."""

    def __init__(self, config: CaptionConfig, output: str, run_id: str | None = None) -> None:
        self._lock = OutputLock.join(output, run_id)  # held while this actor lives
        self.stage = ClipCaptioner(config)
        self.output = output

    def ready(self) -> str:
        return self.stage.name

    def caption(self, shard: CutShard) -> tuple[list[dict], dict]:
        rows = batch_to_rows(self.stage(rows_to_batch(shard.plan.rows))) if shard.plan.rows else []
        return rows, caption_stats(self.stage.take_timing(), shard.seconds)

    def write_shard(self, shard: CutShard) -> dict:
        """Caption the kept clips of ``shard`` and write it as a clip shard; returns its stats."""
        rows, stats = self.caption(shard)
        return build_shard(ShardPlan(shard.plan.index, rows), self.output, None, **stats)

    def write_table(self, shard: CutShard) -> dict:
        """Caption the kept clips of ``shard`` and write only its caption table (:mod:`.recaption`); returns its stats."""
        from pipelines.hdvila.recaption import write_caption_table

        rows, stats = self.caption(shard)
        return write_caption_table(self.output, shard.plan.index, rows, stats, self.stage.source)

    def close(self) -> None:
        self.stage.captioner.close()


def worker_count(config: CaptionConfig, cpus: float, gpus_total: float) -> tuple[int, float]:
    """``(actors, gpus per actor)`` for a cluster; raises when they leave no CPU for the tasks feeding them."""
    gpus = config.gpus if config.gpus is not None else (1.0 if gpus_total >= 1 else 0.0)
    workers = config.workers or (max(1, int(gpus_total // gpus)) if gpus > 0 else 1)
    if workers * config.cpus >= cpus:
        raise ValueError(
            f"{workers} caption worker(s) x {config.cpus} CPU leave none of the cluster's {cpus:g} CPUs for cutting: "
            "lower --caption-workers or --caption-cpus"
        )
    if gpus * workers > gpus_total + 1e-9:
        raise ValueError(f"{workers} caption worker(s) x {gpus:g} GPU exceed the cluster's {gpus_total:g} GPU(s)")
    return workers, gpus


def start_workers(config: CaptionConfig, output: Path, run_id: str, session) -> list:
    """Create the caption actors and wait until each has loaded its model."""
    import ray

    count, gpus = worker_count(config, session.num_cpus, session.num_gpus)
    actor = ray.remote(CaptionWorker).options(
        num_cpus=config.cpus, num_gpus=gpus, max_restarts=2, max_task_retries=2, max_concurrency=1
    )
    workers = [actor.remote(config, str(output.resolve()), run_id) for _ in range(count)]
    names = ray.get([worker.ready.remote() for worker in workers])
    logger.info("%d caption worker(s) (%g GPU each): %s", count, gpus, names[0])
    return workers


def stop_workers(workers: list) -> None:
    import ray

    for worker in workers:
        ray.kill(worker)


def run_feeding(
    items: Iterable[tuple[str, Callable[[], object]]],
    workers: list,
    method: str,
    limit: int,
    progress: ProgressLogger,
) -> tuple[list[str], dict]:
    """Run ``submit()`` of each ``(stem, submit)`` (a Ray task ref of a :class:`CutShard`), at most ``limit`` ahead
    of the actors, then ``worker.<method>(shard)`` on the least busy actor.

    Returns the failures and the throughput of this run (from the call, made once the actors are up, to the last
    shard): ``caption_wall_s``, ``caption_clips_per_s`` and ``captioner_share`` (model seconds over the actors'
    wall seconds: near 1 when the job is bound by the model)."""
    import ray

    items = iter(items)
    feeding: dict = {}
    ready: deque = deque()
    busy: dict = {}
    load = {index: 0 for index in range(len(workers))}
    failures: list[str] = []
    exhausted = False
    started = time.monotonic()
    model_s, clips = 0.0, 0
    while not exhausted or feeding or ready or busy:
        while not exhausted and len(feeding) + len(ready) < limit:
            item = next(items, None)
            if item is None:
                exhausted = True
                break
            stem, submit = item
            feeding[submit()] = stem
        while ready and min(load.values()) < QUEUED_PER_WORKER:
            stem, ref = ready.popleft()
            which = min(load, key=load.get)
            load[which] += 1
            busy[getattr(workers[which], method).remote(ref)] = (stem, which)
        if not (feeding or busy):
            continue
        done, _ = ray.wait(list(feeding) + list(busy), num_returns=1)
        for ref in done:
            if ref in feeding:
                ready.append((feeding.pop(ref), ref))
                continue
            stem, which = busy.pop(ref)
            load[which] -= 1
            try:
                stats = ray.get(ref)
            except Exception as error:  # noqa: BLE001 - one failed shard must not stop the job
                logger.error("shard %s failed: %s", stem, error)
                failures.append(f"{stem}: {error}")
                continue
            progress.update(stats)
            model_s += stats.get("caption_model_s", 0.0)
            clips += stats.get("captioned_clips", 0)
            wall = max(time.monotonic() - started, 1e-9) * len(workers)
            logger.info(
                "captioner: %d clips in %.1f s of model time, %.0f%% of the workers' wall time",
                stats.get("captioned_clips", 0), stats.get("caption_model_s", 0.0), 100 * model_s / wall,
            )
    wall = time.monotonic() - started
    summary = {
        "caption_wall_s": round(wall, 3),
        "caption_clips_per_s": round(clips / wall, 3) if wall > 0 else 0.0,
        "captioner_share": round(model_s / (wall * max(1, len(workers))), 3) if wall > 0 else 0.0,
    }
    if clips:
        logger.info(
            "captioning done: %d clips in %.1f s (%.2f clips/s); the model took %.0f%% of the caption workers' time",
            clips, wall, summary["caption_clips_per_s"], 100 * summary["captioner_share"],
        )
    return failures, summary
