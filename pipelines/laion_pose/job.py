"""The LAION-Pose job on Ray: download tasks feed a pool of pose actors that write finished shards.

Shape of a run (:func:`run_job`):

1. plan the input on the driver (columns checked, shards cut) and check the
   output folder (``config.json`` of an earlier run must match): errors here
   come before Ray starts or any work is done;
2. skip the shards already finished, delete temporaries of a killed run;
3. start or join Ray (:mod:`pipelines.ray_runtime`); create the pose actors
   (one estimator each, GPU when there is one) and wait until they load;
4. stream shards: one download task per shard (img2dataset, Ray retries
   failed tasks), at most ``workers * (1 + prefetch_shards)`` shards in
   flight; each downloaded shard goes to an idle actor, which runs the pose
   stage in batches and writes the shard atomically (:mod:`.writer`);
5. log one progress line per shard; a shard that still fails after its
   retries is logged and left unfinished (a rerun retries it), the others go on;
6. sum the shard stats into ``DIR/stats.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets.laion_pose import KIND, SCHEMA_VERSION, STATUSES
from pipelines.laion_pose.config import JobConfig, PoseStageConfig, ResourcesConfig
from pipelines.laion_pose.download import DownloadedShard, download_shard
from pipelines.laion_pose.inputs import InputPlan, plan_input
from pipelines.laion_pose.pose_stage import PoseAnnotator, objects
from pipelines.laion_pose.writer import index_schema, write_laion_shard
from pipelines.ray_runtime import RaySession, ray_session
from pipelines.shards import (
    ProgressLogger,
    aggregate_stats,
    finished_shards,
    read_shard_stats,
    remove_partial_files,
    write_json_atomic,
)

_log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
HEARTBEAT_S = 30.0
QUIET_NATIVE_LOGS = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
"""Environment of the pose actors: MediaPipe/TFLite's C++ INFO/WARNING lines would flood the driver's log."""


def annotate_shard(annotator: PoseAnnotator, downloaded: DownloadedShard, output: str | Path, schema: pa.Schema) -> dict:
    """Run the pose stage over a downloaded shard in batches and write the shard; returns its stats."""
    start = time.monotonic()
    table = downloaded.table
    step = annotator.config.images_per_call
    parts = []
    for offset in range(0, table.num_rows, step):
        chunk = table.slice(offset, step)
        parts.append(annotator({name: objects(chunk.column(name).to_pylist()) for name in chunk.column_names}))
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}
    pose_s = time.monotonic() - start
    extra = {
        "pose_s": round(pose_s, 3),
        "download_s": downloaded.stats.get("download_s", 0.0),
        "estimator": annotator.name,
        "img2dataset": downloaded.stats.get("img2dataset", {}),
    }
    stats = write_laion_shard(output, downloaded.spec.stem, columns, downloaded.carried, schema, extra)
    stats["write_s"] = round(time.monotonic() - start - pose_s, 3)
    return stats


class PoseWorker:
    """A Ray actor body: one :class:`PoseAnnotator` (one model), many shards."""

    def __init__(self, stage: PoseStageConfig, output: str, schema: pa.Schema) -> None:
        logging.basicConfig(level=logging.INFO)
        self.annotator = PoseAnnotator(stage)
        self.output = output
        self.schema = schema

    def ready(self) -> str:
        return self.annotator.name

    def process(self, downloaded: DownloadedShard) -> dict:
        return annotate_shard(self.annotator, downloaded, self.output, self.schema)

    def close(self) -> None:
        self.annotator.close()


def plan_workers(resources: ResourcesConfig, session: RaySession, shards: int) -> tuple[int, float, float]:
    """``(pose workers, CPUs each, GPUs each)`` for this cluster; raises when they cannot all run beside a download."""
    gpus = resources.pose_gpus if resources.pose_gpus is not None else (1.0 if session.num_gpus >= 1 else 0.0)
    if resources.pose_workers is not None:
        workers = resources.pose_workers
    elif gpus > 0:
        workers = max(1, int(session.num_gpus // gpus))
    else:
        workers = max(1, int((session.num_cpus - resources.download_cpus) // resources.pose_cpus))
    workers = max(1, min(workers, shards))
    needed = workers * resources.pose_cpus + resources.download_cpus
    if needed > session.num_cpus + 1e-9:
        raise ValueError(
            f"{workers} pose worker(s) x {resources.pose_cpus} CPU + {resources.download_cpus} CPU for downloads "
            f"= {needed} CPUs, but the cluster has {session.num_cpus}: lower --pose-workers or --pose-cpus"
        )
    if gpus * workers > session.num_gpus + 1e-9:
        raise ValueError(f"{workers} pose worker(s) x {gpus} GPU exceed the cluster's {session.num_gpus} GPU(s)")
    return workers, resources.pose_cpus, gpus


def prepare_output(output: Path, config: JobConfig) -> None:
    """Create ``output`` and its ``config.json``, or check that an earlier run there used the same settings."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / CONFIG_NAME
    signature = config.output_signature()
    if path.exists():
        previous = json.loads(path.read_text()).get("output_signature")
        if previous != signature:
            differing = sorted(k for k in set(signature) | set(previous or {}) if (previous or {}).get(k) != signature.get(k))
            raise ValueError(
                f"{output} holds shards built with different settings (section(s) {differing} differ from "
                f"{path}); use another --output or the same settings to resume"
            )
        _log.info("resuming in %s (same settings as %s)", output, path)
        return
    write_json_atomic(
        path, {"kind": KIND, "schema_version": SCHEMA_VERSION, "job": config.to_dict(), "output_signature": signature}
    )


