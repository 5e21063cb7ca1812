"""Damaged training data: skip it, name it, count it, and stop the run past a limit.

Crawled data arrives damaged: a tar cut short by a full disk or a killed copy,
a 0-byte tar, a member that is not an image or a video, an annotation with NaN
or absurd keypoints. The readers of both stages (:mod:`training.data`) apply
one policy:

- at start, each tar is indexed as far as it can be read
  (:func:`datasets.tar_index.index_tar`); a shard that cannot be read, or is cut
  short, keeps its readable samples and is named in a warning; the samples it
  lost (the builder's count in its ``.stats.json`` minus those indexed) count
  as damaged;
- a sample that fails to decode or to pass its checks is replaced by the next
  readable sample (the same replacement on every run, so a resumed run still
  sees the same batches) and reported with the batch under :data:`DAMAGED_KEY`;
  the training loop logs each report, naming shard and key, and counts it
  (:class:`DamageTally`);
- the run stops with :class:`DamagedDataError` (exit code 2, one line) once the
  damaged samples exceed :func:`damage_limit` of the samples the builder wrote.
"""

from __future__ import annotations

import logging
import math
import sys

from datasets.tar_index import describe_error as describe  # noqa: F401 (a one-line reason for a report)

DAMAGED_KEY = "damaged"
"""Batch field: one string per sample, the reports of the damaged samples it replaced ("" for none)."""
DAMAGED_FRACTION = 0.05
"""A run stops when more than this share of the samples turn out damaged ..."""
MIN_DAMAGED = 8
"""... and more than this many (a small dataset may lose a few)."""
MAX_REPLACEMENTS = 16
"""Following samples tried in place of a damaged one before the item gives up."""

log = logging.getLogger(__name__)


class DamagedDataError(ValueError):
    """Too much of the training data is damaged to go on; the message says how much and where, in one line."""


def damage_limit(samples: int) -> int:
    """How many damaged samples a run over ``samples`` samples tolerates."""
    return max(MIN_DAMAGED, math.floor(DAMAGED_FRACTION * samples))


def damage_errors() -> tuple[type[BaseException], ...]:
    """What decoding a damaged sample raises: I/O and value errors, PIL, OpenCV, PyAV and decord failures."""
    import cv2

    errors: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, RuntimeError, cv2.error)
    decord = sys.modules.get("decord")
    if decord is not None:
        errors += (decord._ffi.base.DECORDError,)
    return errors


class DamageTally:
    """Counts the damaged samples of a run in the main process (each sample once, however often it was met) and
    stops the run past the limit."""

    def __init__(self, dataset) -> None:
        self.expected = getattr(dataset, "expected_samples", None) or len(dataset)
        self.limit = damage_limit(self.expected)
        self.lost = getattr(dataset, "lost_samples", 0)
        self.seen: set[str] = set()
        self.check("at start")

    @property
    def count(self) -> int:
        return self.lost + len(self.seen)

    def account(self, batch: dict) -> None:
        """Log and count the reports of ``batch`` (removing its :data:`DAMAGED_KEY`); raise past the limit."""
        for reports in batch.pop(DAMAGED_KEY, ()) or ():
            for report in filter(None, reports.split("\n")):
                where = report.split(": ", 1)[0]
                if where not in self.seen:
                    self.seen.add(where)
                    log.warning("skipped a damaged sample (%d so far, limit %d): %s", self.count, self.limit, report)
        self.check("while training")

    def check(self, when: str) -> None:
        if self.count > self.limit:
            raise DamagedDataError(
                f"data: {self.count} of {self.expected} samples are damaged ({when}), more than the limit of {self.limit} "
                f"(max({MIN_DAMAGED}, {DAMAGED_FRACTION:.0%})); the warnings above name the shards and samples"
            )


def from_worker(error: DamagedDataError) -> DamagedDataError:
    """The one-line error of a DataLoader worker, without the worker traceback torch adds to its message."""
    return DamagedDataError(str(error).strip().splitlines()[-1].rpartition("DamagedDataError: ")[2])
