"""Reading HD-VILA metadata and captions, and finding the downloaded videos.

The published metadata is JSON lines::

    {"video_id": "abc", "url": "https://www.youtube.com/watch?v=abc",
     "clip": [{"clip_id": "abc.1.mp4", "span": ["00:00:01.000", "00:00:05.500"]}, ...]}

A parquet with the same columns (``clip`` a list of structs) works too, and so
does a flat parquet with one row per clip (``video_id``, ``clip_id``, ``span``
and optionally ``url``); a flat file is read whole and grouped by ``video_id``
in order of first appearance.

A metadata or caption file that is missing or unreadable (not UTF-8 text from
its first line, a ``.parquet`` that is not parquet, a broken gzip stream) is a
:class:`MetadataError` naming the file; a later line that is not UTF-8 or not
JSON is an ``invalid_metadata`` row.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePosixPath
from typing import Iterator

from pipelines.hdvila.config import VIDEO_EXTENSIONS

class MetadataError(ValueError):
    """A metadata or caption file cannot be read; the message names it and says why, in one line."""


_TIMESTAMP = re.compile(r"^(?:(?:(\d+):)?([0-5]?\d):)?(\d+(?:\.\d*)?)$")


@dataclass(frozen=True)
class VideoEntry:
    """One video of the metadata with its clips, as read (nothing validated beyond the line's shape)."""

    video_id: str
    url: str
    clips: tuple[tuple[str, object], ...]
    """``(clip_id, span)`` pairs in metadata order; ``span`` is whatever the metadata held."""
    line: int
    """1-based line (jsonl) or first row (parquet) of the entry, for messages."""
    error: str | None = None
    """Why the line is unusable (not JSON, no video_id, ...); then ``clips`` is empty."""


def parse_timestamp(value) -> Fraction:
    """``HH:MM:SS.mmm`` (or ``MM:SS.mmm``, or seconds as text or number) to exact seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"not a timestamp: {value!r}")
        return Fraction(str(value))
    match = _TIMESTAMP.match(str(value).strip())
    if not match:
        raise ValueError(f"not a timestamp: {value!r}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + Fraction(seconds)


def parse_span(span) -> tuple[Fraction, Fraction]:
    """A ``[start, end]`` pair of timestamps to exact seconds; ``ValueError`` when it is not one."""
    if isinstance(span, (str, bytes)) or not hasattr(span, "__len__") or len(span) != 2:
        raise ValueError(f"span must be a pair of timestamps, got {span!r}")
    return parse_timestamp(span[0]), parse_timestamp(span[1])


def span_text(span) -> list[str]:
    """The span as two strings for the record (``[]`` when it is not a pair)."""
    try:
        return [str(span[0]), str(span[1])] if len(span) == 2 and not isinstance(span, str) else []
    except TypeError:
        return []


def _entry_from_object(obj, line: int) -> VideoEntry:
    if not isinstance(obj, dict):
        return VideoEntry("", "", (), line, f"line {line} is not a JSON object")
    video_id = obj.get("video_id")
    clips = obj.get("clip")
    if not isinstance(video_id, str) or not video_id:
        return VideoEntry("", "", (), line, f"line {line} has no video_id")
    if not isinstance(clips, list):
        return VideoEntry(video_id, "", (), line, f"line {line} ({video_id}) has no clip list")
    pairs = []
    for clip in clips:
        clip = clip if isinstance(clip, dict) else {}
        pairs.append((str(clip.get("clip_id") or ""), clip.get("span")))
    return VideoEntry(video_id, str(obj.get("url") or ""), tuple(pairs), line)


def _iter_jsonl(path: str) -> Iterator[VideoEntry]:
    import fsspec

    first = True
    with fsspec.open(path, "rb", compression="infer") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if first:
                    raise MetadataError(f"metadata {path} is not UTF-8 text (line {line_number}); expected JSON lines or .parquet") from None
                yield VideoEntry("", "", (), line_number, f"line {line_number} is not UTF-8 text")
                continue
            first = False
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                yield VideoEntry("", "", (), line_number, f"line {line_number} is not JSON: {error.msg}")
                continue
            yield _entry_from_object(obj, line_number)


def _iter_parquet(path: str) -> Iterator[VideoEntry]:
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowException as error:
            raise MetadataError(f"metadata {path} is not a parquet file ({error})") from None
        names = set(parquet.schema_arrow.names)
        if {"video_id", "clip"} <= names:
            columns = ["video_id", "clip"] + (["url"] if "url" in names else [])
            row = 0
            for batch in parquet.iter_batches(columns=columns, batch_size=4096):
                for obj in batch.to_pylist():
                    row += 1
                    yield _entry_from_object(obj, row)
            return
        missing = sorted({"video_id", "clip_id", "span"} - names)
        if missing:
            raise ValueError(
                f"metadata {path} needs either the columns video_id + clip (nested, as published) or video_id + clip_id "
                f"+ span (one row per clip); missing {missing} (it has {sorted(names)})"
            )
        columns = ["video_id", "clip_id", "span"] + (["url"] if "url" in names else [])
        rows = parquet.read(columns=columns).to_pylist()
    grouped: dict[str, dict] = {}
    for row_number, row in enumerate(rows, start=1):
        video_id = row["video_id"]
        if not isinstance(video_id, str) or not video_id:
            yield VideoEntry("", "", (), row_number, f"row {row_number} has no video_id")
            continue
        entry = grouped.setdefault(video_id, {"url": row.get("url") or "", "clips": [], "line": row_number})
        entry["clips"].append((str(row["clip_id"] or ""), row["span"]))
    for video_id, entry in grouped.items():
        yield VideoEntry(video_id, entry["url"], tuple(entry["clips"]), entry["line"])


def iter_videos(path: str) -> Iterator[VideoEntry]:
    """The videos of a metadata file, in file order (format from the extension: parquet, else JSON lines);
    :class:`MetadataError` when the file cannot be read."""
    name = PurePosixPath(path.split("?")[0]).name.lower()
    with readable("metadata", path):
        yield from (_iter_parquet if name.endswith((".parquet", ".pq")) else _iter_jsonl)(path)


@contextmanager
def readable(what: str, path: str) -> Iterator[None]:
    """Turn the errors of reading ``path`` into one-line :class:`MetadataError` s."""
    import pyarrow as pa

    try:
        yield
    except MetadataError:
        raise
    except FileNotFoundError:
        raise MetadataError(f"{what} {path} does not exist") from None
    except (OSError, EOFError, UnicodeError, pa.ArrowException, json.JSONDecodeError) as error:
        raise MetadataError(f"{what} {path} cannot be read: {error}") from None


def load_captions(path: str, *, key: str, column: str) -> dict[str, str]:
    """``{clip_id: caption}`` from a parquet, jsonl, csv or tsv file; errors name missing columns."""
    import fsspec
    import pyarrow as pa

    lower = path.lower()
    with readable("captions", path), fsspec.open(path, "rb", compression="infer") as handle:
        if lower.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            table = pq.read_table(handle)
        elif lower.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
            import pyarrow.csv as pacsv

            delimiter = "\t" if ".tsv" in lower else ","
            table = pacsv.read_csv(handle, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True))
        else:
            table = pa.Table.from_pylist([json.loads(line) for line in handle if line.strip()])
    missing = [name for name in (key, column) if name not in table.column_names]
    if missing:
        raise ValueError(f"caption file {path} has no column(s) {missing}; it has {table.column_names}")
    with readable("captions", path):
        keys = table.column(key).cast(pa.string()).to_pylist()
        texts = table.column(column).cast(pa.string()).to_pylist()
    return {k: (t or "") for k, t in zip(keys, texts) if k is not None}


class VideoIndex:
    """``video_id -> path`` of the downloaded videos under a folder (local or fsspec), listed once."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths

    @classmethod
    def scan(cls, location: str | None) -> "VideoIndex":
        if location is None:
            return cls({})
        import fsspec.core

        fs, root = fsspec.core.url_to_fs(location)
        if not fs.isdir(root):
            raise FileNotFoundError(f"videos folder {location} does not exist or is not a folder")
        rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        best: dict[str, tuple[int, str]] = {}
        for found in sorted(fs.find(root)):
            name = PurePosixPath(found).name
            stem, dot, ext = name.rpartition(".")
            if not dot or name.startswith(".") or f".{ext.lower()}" not in rank:
                continue
            candidate = (rank[f".{ext.lower()}"], found)
            if stem not in best or candidate < best[stem]:
                best[stem] = candidate
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        local = protocol in ("file", "local")
        return cls({stem: (path if local else fs.unstrip_protocol(path)) for stem, (_, path) in best.items()})

    def find(self, video_id: str) -> str | None:
        return self.paths.get(video_id)

    def __len__(self) -> int:
        return len(self.paths)
