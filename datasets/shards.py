"""Atomic, resumable shard sets: the on-disk contract every writer of records shares.

One implementation for every record kind. A record kind is its schema module
in ``datasets/`` (:mod:`datasets.laion_pose`, :mod:`datasets.clips`, ...): it
names the index columns (``INDEX_SCHEMA``) and the statuses (``STATUSES``) a
shard of that kind holds; ``ShardWriter(..., kind=module)`` builds the index
and the stats from them (:meth:`ShardWriter.commit_rows`). The builders in
``pipelines/`` and the synthetic data of ``training/`` write through it.

A shard set is a folder of shards named by a zero-padded stem (``00000``,
``00001``, ...). Shard ``NNNNN`` is up to three files:

- ``NNNNN.tar``: WebDataset samples (optional: a builder may write none),
  written with the standard library's :mod:`tarfile` exactly as
  ``webdataset.TarWriter(encoder=False)`` writes them (members
  ``<key>.<suffix>`` in sorted suffix order, PAX headers, mode 0444, owner
  ``bigdata``), so any WebDataset reader reads them. Not importing webdataset
  here keeps torch (which it imports: seconds and ~500 MB) out of every
  writing worker process;
- ``NNNNN.parquet``: the shard's index, one row per input row;
- ``NNNNN.stats.json``: the shard's counts, written **last**: a shard is
  finished exactly when this file exists.

Every file is first written under a hidden temporary name in the same folder
(``.NNNNN.tar.tmp-<pid>-<random>``, :mod:`datasets.atomic`) and renamed into
place with :func:`os.replace` (atomic on one filesystem), tar then parquet then stats. A
job killed at any moment leaves either nothing, hidden temporaries (removed by
:func:`remove_partial_files` on the next run), or renamed files of a shard
without its ``.stats.json``, which readers ignore and the next run rewrites.

API (stable; the LAION-Pose, HD-VILA and toy-world builders and the synthetic data use it)::

    from datasets.shards import (ShardWriter, finished_shards, remove_partial_files,
                                  shard_stem, make_shard_stats, aggregate_stats,
                                  write_json_atomic, ProgressLogger)

    done = finished_shards(out_dir)                 # {"00000", "00003", ...}
    remove_partial_files(out_dir)                   # leftovers of a killed run
    with ShardWriter(out_dir, shard_stem(7)) as writer:
        writer.write({"__key__": "000070000", "jpg": b"...", "json": b"{...}"})
        stats = make_shard_stats(shard_stem(7), {"kept": 1, "no_person": 3}, statuses=STATUSES)
        writer.commit(index_table, stats)           # tar, parquet, then stats.json
    with ShardWriter(out_dir, shard_stem(8), kind=datasets.clips) as writer:
        ...
        writer.commit_rows(index_rows, samples=2)   # index of kind.INDEX_SCHEMA, counts of kind.STATUSES
    totals = aggregate_stats(out_dir, statuses=STATUSES)  # writes out_dir/stats.json
    progress = ProgressLogger(total_shards, unit="images")
    progress.skip(len(done)); progress.restart_clock()   # once workers are up
    progress.update(stats)                          # logs "shards 3/10 | ... images/s | kept ..."

Shard stats are JSON objects with at least ``shard``, ``input_rows`` and
``counts`` (status -> rows); ``counts`` must add up to ``input_rows``. Other
numeric top-level fields (``elapsed_s``, byte counts, ...) are summed by
:func:`aggregate_stats`; nested objects other than ``counts`` are kept per shard
only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Mapping, Sequence

import pyarrow as pa

from datasets.atomic import TEMP_MARKER, atomic_path, temporary_path, write_json

TAR_SUFFIX = ".tar"
INDEX_SUFFIX = ".parquet"
STATS_SUFFIX = ".stats.json"
TOTALS_NAME = "stats.json"
STEM_DIGITS = 5

TAR_OWNER = "bigdata"
TAR_MEMBER_MODE = 0o444
"""Owner and mode of every tar member: webdataset's ``TarWriter`` defaults."""

_log = logging.getLogger(__name__)


def shard_stem(index: int) -> str:
    """The file stem of shard ``index``: ``00042``."""
    if index < 0:
        raise ValueError(f"shard index must be non-negative, got {index}")
    return f"{index:0{STEM_DIGITS}d}"


@dataclass(frozen=True)
class ShardFiles:
    """The final paths of one shard's files."""

    tar: Path
    index: Path
    stats: Path


def shard_files(directory: str | Path, stem: str) -> ShardFiles:
    directory = Path(directory)
    return ShardFiles(directory / f"{stem}{TAR_SUFFIX}", directory / f"{stem}{INDEX_SUFFIX}", directory / f"{stem}{STATS_SUFFIX}")


