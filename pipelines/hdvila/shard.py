"""Building one clip shard from its plan: cut video by video, stream samples into the tar, then commit index and stats.

Uses :class:`datasets.shards.ShardWriter`, so a shard is either finished
(``NNNNN.stats.json`` present, written last) or leaves nothing that looks
complete. Samples are written as soon as a video is cut, so a shard never
holds more than one video's clips in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from pathlib import Path

from datasets import clips
from datasets.clips import ANNOTATION_EXT, CAPTION_EXT, FLAGS, KEPT, VIDEO_EXT
from datasets.shards import ShardWriter, shard_stem
from pipelines.hdvila.planning import ShardPlan
from pipelines.hdvila.stages import ClipCutter, batch_to_rows, rows_to_batch


def _index_row(row: dict, tar_name: str) -> dict:
    data = row.get("mp4")
    return {
        "key": row["key"],
        "status": row["status"],
        "error": row["error"],
        "flags": list(row["flags"] or []),
        "video_id": row["video_id"] or None,
        "clip_id": row["clip_id"] or None,
        "clip_index": row["clip_index"],
        "url": row["url"] or None,
        "caption": row["caption"],
        "caption_source": row.get("caption_source"),
        "caption_sources": list(row.get("caption_sources") or []),
        "generated_caption": row.get("generated_caption"),
        "caption_similarity": row.get("caption_similarity"),
        "source": row["source"],
        "span_start": row["span_start"],
        "span_end": row["span_end"],
        "cut_start": row.get("cut_start"),
        "cut_end": row.get("cut_end"),
        "fps": row.get("fps"),
        "frames": row.get("frames"),
        "width": row.get("width"),
        "height": row.get("height"),
        "shard": tar_name,
        "sha256": hashlib.sha256(data).hexdigest() if data else None,
    }


def _results(plan: ShardPlan, cutter: ClipCutter):
    """Planned rows with their results, one video at a time (rows decided at planning pass through)."""
    for _, group in itertools.groupby(plan.rows, key=lambda row: (row["video_id"], row["source"])):
        group = [dict(row) for row in group]
        if any(row["status"] is None for row in group):
            group = batch_to_rows(cutter(rows_to_batch(group)))
        yield from group


def build_shard(plan: ShardPlan, output: str | Path, cutter: ClipCutter | None, **extra_stats) -> dict:
    """Cut and write shard ``plan.index`` into ``output``; returns its stats (also written as ``NNNNN.stats.json``).

    ``cutter`` may be None when every row of the plan is already decided (cut and captioned elsewhere);
    ``extra_stats`` are added to the shard's stats (numbers are summed into ``stats.json``)."""
    started = time.monotonic()
    stem = shard_stem(plan.index)
    tar_name = f"{stem}.tar"
    index_rows: list[dict] = []
    counts: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    seconds, stored = 0.0, 0
    with ShardWriter(output, stem, kind=clips) as writer:
        for row in _results(plan, cutter):
            if row["status"] == KEPT:
                writer.write(
                    {
                        "__key__": row["key"],
                        VIDEO_EXT: row["mp4"],
                        CAPTION_EXT: (row["caption"] or "").encode("utf-8"),
                        ANNOTATION_EXT: row["annotation"],
                    }
                )
                seconds += row["frames"] / row["fps"]
                stored += len(row["mp4"])
                flags.update(row["flags"])
            counts[row["status"]] += 1
            index_rows.append(_index_row(row, tar_name))
            row.pop("mp4", None)
        return writer.commit_rows(
            index_rows,
            counts=counts,
            input_clips=len(index_rows),
            kept_seconds=round(seconds, 3),
            mp4_bytes=stored,
            elapsed_s=round(time.monotonic() - started, 3),
            **{f"flagged_{name}": flags.get(name, 0) for name in FLAGS},
            **extra_stats,
        )
