"""Turning metadata into shards of planned clips, with the rejections that need no video.

Each input clip becomes one planned row (a dict with the keys of
:data:`PLAN_FIELDS`). Rows decided here carry their final ``status``; the
others have ``status`` None and are cut by :class:`pipelines.hdvila.stages.ClipCutter`.
Decided here, in this order: ``invalid_metadata``, ``duplicate_video``,
``invalid_span``, ``empty_span``, ``too_short`` / ``too_long``,
``overlapping_span`` (or the flag of the same name), ``missing_video``.

Overlapping spans: spans of a video are visited in start order; a span that
starts before the end of an earlier *kept* span overlaps it. With
``overlap_policy='reject'`` (the default) it is rejected, naming the clip it
overlaps, so training never sees the same frames under two keys; with
``keep`` it is cut and flagged. Spans that only touch (one ends where the
next starts) do not overlap: clips are half-open ``[start, end)``.

Planning is deterministic: the same metadata, captions and video folder
give the same shards, which is what makes resuming safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from datasets.clips import clip_key, sanitize_id
from pipelines.hdvila.config import SourceConfig
from pipelines.hdvila.metadata import VideoEntry, VideoIndex, parse_span, span_text

PLAN_FIELDS = (
    "key", "video_id", "clip_id", "clip_index", "url", "caption", "source",
    "span", "span_start", "span_end", "status", "error", "flags",
)


@dataclass(frozen=True)
class ShardPlan:
    """The planned rows of one shard (whole videos, in metadata order)."""

    index: int
    rows: list[dict]

    @property
    def pending(self) -> int:
        """Rows still to be cut."""
        return sum(row["status"] is None for row in self.rows)


def _row(entry: VideoEntry, key: str, clip_index: int, clip_id: str, span, caption: str) -> dict:
    return {
        "key": key,
        "video_id": entry.video_id,
        "clip_id": clip_id,
        "clip_index": clip_index,
        "url": entry.url,
        "caption": caption,
        "source": None,
        "span": span_text(span),
        "span_start": None,
        "span_end": None,
        "status": None,
        "error": None,
        "flags": [],
    }


def _check_spans(rows: list[dict], spans: list, config: SourceConfig) -> None:
    """Set span seconds, then the span-level statuses (invalid, empty, length, overlap) of one video's rows."""
    valid = []
    for row, span in zip(rows, spans):
        try:
            start, end = parse_span(span)
        except ValueError as error:
            row["status"], row["error"] = "invalid_span", str(error)
            continue
        row["span_start"], row["span_end"] = float(start), float(end)
        length = end - start
        if length <= 0:
            row["status"], row["error"] = "empty_span", f"span {row['span']} has length {float(length):.3f} s"
        elif length < config.min_seconds:
            row["status"], row["error"] = "too_short", f"{float(length):.3f} s < min_seconds {config.min_seconds}"
        elif config.max_seconds is not None and length > config.max_seconds:
            row["status"], row["error"] = "too_long", f"{float(length):.3f} s > max_seconds {config.max_seconds}"
        else:
            valid.append((start, end, row))
    latest_end, latest_row = None, None
    for start, end, row in sorted(valid, key=lambda item: (item[0], item[2]["clip_index"])):
        if latest_end is not None and start < latest_end:
            message = f"overlaps clip {latest_row['clip_id'] or latest_row['key']} until {float(latest_end):.3f} s"
            if config.overlap_policy == "reject":
                row["status"], row["error"] = "overlapping_span", message
                continue
            row["flags"].append("overlapping_span")
            row["error"] = message
        if latest_end is None or end > latest_end:
            latest_end, latest_row = end, row


class ClipPlanner:
    """Plans videos into rows, remembering the keys already given out (across shards)."""

    def __init__(self, config: SourceConfig, videos: VideoIndex, captions: dict[str, str] | None = None) -> None:
        self.config = config
        self.videos = videos
        self.captions = captions or {}
        self._seen: dict[str, str] = {}  # sanitized video id -> raw video id

    def plan_video(self, entry: VideoEntry) -> list[dict]:
        if entry.error is not None:
            row = _row(entry, f"invalid_line_{entry.line}", -1, "", [], "")
            row["status"], row["error"] = "invalid_metadata", entry.error
            return [row]
        safe = sanitize_id(entry.video_id)
        earlier = self._seen.get(safe)
        rows = []
        for index, (clip_id, span) in enumerate(entry.clips):
            key = clip_key(entry.video_id, index)
            if earlier is not None:
                key = f"{key}-dup{entry.line}"
            rows.append(_row(entry, key, index, clip_id, span, self.captions.get(clip_id, "")))
        if earlier is not None:
            reason = f"video_id {entry.video_id!r} (line {entry.line}) repeats the key of {earlier!r}"
            for row in rows:
                row["status"], row["error"] = "duplicate_video", reason
            return rows
        self._seen[safe] = entry.video_id
        _check_spans(rows, [span for _, span in entry.clips], self.config)
        source = self.videos.find(entry.video_id)
        for row in rows:
            row["source"] = source
            if row["status"] is None and source is None and not self.config.download:
                row["status"], row["error"] = "missing_video", f"no file named {entry.video_id}.<ext> in {self.config.videos}"
        return rows

    def plan(self, entries: Iterable[VideoEntry], max_shards: int | None = None) -> Iterator[ShardPlan]:
        """Group planned rows into shards of at least ``clips_per_shard`` rows (whole videos, the last may be smaller)."""
        rows: list[dict] = []
        index = 0
        for entry in entries:
            if max_shards is not None and index >= max_shards:
                return
            rows.extend(self.plan_video(entry))
            if len(rows) >= self.config.clips_per_shard:
                yield ShardPlan(index, rows)
                rows, index = [], index + 1
        if rows and (max_shards is None or index < max_shards):
            yield ShardPlan(index, rows)
