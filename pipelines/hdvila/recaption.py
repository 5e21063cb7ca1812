"""Caption an existing clip shard set without cutting again (``build_hdvila_clips.py recaption``).

The source folder is only read. Each source shard ``NNNNN`` is read by a Ray
task (its parquet index, all rows, and its tar's kept clips) and handed to a
caption actor (:mod:`.caption_workers`), which writes, per ``write``:

- ``shards``: ``OUTPUT/NNNNN.tar`` + ``.parquet`` + ``.stats.json``, a clip shard
  set with the same keys, the captions recorded with their sources
  (:mod:`datasets.clips`); clips whose caption the gate rejects are left out,
  counted with their reason, and rows rejected before keep their status;
- ``parquet``: ``OUTPUT/NNNNN.parquet`` (:data:`TABLE_SCHEMA`, every row of the
  source shard) + ``NNNNN.stats.json``, and at the end ``OUTPUT/captions.parquet``
  holding the accepted captions keyed by ``clip_id`` and ``key``, which the
  builder reads with ``--captions OUTPUT/captions.parquet``.

Resuming, the lock and ``config.json`` work as in the builder (:mod:`.job`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datasets import clips
from datasets.clips import ANNOTATION_EXT, KEPT, KIND, SCHEMA_VERSION, STATUSES, VIDEO_EXT, shard_paths
from datasets.output_folder import OutputLock, prepare_output_folder
from datasets.shards import (
    ProgressLogger, ShardWriter, aggregate_stats, finished_shards, make_shard_stats, remove_partial_files, shard_stem,
    write_json_atomic, write_parquet_atomic,
)  # fmt: skip
from pipelines.hdvila.caption_workers import CutShard, run_feeding, start_workers, stop_workers
from pipelines.hdvila.captioning import check_model_folder
from pipelines.hdvila.config import RecaptionConfig
from pipelines.hdvila.planning import ShardPlan
from pipelines.ray_runtime import ray_session

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
CAPTIONS_NAME = "captions.parquet"
TABLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("clip_id", pa.string()),
        pa.field("video_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("caption_source", pa.string()),
        pa.field("caption_similarity", pa.float64()),
        pa.field("file_caption", pa.string()),
    ]
)
"""A caption table: one row per clip of the source shard; ``caption`` is the generated caption (also when rejected,
with the reason in ``error``), ``file_caption`` the source clip's caption-file text."""
_RESUMABLE = ("clips_per_call", "device", "workers", "cpus", "gpus")


def read_source_shard(tar: str, index: int) -> CutShard:
    """Every index row of a source shard, its kept clips with their ``mp4`` and ``annotation`` from the tar."""
    started = time.monotonic()
    rows = pq.read_table(Path(tar).with_suffix(".parquet")).to_pylist()
    members: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as archive:
        for member in archive:
            key, _, suffix = member.name.partition(".")
            if suffix in (VIDEO_EXT, ANNOTATION_EXT):
                members.setdefault(key, {})[suffix] = archive.extractfile(member).read()
    for row in rows:
        sample = members.get(row["key"], {})
        row.update(mp4=sample.get(VIDEO_EXT), annotation=sample.get(ANNOTATION_EXT))
        if row["status"] == KEPT and (row["mp4"] is None or row["annotation"] is None):
            row.update(status="caption_failed", error=f"kept in the index but missing from {Path(tar).name}", mp4=None)
    return CutShard(ShardPlan(index, rows), time.monotonic() - started)


def write_caption_table(output: str, index: int, rows: list[dict], extra: dict, source: str) -> dict:
    """Write a shard's caption table and stats (no tar); ``source`` is the captioning model's ``model:<id>``."""
    table = [
        {
            "key": row["key"], "clip_id": row.get("clip_id"), "video_id": row.get("video_id"), "status": row["status"],
            "error": row.get("error"), "caption": row.get("generated_caption"),
            "caption_source": source if row.get("generated_caption") else None,
            "caption_similarity": row.get("caption_similarity"),
            "file_caption": json.loads(row["annotation"]).get("captions", {}).get(clips.FILE_SOURCE) if row.get("annotation") else None,
        }
        for row in rows
    ]  # fmt: skip
    stem = shard_stem(index)
    with ShardWriter(output, stem, write_tar=False) as writer:
        stats = make_shard_stats(stem, Counter(row["status"] for row in rows), statuses=STATUSES, **extra)
        writer.commit(pa.Table.from_pylist(table, schema=TABLE_SCHEMA), stats)
    return stats


