"""Reading the LAION metadata: find the parquet files, check the columns, plan deterministic shards.

The plan is made on the driver from the parquet footers only (row counts and
schemas), before any work starts: a missing column is an error naming it and
the file. Rows are numbered in a fixed order (files sorted by path, rows in
file order) and cut into shards of ``shard_size`` rows, so shard ``i`` holds
the same rows, and its samples the same keys, on every run. A worker reads
back only the row groups its shard overlaps.

A bad value is a row's problem, never its shard's: text that is not valid
UTF-8 (a binary caption column, or a string column holding other bytes) is
decoded with U+FFFD replacements in captions and carried columns, and a URL
that is not UTF-8 makes its row a ``download_failed`` row with that reason
(:data:`ROW_PROBLEM`). Only a URL or caption column whose type cannot hold
text (a list, a struct) is refused, at planning time.
"""

from __future__ import annotations

import glob as globlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from datasets.laion_pose import INDEX_COLUMNS
from pipelines.laion_pose.config import InputConfig
from datasets.shards import shard_stem

CARRIED_PREFIX = "input_"
"""Prefix given to a carried column whose name clashes with an index column (``status`` -> ``input_status``)."""
ROW_PROBLEM = "error"
"""Column of :func:`read_shard`: why a row cannot be fetched (None when it can); an index column name, so no carried
column has it."""


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of one parquet file."""

    file: str
    start: int
    stop: int


@dataclass(frozen=True)
class ShardSpec:
    """One shard of the input: which rows, and its name."""

    index: int
    segments: tuple[Segment, ...]

    @property
    def stem(self) -> str:
        return shard_stem(self.index)

    @property
    def rows(self) -> int:
        return sum(s.stop - s.start for s in self.segments)


@dataclass(frozen=True)
class InputPlan:
    """The checked input and its shards."""

    files: tuple[str, ...]
    total_rows: int
    carried: tuple[str, ...]
    """Input columns carried into the index."""
    carried_as: tuple[str, ...]
    """Their names in the index (renamed on a clash with :data:`datasets.laion_pose.INDEX_COLUMNS`)."""
    carried_schema: pa.Schema
    """Types of the carried columns, as written in the index (unified over the files)."""
    shards: tuple[ShardSpec, ...]


def _filesystem(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def resolve_files(path: str) -> list[str]:
    """The parquet files named by ``path``: a file, a glob or a folder (searched recursively), sorted."""
    fs, root = _filesystem(path)
    if globlib.has_magic(root):
        found = [p for p in fs.glob(root) if not fs.isdir(p)]
    elif fs.isdir(root):
        found = [p for p in fs.find(root) if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))]
    elif fs.exists(root):
        found = [root]
    else:
        raise FileNotFoundError(f"input {path!r} does not exist")
    if not found:
        raise FileNotFoundError(f"no parquet file found at {path!r}")
    return sorted(fs.unstrip_protocol(p) for p in found)


def _footer(file: str) -> tuple[int, pa.Schema]:
    import pyarrow.parquet as pq

    fs, path = _filesystem(file)
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        return reader.metadata.num_rows, reader.schema_arrow


def _carried_names(carried: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{CARRIED_PREFIX}{name}" if name in INDEX_COLUMNS else name for name in carried)


def plan_input(config: InputConfig) -> InputPlan:
    """Check the input's columns and split its rows into shards; raises ``ValueError`` naming a missing column."""
    files = resolve_files(config.path)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        footers = list(pool.map(_footer, files))
    first_schema = footers[0][1]
    if config.carry_columns is None:
        carried = tuple(n for n in first_schema.names if n not in (config.url_column, config.caption_column))
    else:
        carried = tuple(c for c in config.carry_columns if c not in (config.url_column, config.caption_column))
    needed = (config.url_column, config.caption_column, *carried)
    for file, (_, schema) in zip(files, footers):
        missing = [name for name in needed if name not in schema.names]
        if missing:
            raise ValueError(
                f"input column(s) {missing} not found in {file}; it has {schema.names}. "
                f"Set the URL/caption columns (--url-column/--caption-column) or the carried columns (--carry-columns)."
            )
    for name in (config.url_column, config.caption_column):
        kind = footers[0][1].field(name).type
        if pa.types.is_nested(kind) or pa.types.is_dictionary(kind):
            raise ValueError(f"input column {name!r} has type {kind}; it must hold text (string or binary)")
    try:
        carried_schema = pa.unify_schemas([pa.schema([s.field(c) for c in carried]) for _, s in footers])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"carried columns have different types across input files: {err}") from err
    carried_as = _carried_names(carried)
    carried_schema = pa.schema([f.with_name(n).with_nullable(True) for f, n in zip(carried_schema, carried_as)])
    counts = [rows for rows, _ in footers]
    total = sum(counts) if config.limit is None else min(sum(counts), config.limit)
    return InputPlan(tuple(files), total, carried, carried_as, carried_schema, _cut(files, counts, total, config.shard_size))