def finished_shards(directory: str | Path) -> set[str]:
    """Stems of the finished shards of ``directory`` (those whose ``.stats.json`` exists); empty if no folder."""
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    return {p.name.removesuffix(STATS_SUFFIX) for p in directory.glob(f"*{STATS_SUFFIX}") if not p.name.startswith(".")}


def remove_partial_files(directory: str | Path) -> list[Path]:
    """Delete the hidden temporaries a killed run left in ``directory``; returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.glob(f".*{TEMP_MARKER}*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        _log.info("removed %d partial file(s) of an interrupted run in %s", len(removed), directory)
    return removed


def _sync_and_close(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON (sorted keys, a final newline) to ``path`` atomically, flushed to disk."""
    return write_json(path, obj, indent=2, sort_keys=True, newline=True, fsync=True)


def write_parquet_atomic(path: str | Path, table: pa.Table) -> Path:
    """Write ``table`` to ``path`` atomically, flushed to disk."""
    import pyarrow.parquet as pq

    with atomic_path(path, fsync=True) as temp:
        pq.write_table(table, temp)
    return Path(path)


class ShardWriter:
    """Writes one shard so that it is either finished (``.stats.json`` present) or absent.

    Samples stream into a hidden temporary tar as :meth:`write` is called;
    :meth:`commit` writes the index and stats and renames everything into
    place, ``.stats.json`` last. Leaving the ``with`` block without a commit
    (an exception, a return) deletes the temporaries.
    """

    def __init__(self, directory: str | Path, stem: str, *, kind: ModuleType | None = None, write_tar: bool = True) -> None:
        self.directory = Path(directory)
        self.kind = kind
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.files = shard_files(self.directory, stem)
        self.sample_count = 0
        self._keys: set[str] = set()
        self._tar_temp: Path | None = None
        self._handle = None
        self._tar = None
        self._closed = False
        if write_tar:
            self._tar_temp = temporary_path(self.files.tar)
            self._handle = open(self._tar_temp, "wb")
            self._tar = tarfile.open(fileobj=self._handle, mode="w|")

    def write(self, sample: Mapping[str, bytes]) -> None:
        """Add one WebDataset sample: ``__key__`` (no dots) plus ``suffix -> bytes`` members."""
        if self._tar is None:
            raise RuntimeError("this ShardWriter was opened with write_tar=False" if not self._closed else "shard already closed")
        key = sample.get("__key__")
        if not key or "." in key:
            raise ValueError(f"sample key must be non-empty and free of dots, got {key!r}")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in shard {self.stem}")
        members = {suffix: value for suffix, value in sample.items() if not suffix.startswith("_")}
        for suffix, value in members.items():
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"member {suffix!r} of sample {key!r} must be bytes, got {type(value).__name__}")
        self._keys.add(key)
        for suffix in sorted(members):
            self._add_member(f"{key}.{suffix}", members[suffix])
        self.sample_count += 1

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = time.time()
        info.mode = TAR_MEMBER_MODE
        info.uname = info.gname = TAR_OWNER
        self._tar.addfile(info, io.BytesIO(data))

    def commit(self, index: pa.Table, stats: Mapping) -> ShardFiles:
        """Write ``index`` and ``stats``, then rename tar, parquet and ``.stats.json`` into place."""
        if self._closed:
            raise RuntimeError(f"shard {self.stem} already closed")
        if self._tar is not None:
            self._tar.close()  # ends the tar stream; our handle stays open for the fsync
            self._tar = None
            _sync_and_close(self._handle)
            os.replace(self._tar_temp, self.files.tar)
        self._closed = True
        write_parquet_atomic(self.files.index, index)
        write_json_atomic(self.files.stats, dict(stats))
        return self.files

    def commit_rows(self, rows: Sequence[Mapping], *, counts: Mapping[str, int] | None = None, **extra) -> dict:
        """Commit ``rows`` as an index of this writer's record kind; returns the stats written.

        The index has the kind's ``INDEX_SCHEMA``; the stats count every status
        of the kind's ``STATUSES`` (``counts``, or the ``status`` column of
        ``rows`` if not given) plus the numeric ``extra`` fields.
        """
        if self.kind is None:
            raise RuntimeError("commit_rows needs a ShardWriter opened with kind=<schema module>")
        if counts is None:
            counts = Counter(row["status"] for row in rows)
        stats = make_shard_stats(self.stem, counts, statuses=self.kind.STATUSES, **extra)
        self.commit(pa.Table.from_pylist(list(rows), schema=self.kind.INDEX_SCHEMA), stats)
        return stats

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._tar is not None:
            try:
                self._tar.close()
            except (OSError, ValueError):  # the stream may already be broken; it is deleted below
                pass
            self._tar = None
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        if self._tar_temp is not None:
            self._tar_temp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()


