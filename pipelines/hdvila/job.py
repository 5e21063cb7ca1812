"""The HD-VILA clip job on Ray: plan shards on the driver, cut each shard in a Ray task, aggregate stats.

Before Ray starts, the output folder is checked and locked
(:mod:`datasets.output_folder`; each shard task shares the lock while it
writes), and the metadata, captions and videos folder are read once: a file
that is missing or unreadable stops the job there with one line.

Resuming: shards whose ``.stats.json`` exists are skipped; planning is
deterministic, so a rerun on the same output rebuilds exactly the missing
shards and never duplicates a key. ``config.json`` records the settings that
shape the output; a rerun with other settings is refused unless
``ignore_config_mismatch`` is set. A shard task that raises is logged and
counted; the other shards go on, and the job reports the failures at the end
(a rerun retries them).

Captioning (``caption.enabled``, :mod:`.captioning`): shard tasks only cut and
return their rows; long-lived caption actors (one model each, a GPU each when
the cluster has them, :mod:`.caption_workers`) caption the kept clips, gate the
captions and write the shard. The captioning settings that change the captions
are part of ``config.json``'s shaping settings.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import time
from pathlib import Path

from datasets.clips import KIND, SCHEMA_VERSION, STATUSES
from datasets.output_folder import OutputLock, prepare_output_folder, shared_lock, with_defaults
from pipelines.hdvila.caption_workers import CutShard, run_feeding, start_workers, stop_workers
from pipelines.hdvila.captioning import check_model_folder
from pipelines.hdvila.config import HdvilaConfig
from pipelines.hdvila.metadata import VideoIndex, iter_videos, load_captions
from pipelines.hdvila.planning import ClipPlanner, ShardPlan
from pipelines.hdvila.shard import build_shard
from pipelines.hdvila.stages import RESULT_FIELDS, ClipCutter, batch_to_rows, rows_to_batch
from pipelines.ray_runtime import ray_session
from datasets.shards import (
    ProgressLogger,
    aggregate_stats,
    finished_shards,
    remove_partial_files,
    shard_stem,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# Settings that do not change what a shard holds, so resuming with other values is fine.
_RESUMABLE_SETTINGS = {
    "download", "download_dir", "download_format", "threads", "clips_per_call", "device", "workers", "cpus", "gpus",
}


class ShardFailures(RuntimeError):
    """Some shards raised; finished shards are kept and a rerun retries the others."""


def _shaping_settings(config: HdvilaConfig) -> dict:
    settings = {"source": dataclasses.asdict(config.source), "cut": dataclasses.asdict(config.cut)}
    if config.caption.enabled:  # absent when off, so outputs built before captioning existed resume unchanged
        settings["caption"] = dataclasses.asdict(config.caption)
    return {section: {k: v for k, v in values.items() if k not in _RESUMABLE_SETTINGS} for section, values in settings.items()}


def _field_defaults(cls) -> dict:
    """The defaults of ``cls``'s shaping fields (not :data:`_RESUMABLE_SETTINGS`) as JSON values, for
    :func:`datasets.output_folder.with_defaults` (a section's config cannot be built whole without its required
    fields)."""
    values = {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.name not in _RESUMABLE_SETTINGS
        and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
    }
    return json.loads(json.dumps(values, default=str))


def check_and_write_config(config: HdvilaConfig, output: Path) -> None:
    """Refuse to resume into an output built with other settings; then (re)write ``config.json``."""
    path = output / CONFIG_NAME
    current = _shaping_settings(config)
    if path.exists() and finished_shards(output):
        try:
            previous = json.loads(path.read_text()).get("shaping", {})
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{path} is not a clip-builder config ({error}); use another output folder") from None
        defaults = {section: _field_defaults(type(getattr(config, section))) for section in current if section in previous}
        previous = with_defaults(previous, defaults)
        differing = sorted(
            f"{section}.{name}"
            for section in current
            for name in set(current[section]) | set(previous.get(section, {}))
            if current[section].get(name) != previous.get(section, {}).get(name)
        )
        if differing and not config.ignore_config_mismatch:
            raise ValueError(
                f"{output} holds shards built with other settings ({', '.join(differing)}); use another output "
                "folder or --ignore-config-mismatch"
            )
    record = {"schema": KIND, "schema_version": SCHEMA_VERSION, "shaping": current, "config": dataclasses.asdict(config)}
    write_json_atomic(path, record)


def count_shards(config: HdvilaConfig) -> int:
    """How many shards the plan has (one cheap pass over the metadata, same boundaries as :meth:`ClipPlanner.plan`)."""
    shards, rows = 0, 0
    for entry in iter_videos(config.source.metadata):
        rows += 1 if entry.error is not None else len(entry.clips)
        if rows >= config.source.clips_per_shard:
            shards, rows = shards + 1, 0
    shards += 1 if rows else 0
    return shards if config.max_shards is None else min(shards, config.max_shards)


def _shard_task(plan: ShardPlan, output: str, config: HdvilaConfig, run_id: str | None = None) -> dict:
    with shared_lock(output, run_id):
        return build_shard(plan, output, ClipCutter(config.cut, config.source))


def _cut_task(plan: ShardPlan, config: HdvilaConfig) -> CutShard:
    """Cut a shard's clips without writing them (the caption worker writes the shard)."""
    started = time.monotonic()
    cutter = ClipCutter(config.cut, config.source)
    rows = []
    for _, group in itertools.groupby(plan.rows, key=lambda row: (row["video_id"], row["source"])):
        group = [dict(row) for row in group]
        rows.extend(batch_to_rows(cutter(rows_to_batch(group))) if any(r["status"] is None for r in group) else group)
    for row in rows:  # rows decided at planning never met the cutter: give them its columns, as one batch needs
        for name in RESULT_FIELDS:
            row.setdefault(name, None)
    return CutShard(ShardPlan(plan.index, rows), time.monotonic() - started)