def _cut(files: list[str], counts: list[int], total: int, shard_size: int) -> tuple[ShardSpec, ...]:
    shards: list[ShardSpec] = []
    segments: list[Segment] = []
    in_shard = 0
    remaining = total
    for file, rows in zip(files, counts):
        start = 0
        while start < rows and remaining > 0:
            take = min(rows - start, shard_size - in_shard, remaining)
            segments.append(Segment(file, start, start + take))
            start += take
            in_shard += take
            remaining -= take
            if in_shard == shard_size:
                shards.append(ShardSpec(len(shards), tuple(segments)))
                segments, in_shard = [], 0
    if segments:
        shards.append(ShardSpec(len(shards), tuple(segments)))
    return tuple(shards)


def _read_segment(segment: Segment, columns: list[str]) -> pa.Table:
    import pyarrow.parquet as pq

    fs, path = _filesystem(segment.file)
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        groups, first = [], None
        offset = 0
        for group in range(reader.metadata.num_row_groups):
            size = reader.metadata.row_group(group).num_rows
            if offset + size > segment.start and offset < segment.stop:
                groups.append(group)
                first = offset if first is None else first
            offset += size
        if not groups:
            return reader.schema_arrow.empty_table().select(columns)
        table = reader.read_row_groups(groups, columns=columns)
    return table.slice(segment.start - first, segment.stop - segment.start)


def _as_text(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, list[int]]:
    """``column`` as UTF-8 strings, and the rows whose bytes were not UTF-8 (decoded with U+FFFD replacements)."""
    kind = column.type
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if not (textual or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)):
        return column.cast(pa.string()), []
    try:
        if textual:  # parquet readers do not check that string columns hold UTF-8
            column.validate(full=True)
        return column.cast(pa.string()), []
    except pa.ArrowInvalid:  # some value is not UTF-8
        pass
    raw = (column.cast(pa.large_binary()) if textual else column).to_pylist()
    bad = []
    for row, value in enumerate(raw):
        try:
            raw[row] = None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(row)
            raw[row] = value.decode("utf-8", errors="replace")
    return pa.chunked_array([pa.array(raw, pa.string())]), bad


def _repaired(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """A carried column cast to its index type; string values that are not UTF-8 decoded with replacements."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _as_text(column)[0].cast(kind)
    return column.cast(kind)


def read_shard(spec: ShardSpec, config: InputConfig, plan: InputPlan) -> pa.Table:
    """The rows of ``spec``: ``url`` and ``caption`` (strings), :data:`ROW_PROBLEM` and the carried columns under their
    index names."""
    columns = [config.url_column, config.caption_column, *plan.carried]
    parts = [_read_segment(segment, list(dict.fromkeys(columns))) for segment in spec.segments]
    table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    urls, bad_urls = _as_text(table.column(config.url_column))
    problems = [None] * table.num_rows
    for row in bad_urls:
        problems[row] = f"the URL is not valid UTF-8 ({config.url_column!r} column)"
    out = {"url": urls, "caption": _as_text(table.column(config.caption_column))[0], ROW_PROBLEM: pa.array(problems, pa.string())}
    for name, field in zip(plan.carried, plan.carried_schema):
        out[field.name] = _repaired(table.column(name), field.type)
    return pa.table(out)
