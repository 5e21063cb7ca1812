"""The download stage: one input shard through img2dataset's downloader, one row per input row out.

Each shard runs img2dataset's own shard worker (``img2dataset.downloader.
Downloader``: its thread pool, urllib fetch with timeout and retries,
X-Robots-Tag opt-outs, resizer and re-encoding (skipped for a JPEG that fits,
see :mod:`.resizer`), sha256 of the original bytes,
per-shard ``_stats.json``) in the calling process, on a local temporary
folder. That is the object ``img2dataset.download`` hands to each of its
distributors; calling it directly from a Ray task (our distributor) skips the
two processes ``download`` spawns per call (its logger and its process pool,
each importing img2dataset and torch again), keeps our own shard boundaries and
keys, and lets Ray retry a failed shard. The resizer is
:class:`pipelines.laion_pose.resizer.GuardedResizer`.

Rows refused by :class:`pipelines.laion_pose.url_policy.UrlPolicy` are never
handed to img2dataset. img2dataset's per-sample errors become statuses of
:data:`datasets.laion_pose.STATUSES` (:func:`status_of`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipelines.laion_pose.config import DownloadConfig, InputConfig
from pipelines.laion_pose.inputs import InputPlan, ShardSpec, read_shard
from pipelines.laion_pose.url_policy import UrlPolicy, resolve_relative

DOWNLOADED = "downloaded"
"""Status of a row whose image was fetched and stored; the pose stage replaces it."""
ROBOTS_DIRECTIVES = ["noai", "noimageai", "noindex", "noimageindex"]

DOWNLOAD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("sha256", pa.string()),
    ]
)


@dataclass(frozen=True)
class DownloadedShard:
    """What the download stage hands to the pose stage for one shard."""

    spec: ShardSpec
    table: pa.Table
    """:data:`DOWNLOAD_SCHEMA`, one row per input row, in input order."""
    carried: pa.Table
    """The carried input columns, same rows and order."""
    stats: dict = field(default_factory=dict)
    """img2dataset's shard stats (``img2dataset``) and timings."""


def status_of(img2dataset_status: str, error: str | None) -> str:
    """Our status for one of img2dataset's per-sample outcomes."""
    error = error or ""
    if img2dataset_status == "success":
        return DOWNLOADED
    if img2dataset_status == "failed_to_download":
        return "opted_out" if "X-Robots-Tag" in error else "download_failed"
    if error == "image too small":
        return "image_too_small"
    if error == "image area too large":
        return "image_too_large"
    return "not_an_image"


def shard_key(spec: ShardSpec, row: int, digits: int) -> str:
    return f"{spec.stem}{row:0{digits}d}"


def _run_img2dataset(rows: list[int], urls: list[str], config: DownloadConfig) -> tuple[dict[int, dict], dict]:
    """img2dataset's shard worker on ``urls``; returns its output row per input row index, and its stats."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else importing albumentations asks PyPI for updates
    import pyarrow.parquet as pq
    from img2dataset.downloader import Downloader
    from img2dataset.writer import ParquetSampleWriter

    from pipelines.laion_pose.resizer import GuardedResizer

    with tempfile.TemporaryDirectory(prefix="laion-pose-download-") as work:
        table = pa.table({"row": pa.array(rows, pa.int64()), "url": pa.array(urls, pa.string())})
        feather = os.path.join(work, "input.feather")
        with pa.OSFile(feather, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        output = os.path.join(work, "out")
        os.mkdir(output)
        resizer = GuardedResizer(
            image_size=config.image_size,
            resize_mode=config.resize_mode,
            resize_only_if_bigger=config.resize_only_if_bigger,
            encode_quality=config.encode_quality,
            encode_format="jpg",
            keep_fitting_jpeg=config.keep_fitting_jpeg,
            min_image_size=config.min_image_size,
            max_image_area=config.max_image_area,
        )
        downloader = Downloader(
            sample_writer_class=ParquetSampleWriter,
            resizer=resizer,
            thread_count=min(config.thread_count, max(1, len(rows))),
            save_caption=False,
            extract_exif=False,
            output_folder=output,
            column_list=["row", "url"],
            timeout=config.timeout,
            number_sample_per_shard=max(10, len(rows)),
            oom_shard_count=5,
            compute_hash="sha256",
            verify_hash_type=None,
            encode_format="jpg",
            retries=config.retries,
            user_agent_token=config.user_agent_token,
            disallowed_header_directives=ROBOTS_DIRECTIVES if config.honour_robots_tag else None,
        )
        ok, _ = downloader((0, feather))
        if not ok:
            raise RuntimeError("img2dataset's downloader failed on this shard (its traceback is in the worker log)")
        result = pq.read_table(os.path.join(output, "00000.parquet"))
        stats = json.loads(Path(output, "00000_stats.json").read_text())
    by_row = {record["row"]: record for record in result.to_pylist()}
    return by_row, stats


def download_shard(spec: ShardSpec, plan: InputPlan, input_config: InputConfig, config: DownloadConfig) -> DownloadedShard:
    """Read ``spec``'s rows, refuse what the URL policy refuses, fetch the rest; one output row per input row."""
    start = time.monotonic()
    rows = read_shard(spec, input_config, plan)
    urls = [resolve_relative(u, input_config.url_base) for u in rows.column("url").to_pylist()]
    policy = UrlPolicy(
        allow_private=config.allow_private_urls,
        allowed_file_roots=config.allowed_file_roots,
        dns_timeout=config.dns_timeout,
    )
    verdicts = policy.check_many(urls, threads=config.thread_count)
    fetch = [i for i, verdict in enumerate(verdicts) if verdict is None]
    fetched, i2d_stats = _run_img2dataset(fetch, [urls[i] for i in fetch], config) if fetch else ({}, {"count": 0})
    columns: dict[str, list] = {name: [] for name in DOWNLOAD_SCHEMA.names}
    for row, (url, caption, verdict) in enumerate(zip(urls, rows.column("caption").to_pylist(), verdicts)):
        record = fetched.get(row, {})
        if verdict is not None:
            status, error = verdict.status, verdict.error
        elif not record:
            status, error = "download_failed", "img2dataset returned no record for this sample"
        else:
            status, error = status_of(record["status"], record["error_message"]), record["error_message"]
        keep = status == DOWNLOADED
        values = {
            "key": shard_key(spec, row, input_config.key_digits),
            "status": status,
            "error": error,
            "url": url,
            "caption": caption,
            "image": record.get("jpg") if keep else None,
            "sha256": record.get("sha256") if keep else None,
            **{k: record.get(k) if keep else None for k in ("width", "height", "original_width", "original_height")},
        }
        for name, value in values.items():
            columns[name].append(value)
    table = pa.table(columns, schema=DOWNLOAD_SCHEMA)
    stats = {"img2dataset": i2d_stats, "download_s": round(time.monotonic() - start, 3)}
    return DownloadedShard(spec, table, rows.drop_columns(["url", "caption"]), stats)
