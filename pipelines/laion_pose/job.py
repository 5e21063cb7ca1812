"""The LAION-Pose job on Ray: download actors feed pose actors, which write finished shards.

Shape of a run (:func:`run_job`):

1. plan the input on the driver (columns checked, shards cut), check the
   output folder (a writable folder, not locked by another run, and
   ``config.json`` of an earlier run must match) and lock it
   (:mod:`datasets.output_folder`; the pose actors share the lock): errors
   here come before Ray starts or any work is done;
2. skip the shards already finished, delete temporaries of a killed run;
3. start or join Ray (:mod:`pipelines.ray_runtime`); create the actors
   (:mod:`.workers`: pose actors with one estimator each, on a GPU when there
   is one; download actors fetching and resizing) and wait until they load;
4. stream shards: at most ``pose workers * (1 + prefetch_shards)`` shards in
   flight; each shard is downloaded by the least busy download actor, then
   handed to an idle pose actor, which runs the pose stage in batches and
   writes the shard atomically (:mod:`.writer`);
5. log one progress line per shard; a shard that still fails after its
   retries is logged and left unfinished (a rerun retries it), the others go on;
6. sum the shard stats into ``DIR/stats.json``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from pathlib import Path

from datasets.laion_pose import KIND, SCHEMA_VERSION, STATUSES
from datasets.output_folder import OutputLock, prepare_output_folder, with_defaults
from pipelines.laion_pose.config import JobConfig, ResourcesConfig
from pipelines.laion_pose.inputs import InputPlan, plan_input
from pipelines.laion_pose.workers import DownloadWorker, PoseWorker, plan_workers
from pipelines.laion_pose.writer import index_schema
from pipelines.ray_runtime import RaySession, ray_session
from datasets.shards import (
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


def prepare_output(output: Path, config: JobConfig, command: dict | None = None) -> None:
    """Create ``output`` and its ``config.json``, or check that an earlier run there used the same settings.
    ``command``: the command line's settings, recorded under ``config`` so the file is a ``--config`` file."""
    prepare_output_folder(output)
    path = output / CONFIG_NAME
    signature = config.output_signature()
    if path.exists():
        try:
            previous = json.loads(path.read_text()).get("output_signature") or {}
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{path} is not a LAION-Pose config ({error}); use another --output") from None
        previous = with_defaults(previous, JobConfig(input=config.input, output=config.output).output_signature())
        if previous != signature:
            differing = sorted(k for k in set(signature) | set(previous) if previous.get(k) != signature.get(k))
            raise ValueError(
                f"{output} holds shards built with different settings (section(s) {differing} differ from "
                f"{path}); use another --output or the same settings to resume"
            )
        _log.info("resuming in %s (same settings as %s)", output, path)
        return
    record = {"kind": KIND, "schema_version": SCHEMA_VERSION, "job": config.to_dict(), "output_signature": signature}
    write_json_atomic(path, record if command is None else {**record, "config": command})


def run_job(config: JobConfig, command: dict | None = None) -> dict:
    """Build (or finish building) LAION-Pose into ``config.output``; returns the totals of ``stats.json``. ``command``:
    the command line's settings, for ``config.json`` (:func:`prepare_output`)."""
    plan = plan_input(config.input)
    output = Path(config.output)
    prepare_output_folder(output)
    with OutputLock(output, workers=True) as lock:
        return _run_locked(plan, output, config, lock.run_id, command)


def _run_locked(plan: InputPlan, output: Path, config: JobConfig, run_id: str, command: dict | None = None) -> dict:
    prepare_output(output, config, command)
    remove_partial_files(output)
    done = finished_shards(output)
    todo = [spec for spec in plan.shards if spec.stem not in done]
    _log.info(
        "input: %d rows in %d file(s) -> %d shard(s), %d to do", plan.total_rows, len(plan.files), len(plan.shards), len(todo)
    )
    progress = ProgressLogger(len(plan.shards), unit="images")
    progress.skip(len(plan.shards) - len(todo))
    failures: dict[str, str] = {}
    if todo:
        with ray_session(config.ray) as session:
            failures = run_shards(todo, plan, config, session, progress, run_id)
    finished = finished_shards(output)
    extra = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "planned_shards": len(plan.shards),
        "complete": all(spec.stem in finished for spec in plan.shards),
        "failed_shards": failures,
        "estimators": sorted({s["estimator"] for s in read_shard_stats(output) if s.get("estimator")}),
    }
    totals = aggregate_stats(output, statuses=STATUSES, extra=extra)
    _log.info("done: %s | counts %s", progress.line(), totals["counts"])
    return totals