def make_shard_stats(stem: str, counts: Mapping[str, int], *, statuses: Iterable[str] = (), **extra) -> dict:
    """Shard stats with every status of ``statuses`` present (zero if absent) and ``input_rows`` = sum of counts.

    Raises ``ValueError`` for a status outside ``statuses`` (when given) or a negative count.
    """
    statuses = list(statuses)
    unknown = sorted(set(counts) - set(statuses)) if statuses else []
    if unknown:
        raise ValueError(f"unknown status(es) {unknown}; known: {statuses}")
    if any(int(v) < 0 for v in counts.values()):
        raise ValueError(f"negative count in {dict(counts)}")
    full = {status: int(counts.get(status, 0)) for status in statuses} or {k: int(v) for k, v in counts.items()}
    return {"shard": stem, "input_rows": sum(full.values()), "counts": full, **extra}


def read_shard_stats(directory: str | Path) -> list[dict]:
    """The stats of every finished shard of ``directory``, ordered by stem."""
    directory = Path(directory)
    return [json.loads(shard_files(directory, stem).stats.read_text()) for stem in sorted(finished_shards(directory))]


def aggregate_stats(
    directory: str | Path, *, kind: ModuleType | None = None, statuses: Iterable[str] = (), extra: Mapping | None = None
) -> dict:
    """Sum the stats of the finished shards of ``directory`` and write ``directory/stats.json`` atomically.

    ``kind`` (a schema module) supplies ``statuses`` (its ``STATUSES``).

    The totals hold ``shards``, ``input_rows``, ``counts`` (every status of
    ``statuses``, zeros included) and the sum of every other numeric top-level
    field, plus ``extra``. Raises ``ValueError`` if a shard's counts do not add
    up to its ``input_rows``.
    """
    per_shard = read_shard_stats(directory)
    counts = {status: 0 for status in (kind.STATUSES if kind is not None else statuses)}
    sums: dict[str, float] = {}
    input_rows = 0
    for stats in per_shard:
        shard_counts = stats.get("counts", {})
        if sum(shard_counts.values()) != stats.get("input_rows"):
            raise ValueError(
                f"shard {stats.get('shard')}: counts {shard_counts} do not add up to input_rows {stats.get('input_rows')}"
            )
        input_rows += stats["input_rows"]
        for status, value in shard_counts.items():
            counts[status] = counts.get(status, 0) + int(value)
        for name, value in stats.items():
            if name not in ("input_rows", "shard") and isinstance(value, (int, float)) and not isinstance(value, bool):
                sums[name] = sums.get(name, 0) + value
    totals = {**sums, "shards": len(per_shard), "input_rows": input_rows, "counts": counts, **(extra or {})}
    write_json_atomic(Path(directory) / TOTALS_NAME, totals)
    return totals


class ProgressLogger:
    """Logs one line per finished shard: shards done, items per second, kept ratio.

    Shards found finished at start (resume) go through :meth:`skip`; they count
    towards "shards done" but not towards the rate, which measures this run.
    """

    def __init__(
        self,
        total_shards: int,
        *,
        kept_status: str = "kept",
        unit: str = "items",
        logger: logging.Logger | None = None,
        clock=time.monotonic,
    ) -> None:
        self.total_shards = total_shards
        self.kept_status = kept_status
        self.unit = unit
        self.logger = logger or _log
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.rows = 0
        self.kept = 0

    def restart_clock(self) -> None:
        """Start measuring the rate now (call it once the workers are up, so start-up time is not counted)."""
        self.start = self.clock()

    def skip(self, shards: int) -> None:
        """Count ``shards`` already finished by an earlier run."""
        self.done += shards
        if shards:
            self.logger.info("resume: %d/%d shards already finished, skipped", self.done, self.total_shards)

    def update(self, shard_stats: Mapping) -> str:
        """Account one finished shard (its stats) and log the progress line; returns the line."""
        self.done += 1
        self.rows += int(shard_stats.get("input_rows", 0))
        self.kept += int(shard_stats.get("counts", {}).get(self.kept_status, 0))
        line = self.line()
        self.logger.info(line)
        return line

    @property
    def rate(self) -> float:
        elapsed = max(self.clock() - self.start, 1e-9)
        return self.rows / elapsed

    def line(self) -> str:
        ratio = self.kept / self.rows if self.rows else 0.0
        return (
            f"shards {self.done}/{self.total_shards} | {self.rows} {self.unit} in {self.clock() - self.start:.1f} s"
            f" ({self.rate:.2f} {self.unit}/s) | {self.kept_status} {self.kept}/{self.rows} ({ratio:.1%})"
        )
