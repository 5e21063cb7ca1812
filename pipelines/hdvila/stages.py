"""The pipeline stage of the HD-VILA builder: :class:`ClipCutter` (no Ray here; resources are set in the job).

A batch is a dict of columns (numpy object arrays) holding planned rows
(:data:`pipelines.hdvila.planning.PLAN_FIELDS`). The cutter opens each video
once, probes it, cuts its pending spans in start order and returns the batch
with the result columns of :data:`RESULT_FIELDS` filled in. Every failure
becomes the row's ``status`` and ``error``; nothing raises out of a batch.
"""

from __future__ import annotations

import itertools
import json
import logging
from fractions import Fraction

import numpy as np

from datasets.clips import KEPT, make_annotation
from pipelines.hdvila.config import CutConfig, SourceConfig
from pipelines.hdvila.cutting import copy_cut, exact_cut
from pipelines.hdvila.probe import ClipError, SourceInfo, open_video, probe_video
from pipelines.hdvila.sources import VideoFetcher

logger = logging.getLogger(__name__)

RESULT_FIELDS = (
    "mp4", "annotation", "fps", "frames", "width", "height", "cut_start", "cut_end",
    "caption_source", "caption_sources", "generated_caption", "caption_similarity",
)


def batch_to_rows(batch: dict[str, np.ndarray]) -> list[dict]:
    names = list(batch)
    length = len(batch[names[0]]) if names else 0
    return [{name: batch[name][i] for name in names} for i in range(length)]


def rows_to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    names = list(rows[0]) if rows else []
    batch = {}
    for name in names:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[name] for row in rows]
        batch[name] = column
    return batch


class ClipCutter:
    """Cuts planned clips into encoded mp4 clips with their annotations."""

    def __init__(self, cut: CutConfig, source: SourceConfig) -> None:
        self.cut = cut
        self.fetcher = VideoFetcher(source)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        for row in rows:
            row["flags"] = list(row["flags"] if row["flags"] is not None else [])
            for name in RESULT_FIELDS:
                row.setdefault(name, None)
        for _, group in itertools.groupby(rows, key=lambda row: (row["video_id"], row["source"])):
            pending = [row for row in group if row["status"] is None]
            if pending:
                self._cut_video(pending)
        return rows_to_batch(rows)

    def _cut_video(self, rows: list[dict]) -> None:
        first = rows[0]
        try:
            with self.fetcher.local_path(first["video_id"], first["source"], first["url"]) as path:
                container, stream = open_video(path)
                try:
                    info = probe_video(container, stream, vfr_tolerance=self.cut.vfr_tolerance)
                    if info.variable_frame_rate and self.cut.vfr_policy == "reject":
                        raise ClipError("variable_frame_rate", info.vfr_detail)
                    for row in sorted(rows, key=lambda row: (row["span_start"], row["clip_index"])):
                        self._cut_row(row, container, stream, info)
                finally:
                    container.close()
        except ClipError as error:
            self._fail([row for row in rows if row["status"] is None], error.status, error.message)
        except Exception as error:  # noqa: BLE001 - a bug or an unforeseen library error must not lose the shard
            logger.warning("video %s failed unexpectedly", first["video_id"], exc_info=True)
            self._fail([row for row in rows if row["status"] is None], "cut_failed", f"{type(error).__name__}: {error}")

    @staticmethod
    def _fail(rows: list[dict], status: str, message: str) -> None:
        for row in rows:
            row["status"], row["error"] = status, message

    def _cut_row(self, row: dict, container, stream, info: SourceInfo) -> None:
        start, end = Fraction(str(row["span_start"])), Fraction(str(row["span_end"]))
        cut = exact_cut if self.cut.mode == "exact" else copy_cut
        try:
            clip = cut(container, stream, info, start, end, self.cut)
        except ClipError as error:
            row["status"], row["error"] = error.status, error.message
            return
        except Exception as error:  # noqa: BLE001 - one bad clip must not stop the others
            logger.warning("clip %s failed unexpectedly", row["key"], exc_info=True)
            row["status"], row["error"] = "cut_failed", f"{type(error).__name__}: {error}"
            return
        if info.variable_frame_rate:
            row["flags"].append("variable_frame_rate")
            row["error"] = "; ".join(filter(None, [row["error"], f"variable frame rate: {info.vfr_detail}"]))
        annotation = make_annotation(
            key=row["key"],
            video_id=row["video_id"],
            clip_id=row["clip_id"],
            clip_index=row["clip_index"],
            span=tuple(row["span"]),
            cut=(float(clip.cut_start), float(clip.cut_end)),
            fps=float(clip.fps),
            frames=clip.frames,
            width=clip.width,
            height=clip.height,
            caption=row["caption"] or "",
            source=info.describe(row["source"] or "", row["url"] or ""),
            mode=self.cut.mode,
            flags=row["flags"],
            extra={
                "span_seconds": [row["span_start"], row["span_end"]],
                "fps_fraction": f"{clip.fps.numerator}/{clip.fps.denominator}",
                "encoder": None if self.cut.mode == "copy" else {
                    "backend": self.cut.encoder, "codec": "libx264", "crf": self.cut.crf, "preset": self.cut.x264_preset,
                },
                "scene_distance": clip.scene_distance,
            },
        )
        row.update(
            status=KEPT,
            caption_source=annotation["caption_source"],
            caption_sources=sorted(annotation["captions"]),
            mp4=clip.data,
            annotation=json.dumps(annotation, ensure_ascii=False).encode("utf-8"),
            fps=float(clip.fps),
            frames=clip.frames,
            width=clip.width,
            height=clip.height,
            cut_start=float(clip.cut_start),
            cut_end=float(clip.cut_end),
        )