def run_shards(
    todo, plan: InputPlan, config: JobConfig, session: RaySession, progress: ProgressLogger, run_id: str | None = None
) -> dict[str, str]:
    """Process the shards ``todo`` on the Ray session; returns the failed ones (stem -> error). The pose actors join
    the output lock of run ``run_id`` (:meth:`datasets.output_folder.OutputLock.join`)."""
    import ray

    workers = plan_workers(config.resources, session.num_cpus, session.num_gpus, len(todo))
    retries = config.resources.max_retries
    pose_class = ray.remote(PoseWorker).options(
        num_cpus=workers.pose_cpus,
        num_gpus=workers.pose_gpus,
        max_restarts=retries,
        max_task_retries=retries,
        max_concurrency=config.resources.queued_per_worker,  # a shard's write overlaps the next one's model run
        runtime_env={"env_vars": QUIET_NATIVE_LOGS},
    )
    download_class = ray.remote(DownloadWorker).options(num_cpus=workers.download_cpus, max_restarts=retries)
    output = str(Path(config.output).resolve())
    schema = index_schema(plan.carried_schema)
    posers = [pose_class.remote(config.stage, output, schema, run_id=run_id) for _ in range(workers.pose_workers)]
    downloaders = [
        download_class.remote(plan, config.input, config.download, retries=retries) for _ in range(workers.download_workers)
    ]
    try:
        names = ray.get([actor.ready.remote() for actor in posers])
        ray.get([actor.ready.remote() for actor in downloaders])
        _log.info("%s; pose model %s", workers, names[0])
        progress.restart_clock()
        return _schedule(todo, downloaders, posers, config.resources, progress)
    finally:
        _stop(posers, downloaders)


def _schedule(todo, downloaders, posers, resources: ResourcesConfig, progress: ProgressLogger) -> dict[str, str]:
    """Feed shards through the actors until all are finished or failed; returns failures by stem."""
    import ray

    queue = deque(todo)
    limit = len(posers) * (resources.queued_per_worker + resources.prefetch_shards)
    load = Counter({index: 0 for index in range(len(downloaders))})
    downloading: dict = {}
    ready: deque = deque()
    busy: dict = {}
    idle = deque(actor for _ in range(resources.queued_per_worker) for actor in posers)  # one entry per free slot
    failures: dict[str, str] = {}
    while queue or downloading or ready or busy:
        while queue and len(downloading) + len(ready) + len(busy) < limit:
            spec, which = queue.popleft(), min(load, key=load.get)
            downloading[downloaders[which].download.remote(spec)] = (spec, which)
            load[which] += 1
        while ready and idle:
            spec, ref = ready.popleft()
            actor = idle.popleft()
            busy[actor.process.remote(ref)] = (actor, spec)
        finished, _ = ray.wait(list(downloading) + list(busy), num_returns=1, timeout=HEARTBEAT_S)
        if not finished:
            _log.info(
                "working: %d downloading, %d waiting, %d in pose | %s", len(downloading), len(ready), len(busy), progress.line()
            )
        for ref in finished:
            if ref in downloading:
                spec, which = downloading.pop(ref)
                load[which] -= 1
                ready.append((spec, ref))
                continue
            actor, spec = busy.pop(ref)
            if _account(ref, actor, spec, progress, failures):
                idle.append(actor)
            else:
                idle = deque(a for a in idle if a is not actor)
                if not idle and not busy:
                    raise RuntimeError("every pose worker died; finished shards are kept, rerun to resume")
    return failures


def _account(ref, actor, spec, progress: ProgressLogger, failures: dict[str, str]) -> bool:
    """Log a finished shard or record its failure; False when the pose worker that ran it is dead for good."""
    import ray

    try:
        progress.update(ray.get(ref))
        return True
    except ray.exceptions.RayError as err:
        failures[spec.stem] = str(err)[-2000:]
        _log.error("shard %s failed after retries (a rerun retries it): %s", spec.stem, err)
        # The error may be the shard's own, or its download actor's; only this actor's death retires it.
        own_id = getattr(getattr(actor, "_actor_id", None), "hex", lambda: None)()
        return not (isinstance(err, ray.exceptions.RayActorError) and getattr(err, "actor_id", None) == own_id)


def _stop(posers, downloaders) -> None:
    """Free the pose models, then end every actor of the job (by handle)."""
    import ray

    try:
        ray.get([actor.close.remote() for actor in posers], timeout=30)
    except Exception as err:  # a dead actor has nothing left to close
        _log.debug("closing pose workers: %s", err)
    for actor in [*posers, *downloaders]:
        ray.kill(actor)