def _check_config(config: RecaptionConfig, output: Path) -> None:
    caption = {k: v for k, v in dataclasses.asdict(config.caption).items() if k not in _RESUMABLE}
    shaping = {"clips": str(Path(config.clips).resolve()), "write": config.write, "caption": caption}
    path = output / CONFIG_NAME
    if path.exists() and finished_shards(output):
        try:
            previous = json.loads(path.read_text()).get("shaping")
        except ValueError as error:
            raise ValueError(f"{path} is not a recaption config ({error}); use another output folder") from None
        if previous != shaping:
            raise ValueError(f"{output} holds captions made with other settings than these ({path}); use another output folder")
    write_json_atomic(path, {"schema": KIND, "schema_version": SCHEMA_VERSION, "shaping": shaping, "config": dataclasses.asdict(config)})


def run_recaption(config: RecaptionConfig) -> dict:
    """Caption ``config.clips`` into ``config.output``; returns the totals written to ``OUTPUT/stats.json``."""
    tars = shard_paths(config.clips)[: config.max_shards]
    if not tars:
        raise FileNotFoundError(f"no complete clip shards in {config.clips}")
    if Path(config.output).resolve() == Path(config.clips).resolve():
        raise ValueError("recaption output must be another folder than the clips it reads (the source is never written)")
    check_model_folder(config.caption.model, "--caption-model")
    if config.caption.clip_model:
        check_model_folder(config.caption.clip_model, "--caption-clip-model")
    output = prepare_output_folder(config.output)
    with OutputLock(output, workers=True) as lock:
        _check_config(config, output)
        remove_partial_files(output)
        done = finished_shards(output)
        todo = [tar for tar in tars if tar.stem not in done]
        with ray_session(config.ray) as session:
            import ray

            progress = ProgressLogger(len(tars), unit="clips", logger=logger)
            progress.skip(len(tars) - len(todo))
            workers = start_workers(config.caption, output, lock.run_id, session) if todo else []
            progress.restart_clock()
            try:
                read = ray.remote(num_cpus=config.cpus_per_task, max_retries=2)(read_source_shard)
                items = ((tar.stem, functools.partial(read.remote, str(tar), int(tar.stem))) for tar in todo)
                method = "write_shard" if config.write == "shards" else "write_table"
                failures, throughput = run_feeding(items, workers, method, max(2, int(session.num_cpus)), progress)
            finally:
                stop_workers(workers)
        extra = {"schema": KIND, "schema_version": SCHEMA_VERSION, "planned_shards": len(tars),
                 "caption_model": config.caption.source_name, "source_clips": str(config.clips), "last_run": throughput}  # fmt: skip
        totals = aggregate_stats(output, statuses=STATUSES, extra=extra)
        if config.write == "parquet" and not failures:
            _combine_tables(output)
    if failures:
        raise RuntimeError(f"{len(failures)} shard(s) failed (rerun to retry them): {'; '.join(failures)}")
    return totals


def _combine_tables(output: Path) -> None:
    """``captions.parquet``: the accepted captions of every shard table, keyed by ``clip_id`` and ``key``."""
    tables = [pq.read_table(output / f"{stem}.parquet") for stem in sorted(finished_shards(output))]
    table = pa.concat_tables(tables)
    accepted = table.filter(pc.equal(table.column("status"), KEPT))
    write_parquet_atomic(output / CAPTIONS_NAME, accepted.select(["clip_id", "key", "caption", "caption_source", "caption_similarity"]))
    logger.info("%d captions in %s", accepted.num_rows, output / CAPTIONS_NAME)
