"""The download stage: one input shard fetched and resized, one row per input row out.

Each row's URL goes through :class:`pipelines.laion_pose.fetcher.ImageFetcher`
(the URL policy on every redirect hop, a connection to the checked address, a
per-image deadline and byte cap, X-Robots-Tag opt-outs, retries) in a pool of
``thread_count`` threads; the fetched bytes go through img2dataset's resizer
(:class:`pipelines.laion_pose.resizer.GuardedResizer`: resize, re-encode, or a
fitting JPEG stored as downloaded) in this thread, one image at a time, as
img2dataset's own shard downloader does (its resizer redirects the process's
stdout/stderr while it runs, so it must not run in two threads at once), and
the stored bytes get their sha256. At most ``2 * thread_count`` fetched images
wait for the resizer, which bounds the memory a shard takes.

img2dataset's per-sample resize errors become statuses of
:data:`datasets.laion_pose.STATUSES` (:func:`status_of`).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterator

import pyarrow as pa

from pipelines.laion_pose.config import DownloadConfig, InputConfig
from pipelines.laion_pose.fetcher import Fetched, ImageFetcher
from pipelines.laion_pose.inputs import ROW_PROBLEM, InputPlan, ShardSpec, read_shard
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
    """Counts of the fetch outcomes (``download``) and timings."""


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


def _resizer(config: DownloadConfig):
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else importing albumentations asks PyPI for updates
    from pipelines.laion_pose.resizer import GuardedResizer

    return GuardedResizer(
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger,
        encode_quality=config.encode_quality,
        encode_format="jpg",
        keep_fitting_jpeg=config.keep_fitting_jpeg,
        min_image_size=config.min_image_size,
        max_image_area=config.max_image_area,
    )


def _fetched_in_order(fetcher: ImageFetcher, urls: dict[int, str], threads: int) -> Iterator[tuple[int, Fetched]]:
    """``(row, fetched)`` as fetches finish, with at most ``2 * threads`` finished ones waiting to be consumed."""
    pending: dict = {}
    todo = iter(urls.items())
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls))), thread_name_prefix="fetch") as pool:
        while True:
            for row, url in islice(todo, 2 * threads - len(pending)):
                pending[pool.submit(fetcher.fetch, url)] = row
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def fetch_and_resize(urls: dict[int, str], policy: UrlPolicy, config: DownloadConfig) -> tuple[dict[int, dict], dict]:
    """Fetch and resize ``urls`` (row -> URL); returns one record per row (status, error, image, sizes, sha256) and
    the counts of outcomes."""
    fetcher = ImageFetcher(
        policy, timeout=config.timeout, deadline=config.image_deadline, max_bytes=config.max_image_bytes,
        retries=config.retries, user_agent_token=config.user_agent_token,
        robots_directives=set(ROBOTS_DIRECTIVES) if config.honour_robots_tag else None,
    )  # fmt: skip
    resizer = _resizer(config)
    records: dict[int, dict] = {}
    for row, fetched in _fetched_in_order(fetcher, urls, config.thread_count):
        if fetched.data is None:
            records[row] = {"status": fetched.status, "error": fetched.error}
            continue
        image, width, height, original_width, original_height, error = resizer(io.BytesIO(fetched.data))
        if error is not None:
            records[row] = {"status": status_of("failed_to_resize", error), "error": error}
            continue
        records[row] = {
            "status": DOWNLOADED, "error": None, "image": image, "sha256": hashlib.sha256(fetched.data).hexdigest(),
            "width": width, "height": height, "original_width": original_width, "original_height": original_height,
        }  # fmt: skip
    return records, dict(Counter(record["status"] for record in records.values()))


def download_shard(spec: ShardSpec, plan: InputPlan, input_config: InputConfig, config: DownloadConfig) -> DownloadedShard:
    """Read ``spec``'s rows and fetch their images under the URL policy; one output row per input row."""
    start = time.monotonic()
    rows = read_shard(spec, input_config, plan)
    urls = [resolve_relative(u, input_config.url_base) for u in rows.column("url").to_pylist()]
    problems = rows.column(ROW_PROBLEM).to_pylist()
    policy = UrlPolicy(
        allow_private=config.allow_private_urls, allowed_file_roots=config.allowed_file_roots,
        allowed_hosts=config.allowed_hosts, dns_timeout=config.dns_timeout, threads=config.thread_count,
    )  # fmt: skip
    try:
        fetch = {row: url for row, (url, problem) in enumerate(zip(urls, problems)) if problem is None}
        records, outcomes = fetch_and_resize(fetch, policy, config) if fetch else ({}, {})
    finally:
        policy.close()
    columns: dict[str, list] = {name: [] for name in DOWNLOAD_SCHEMA.names}
    for row, (url, caption, problem) in enumerate(zip(urls, rows.column("caption").to_pylist(), problems)):
        record = records.get(row) or {"status": "download_failed", "error": problem or "not fetched"}
        values = {"key": shard_key(spec, row, input_config.key_digits), "url": url, "caption": caption, **record}
        for name in columns:
            columns[name].append(values.get(name))
    table = pa.table(columns, schema=DOWNLOAD_SCHEMA)
    stats = {"download": {"fetched": len(fetch), "outcomes": outcomes}, "download_s": round(time.monotonic() - start, 3)}
    return DownloadedShard(spec, table, rows.drop_columns(["url", "caption", ROW_PROBLEM]), stats)
