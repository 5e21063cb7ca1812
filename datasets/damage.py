"""Damaged data: skip it, name it, count it, and stop past a limit. One policy for every reader of shards.

Crawled data arrives damaged: a tar cut short by a full disk or a killed copy,
a 0-byte tar, a member that is not an image or a video, an annotation with NaN
or absurd keypoints. The random-access readers (the clip reader,
:mod:`datasets.clip_reader`, and training's LAION-Pose images) apply one policy:

- at start, each tar is indexed as far as it can be read
  (:func:`datasets.tar_index.index_tar`); a shard that cannot be read, or is cut
  short, keeps its readable samples and is named in a warning; the samples it
  lost (the builder's count in its ``.stats.json`` minus those indexed) count
  as damaged;
- a sample that fails to decode or to pass its checks is replaced by the next
  readable sample (the same replacement on every run, so a resumed run still
  sees the same batches) and reported with the batch under :data:`DAMAGED_KEY`
  (:class:`GuardedSamples`); the consumer (training's loop) logs each report,
  naming shard and key, and counts it (:class:`DamageTally`);
- the run stops with :class:`DamagedDataError` (one line) once the damaged
  samples exceed the reader's :class:`DamagePolicy` limit, by default
  max(8, 5%) of the samples the builder wrote.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from functools import cached_property

from datasets.tar_index import TarSampleReader
from datasets.tar_index import describe_error as describe  # noqa: F401 (a one-line reason for a report)

DAMAGED_KEY = "damaged"
"""Batch field: one string per sample, the reports of the damaged samples it replaced ("" for none)."""
DAMAGED_FRACTION = 0.05
"""By default a run stops when more than this share of the samples turn out damaged ..."""
MIN_DAMAGED = 8
"""... and more than this many (a small dataset may lose a few)."""
MAX_REPLACEMENTS = 16
"""Following samples tried in place of a damaged one before the item gives up."""

log = logging.getLogger(__name__)


class DamagedDataError(ValueError):
    """Too much of the data is damaged to go on; the message says how much and where, in one line."""


class EmptyDataError(ValueError):
    """A reader found nothing to read (no samples, or none that fits what was asked); the message says why."""


@dataclass(frozen=True, kw_only=True)
class DamagePolicy:
    """How much damaged data a reader tolerates: a reader option, so a stage config can pass its own."""

    fraction: float = DAMAGED_FRACTION
    """Stop when more than this share of the samples the builder wrote are damaged ..."""
    minimum: int = MIN_DAMAGED
    """... and more than this many."""
    replacements: int = MAX_REPLACEMENTS
    """Following samples tried in place of a damaged one before an item gives up."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or self.minimum < 0 or self.replacements < 0:
            raise ValueError(f"damage policy: fraction must be in [0, 1], minimum and replacements non-negative: {self}")

    def limit(self, samples: int) -> int:
        """How many damaged samples a run over ``samples`` samples tolerates."""
        return max(self.minimum, math.floor(self.fraction * samples))

    def describe(self) -> str:
        return f"max({self.minimum}, {self.fraction:.0%})"


def damage_errors() -> tuple[type[BaseException], ...]:
    """What decoding a damaged sample raises: I/O and value errors, PIL, OpenCV, PyAV and decord failures."""
    import cv2

    errors: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, RuntimeError, cv2.error)
    decord = sys.modules.get("decord")
    if decord is not None:
        errors += (decord._ffi.base.DECORDError,)
    return errors


def require_samples(tars: TarSampleReader, root) -> None:
    """Raise when nothing is readable: :class:`DamagedDataError` naming damaged shards, else :class:`EmptyDataError`."""
    if tars.samples:
        return
    if tars.problems:
        raise DamagedDataError(f"data: no readable sample in {root}: {len(tars.problems)} damaged shard(s) ({'; '.join(tars.problems[:3])})")
    raise EmptyDataError(f"the shards in {root} hold no samples")


class GuardedSamples:
    """Item access that replaces a damaged sample by the next readable one and reports it (the policy above).

    Subclasses provide ``tars`` (a :class:`TarSampleReader` of the usable samples) and ``item(epoch, index)``;
    ``damage_policy`` may be set per instance.
    """

    tars: TarSampleReader
    damage_policy: DamagePolicy = DamagePolicy()

    @cached_property
    def _damage_errors(self) -> tuple:
        return damage_errors()

    @property
    def expected_samples(self) -> int:
        return self.tars.expected_samples

    @property
    def lost_samples(self) -> int:
        return self.tars.lost_samples

    def key(self, index: int) -> str:
        return self.tars.samples[index].key

    def first_readable(self, index: int, load) -> tuple:
        """``load(i)`` for the first ``i`` from ``index`` on (wrapping) that loads, and the reports of those before."""
        reports = []
        for step in range(min(self.damage_policy.replacements, len(self.tars) - 1) + 1):
            candidate = (index + step) % len(self.tars)
            try:
                return load(candidate), reports
            except self._damage_errors as error:
                reports.append(f"{self.tars.where(candidate)}: {describe(error)}")
        raise DamagedDataError(f"data: {len(reports)} samples in a row are damaged, from {reports[0]}")

    def __getitem__(self, item: tuple[int, int] | int) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        out, reports = self.first_readable(index, lambda candidate: self.item(epoch, candidate))
        return {**out, DAMAGED_KEY: "\n".join(reports)}


class DamageTally:
    """Counts the damaged samples of a run in the main process (each sample once, however often it was met) and
    stops the run past the limit of the dataset's ``damage_policy`` (the default policy if it has none)."""

    def __init__(self, dataset) -> None:
        self.policy: DamagePolicy = getattr(dataset, "damage_policy", None) or DamagePolicy()
        self.expected = getattr(dataset, "expected_samples", None) or len(dataset)
        self.limit = self.policy.limit(self.expected)
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
                f"({self.policy.describe()}); the warnings above name the shards and samples"
            )


def from_worker(error: DamagedDataError) -> DamagedDataError:
    """The one-line error of a DataLoader worker, without the worker traceback torch adds to its message."""
    return DamagedDataError(str(error).strip().splitlines()[-1].rpartition("DamagedDataError: ")[2])