def run_job(config: JobConfig) -> dict:
    """Build (or finish building) LAION-Pose into ``config.output``; returns the totals of ``stats.json``."""
    plan = plan_input(config.input)
    output = Path(config.output)
    prepare_output(output, config)
    remove_partial_files(output)
    done = finished_shards(output)
    todo = [spec for spec in plan.shards if spec.stem not in done]
    _log.info("input: %d rows in %d file(s) -> %d shard(s), %d to do", plan.total_rows, len(plan.files), len(plan.shards), len(todo))
    progress = ProgressLogger(len(plan.shards), unit="images")
    progress.skip(len(plan.shards) - len(todo))
    failures: dict[str, str] = {}
    if todo:
        with ray_session(config.ray) as session:
            failures = _run_on_ray(todo, plan, config, session, progress)
    estimators = sorted({s.get("estimator") for s in read_shard_stats(output) if s.get("estimator")})
    finished = finished_shards(output)
    extra = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "planned_shards": len(plan.shards),
        "complete": all(spec.stem in finished for spec in plan.shards),
        "failed_shards": failures,
        "estimators": estimators,
    }
    totals = aggregate_stats(output, statuses=STATUSES, extra=extra)
    _log.info("done: %s | counts %s", progress.line(), totals["counts"])
    return totals


def _run_on_ray(todo, plan: InputPlan, config: JobConfig, session: RaySession, progress: ProgressLogger) -> dict[str, str]:
    import ray

    workers, cpus, gpus = plan_workers(config.resources, session, len(todo))
    retries = config.resources.max_retries
    download = ray.remote(download_shard).options(
        num_cpus=config.resources.download_cpus, max_retries=retries, retry_exceptions=True
    )
    actor_class = ray.remote(PoseWorker).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=retries,
        max_task_retries=retries,
        runtime_env={"env_vars": QUIET_NATIVE_LOGS},
    )
    schema = index_schema(plan.carried_schema)
    actors = [actor_class.remote(config.stage, str(Path(config.output).resolve()), schema) for _ in range(workers)]
    try:
        names = ray.get([actor.ready.remote() for actor in actors])
        _log.info("%d pose worker(s) ready (%s; %.2g CPU, %.2g GPU each)", workers, names[0], cpus, gpus)
        progress.restart_clock()
        return _schedule(todo, ray.put(plan), download, actors, config, progress)
    finally:
        _stop(actors)


def _schedule(todo, plan_ref, download, actors, config: JobConfig, progress: ProgressLogger) -> dict[str, str]:
    """Feed shards through downloads and actors until all are finished or failed; returns failures by stem."""
    import ray

    queue = deque(todo)
    limit = len(actors) * (1 + config.resources.prefetch_shards)
    downloading: dict = {}
    ready: deque = deque()
    busy: dict = {}
    idle = deque(actors)
    failures: dict[str, str] = {}
    while queue or downloading or ready or busy:
        while queue and len(downloading) + len(ready) + len(busy) < limit:
            spec = queue.popleft()
            downloading[download.remote(spec, plan_ref, config.input, config.download)] = spec
        while ready and idle:
            spec, ref = ready.popleft()
            actor = idle.popleft()
            busy[actor.process.remote(ref)] = (actor, spec)
        finished, _ = ray.wait(list(downloading) + list(busy), num_returns=1, timeout=HEARTBEAT_S)
        if not finished:
            _log.info("working: %d downloading, %d waiting, %d in pose | %s", len(downloading), len(ready), len(busy), progress.line())
            continue
        for ref in finished:
            if ref in downloading:
                ready.append((downloading.pop(ref), ref))
                continue
            actor, spec = busy.pop(ref)
            try:
                progress.update(ray.get(ref))
            except ray.exceptions.ActorDiedError as err:
                failures[spec.stem] = f"pose worker died: {err}"
                _log.error("shard %s failed, its pose worker died: %s", spec.stem, err)
                actor = None
            except ray.exceptions.RayError as err:
                failures[spec.stem] = str(err)[-2000:]
                _log.error("shard %s failed after retries (a rerun retries it): %s", spec.stem, err)
            if actor is not None:
                idle.append(actor)
            elif not idle and not busy:
                raise RuntimeError("every pose worker died; finished shards are kept, rerun to resume")
    return failures


def _stop(actors) -> None:
    import ray

    try:
        ray.get([actor.close.remote() for actor in actors], timeout=30)
    except Exception as err:  # a dead actor has nothing left to close
        _log.debug("closing pose workers: %s", err)
    for actor in actors:
        ray.kill(actor)
