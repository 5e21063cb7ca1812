"""The bodies of the job's Ray actors and how many of each the cluster holds.

Both kinds are long-lived actors so that their heavy imports and models load
once: a :class:`DownloadWorker` imports img2dataset (which imports torch via
webdataset: seconds per process) once, where Ray tasks would pay it again in
every fresh worker process Ray starts after killing idle ones; a
:class:`PoseWorker` loads one pose model and serves many shards. Nothing here
imports Ray: :mod:`.job` wraps these classes with ``ray.remote``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets.output_folder import OutputLock
from pipelines.laion_pose.config import DownloadConfig, InputConfig, PoseStageConfig, ResourcesConfig
from pipelines.laion_pose.download import DownloadedShard, download_shard
from pipelines.laion_pose.inputs import InputPlan, ShardSpec
from pipelines.laion_pose.pose_stage import PoseAnnotator, objects
from pipelines.laion_pose.writer import write_laion_shard
from pose_extraction.estimator import PoseEstimator

_log = logging.getLogger(__name__)


def _batches(table: pa.Table, step: int) -> list[dict[str, np.ndarray]]:
    return [
        {name: objects(chunk.column(name).to_pylist()) for name in chunk.column_names}
        for chunk in (table.slice(offset, step) for offset in range(0, table.num_rows, step))
    ]


def annotate_columns(
    annotator: PoseAnnotator, downloaded: DownloadedShard, model: AbstractContextManager = nullcontext()
) -> tuple[dict[str, np.ndarray], dict]:
    """Run the pose stage over a downloaded shard in batches; returns its output columns and timing stats.

    The model runs in this thread, inside ``model`` (a lock shared by the
    threads of one actor): one shard at a time uses the model, from its first
    batch to its last. A helper thread decodes the next batch and finishes the
    previous one (keep rule, JSON, skeleton PNG) meanwhile, so the model does
    not wait for image codecs when a spare core exists. The first batch is
    decoded, and the last one finished, outside ``model``: another shard's
    model run overlaps them.
    """
    start = time.monotonic()
    batches = _batches(downloaded.table, annotator.config.images_per_call)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pose-codec") as helper:
        decoded = annotator.decode(batches[0])
        finishing = []
        with model:
            for index in range(len(batches)):
                upcoming = helper.submit(annotator.decode, batches[index + 1]) if index + 1 < len(batches) else None
                finishing.append(helper.submit(annotator.finish, decoded, annotator.estimate(decoded.images)))
                if upcoming is not None:
                    decoded = upcoming.result()
        parts = [future.result() for future in finishing]
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    extra = {
        "pose_s": round(time.monotonic() - start, 3),
        "download_s": downloaded.stats.get("download_s", 0.0),
        "estimator": annotator.name,
        "download": downloaded.stats.get("download", {}),
    }
    return columns, extra


def annotate_shard(annotator: PoseAnnotator, downloaded: DownloadedShard, output: str | Path, schema: pa.Schema) -> dict:
    """Run the pose stage over a downloaded shard (:func:`annotate_columns`) and write the shard; returns its stats."""
    columns, extra = annotate_columns(annotator, downloaded)
    return write_laion_shard(output, downloaded.spec.stem, columns, downloaded.carried, schema, extra)


class DownloadWorker:
    """Actor body: downloads shards one at a time, retrying a shard whose download raises."""

    def __init__(self, plan: InputPlan, input_config: InputConfig, config: DownloadConfig, *, retries: int) -> None:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else importing albumentations asks PyPI
        import img2dataset.resizer  # noqa: F401  # the slow import (the whole package, torch included), once per actor

        self.plan, self.input_config, self.config, self.retries = plan, input_config, config, retries

    def ready(self) -> bool:
        return True

    def download(self, spec: ShardSpec) -> DownloadedShard:
        attempt = 0
        while True:
            try:
                return download_shard(spec, self.plan, self.input_config, self.config)
            except Exception as err:  # an unreadable input or a resizer crash: retry, then fail the shard
                attempt += 1
                if attempt > self.retries:
                    raise
                _log.warning("shard %s download failed (attempt %d), retrying: %s", spec.stem, attempt, err)


class PoseWorker:
    """Actor body: one :class:`PoseAnnotator` (one model), many shards; writes each shard it finishes.

    Safe to call from several threads (a Ray actor with ``max_concurrency`` > 1):
    one shard at a time runs the model, while another decodes its first images
    or finishes its last ones and writes its files, so the model waits neither
    for codecs nor for the disk (tar, parquet, fsyncs).
    """

    def __init__(
        self, stage: PoseStageConfig, output: str, schema: pa.Schema, estimator: PoseEstimator | None = None,
        *, run_id: str | None = None,
    ) -> None:  # fmt: skip
        self._lock = OutputLock.join(output, run_id)  # held while this actor lives, even past a killed driver
        self.annotator = PoseAnnotator(stage, estimator)
        self.output = output
        self.schema = schema
        self._model = threading.Lock()

    def ready(self) -> str:
        return self.annotator.name

    def process(self, downloaded: DownloadedShard) -> dict:
        columns, extra = annotate_columns(self.annotator, downloaded, self._model)
        return write_laion_shard(self.output, downloaded.spec.stem, columns, downloaded.carried, self.schema, extra)

    def close(self) -> None:
        self.annotator.close()


@dataclass(frozen=True)
class WorkerPlan:
    """How many actors of each kind, with which resources."""

    pose_workers: int
    pose_cpus: float
    pose_gpus: float
    download_workers: int
    download_cpus: float


def plan_workers(resources: ResourcesConfig, cpus: float, gpus_total: float, shards: int) -> WorkerPlan:
    """The actors a cluster with ``cpus`` and ``gpus_total`` holds; raises when the requested ones do not fit."""
    gpus = resources.pose_gpus if resources.pose_gpus is not None else (1.0 if gpus_total >= 1 else 0.0)
    if resources.pose_workers is not None:
        pose = resources.pose_workers
    elif gpus > 0:
        pose = max(1, int(gpus_total // gpus))
    else:
        pose = max(1, int((cpus - resources.download_cpus) // resources.pose_cpus))
    pose = max(1, min(pose, shards))
    spare = cpus - pose * resources.pose_cpus
    download = resources.download_workers or max(1, min(2 * pose, int(spare // resources.download_cpus)))
    download = max(1, min(download, shards))
    needed = pose * resources.pose_cpus + download * resources.download_cpus
    if needed > cpus + 1e-9:
        raise ValueError(
            f"{pose} pose worker(s) x {resources.pose_cpus} CPU + {download} download worker(s) x "
            f"{resources.download_cpus} CPU = {needed} CPUs, but the cluster has {cpus}: "
            f"lower --pose-workers/--pose-cpus or --download-workers/--download-cpus"
        )
    if gpus * pose > gpus_total + 1e-9:
        raise ValueError(f"{pose} pose worker(s) x {gpus} GPU exceed the cluster's {gpus_total} GPU(s)")
    return WorkerPlan(pose, resources.pose_cpus, gpus, download, resources.download_cpus)
