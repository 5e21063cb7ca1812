"""Writing one LAION-Pose shard in the layout of :mod:`datasets.laion_pose`, atomically.

The tar holds the kept samples (``jpg``, ``txt``, ``json``, ``pose.png``); the
parquet index holds every input row of the shard (kept or not) with
:data:`datasets.laion_pose.INDEX_SCHEMA` then the carried columns; the stats
count the rows per status. :class:`datasets.shards.ShardWriter` makes the
three appear together or not at all.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets.laion_pose import (
    ANNOTATION_EXT,
    CAPTION_EXT,
    IMAGE_EXT,
    INDEX_SCHEMA,
    KEPT,
    SKELETON_EXT,
    STATUSES,
)
from datasets.shards import TAR_SUFFIX, ShardWriter, make_shard_stats

_INT_COLUMNS = ("width", "height", "person_count", "visible_keypoints")


def index_schema(carried_schema: pa.Schema) -> pa.Schema:
    """The parquet index schema: the LAION-Pose index columns, then the carried input columns."""
    return pa.schema(list(INDEX_SCHEMA) + list(carried_schema))


def _int_or_none(value):
    return None if value is None else int(value)


def _caption_bytes(caption) -> bytes:
    return ("" if caption is None else str(caption)).encode("utf-8", errors="replace")


def index_table(stem: str, columns: dict[str, np.ndarray], carried: pa.Table, schema: pa.Schema) -> pa.Table:
    """One index row per input row of the shard."""
    statuses = list(columns["status"])
    values = {
        "key": [str(k) for k in columns["key"]],
        "status": statuses,
        "error": [None if e is None else str(e) for e in columns["error"]],
        "url": list(columns["url"]),
        "caption": list(columns["caption"]),
        **{name: [_int_or_none(v) for v in columns[name]] for name in _INT_COLUMNS},
        "shard": [f"{stem}{TAR_SUFFIX}" if status == KEPT else None for status in statuses],
        "sha256": list(columns["sha256"]),
    }
    table = pa.table(values, schema=INDEX_SCHEMA)
    for field in carried.schema:
        table = table.append_column(field, carried.column(field.name))
    return table.cast(schema)


def write_laion_shard(
    directory: str | Path,
    stem: str,
    columns: dict[str, np.ndarray],
    carried: pa.Table,
    schema: pa.Schema,
    extra_stats: dict | None = None,
) -> dict:
    """Write shard ``stem`` (tar of kept samples, parquet index, stats) and return its stats.

    ``columns`` are the pose stage's output columns for every row of the shard,
    in input order; ``carried`` the carried input columns of the same rows.
    """
    keys = columns["key"]
    with ShardWriter(directory, stem) as writer:
        for index in np.flatnonzero(np.asarray(columns["status"]) == KEPT):
            writer.write(
                {
                    "__key__": str(keys[index]),
                    IMAGE_EXT: bytes(columns["image"][index]),
                    CAPTION_EXT: _caption_bytes(columns["caption"][index]),
                    ANNOTATION_EXT: columns["annotation"][index].encode("utf-8"),
                    SKELETON_EXT: bytes(columns["skeleton"][index]),
                }
            )
        stats = make_shard_stats(
            stem, Counter(columns["status"]), statuses=STATUSES, samples=writer.sample_count, **(extra_stats or {})
        )
        writer.commit(index_table(stem, columns, carried, schema), stats)
    return stats