def run(config: HdvilaConfig) -> dict:
    """Run the whole job; returns the totals written to ``OUTPUT/stats.json``."""
    output = prepare_output_folder(config.output)
    with OutputLock(output, workers=True) as lock:
        return _run_locked(config, output, lock.run_id)


def _run_locked(config: HdvilaConfig, output: Path, run_id: str) -> dict:
    if config.caption.enabled:
        check_model_folder(config.caption.model, "--caption-model")
        if config.caption.clip_model:
            check_model_folder(config.caption.clip_model, "--caption-clip-model")
    captions = None
    if config.source.captions:
        captions = load_captions(config.source.captions, key=config.source.caption_key, column=config.source.caption_column)
        logger.info("captions: %d from %s", len(captions), config.source.captions)
    videos = VideoIndex.scan(config.source.videos)
    logger.info("videos: %d files under %s", len(videos), config.source.videos)
    total = count_shards(config)
    check_and_write_config(config, output)
    remove_partial_files(output)
    done = finished_shards(output)
    planner = ClipPlanner(config.source, videos, captions)
    with ray_session(config.ray) as session:
        progress = ProgressLogger(total, unit="clips", logger=logger)  # the rate counts from here, not from Ray's start
        progress.skip(sum(1 for stem in done if int(stem) < total))
        if config.caption.enabled:
            failures, throughput = _run_captioned(config, planner, done, output, run_id, session, progress)
        else:
            failures, throughput = _run_cutting(config, planner, done, output, run_id, session, progress), {}
    extra = {"schema": KIND, "schema_version": SCHEMA_VERSION, "planned_shards": total}
    if config.caption.enabled:
        extra.update(caption_model=config.caption.source_name, last_run=throughput)
    totals = aggregate_stats(output, statuses=STATUSES, extra=extra)
    logger.info("done: %s", json.dumps(totals["counts"]))
    if failures:
        raise ShardFailures(f"{len(failures)} shard(s) failed (rerun to retry them): {'; '.join(failures)}")
    return totals


def _run_cutting(config: HdvilaConfig, planner: ClipPlanner, done: set, output: Path, run_id: str, session, progress) -> list[str]:
    """Cut and write each shard in a Ray task; returns the failures."""
    import ray

    task = ray.remote(num_cpus=config.cpus_per_task, max_retries=2)(_shard_task)
    limit = config.max_in_flight or max(1, int(2 * session.num_cpus / config.cpus_per_task))
    pending: dict = {}
    failures: list[str] = []

    def collect() -> None:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            stem = pending.pop(ref)
            try:
                progress.update(ray.get(ref))
            except Exception as error:  # noqa: BLE001 - one failed shard must not stop the job
                logger.error("shard %s failed: %s", stem, error)
                failures.append(f"{stem}: {error}")

    for plan in planner.plan(iter_videos(config.source.metadata), config.max_shards):
        stem = shard_stem(plan.index)
        if stem in done:
            continue
        pending[task.remote(plan, str(output.resolve()), config, run_id)] = stem
        if len(pending) >= limit:
            collect()
    while pending:
        collect()
    return failures


def _run_captioned(
    config: HdvilaConfig, planner: ClipPlanner, done: set, output: Path, run_id: str, session, progress
) -> tuple[list[str], dict]:
    """Cut in Ray tasks, caption and write in caption actors (:func:`.caption_workers.run_feeding`); returns the
    failures and this run's throughput."""
    import ray

    workers = start_workers(config.caption, output, run_id, session)
    progress.restart_clock()
    try:
        cut = ray.remote(num_cpus=config.cpus_per_task, max_retries=2)(_cut_task)
        spare = max(1.0, session.num_cpus - len(workers) * config.caption.cpus)
        limit = config.max_in_flight or max(2, int(2 * spare / config.cpus_per_task))
        items = (
            (shard_stem(plan.index), functools.partial(cut.remote, plan, config))
            for plan in planner.plan(iter_videos(config.source.metadata), config.max_shards)
            if shard_stem(plan.index) not in done
        )
        return run_feeding(items, workers, "write_shard", limit, progress)
    finally:
        stop_workers(workers)
