"""Random access to the samples of WebDataset tars, tolerant of damaged tars.

Each tar's member offsets are indexed once (:func:`index_tar`), so a sample is
one seek and one read, and any worker can serve any sample
(:class:`TarSampleReader`). A tar cut short or unreadable keeps the samples
read before the damage; what it lost (the builder's count in the shard's
``.stats.json`` minus those indexed, :func:`builder_count`) is counted and the
shard named, for the reader's owner to apply its own policy (the shared one is
:mod:`datasets.damage`).
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from datasets.shards import STATS_SUFFIX, TAR_SUFFIX

log = logging.getLogger(__name__)


def describe_error(error: BaseException) -> str:
    """A one-line reason for a report: ``TypeName: first line of the message`` (at most 200 characters of it)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


@dataclass(frozen=True)
class TarMember:
    """Where one sample of a tar lives: ``{suffix: (offset, size)}`` of its members' data."""

    shard: int
    key: str
    members: dict[str, tuple[int, int]]


def index_tar(path: Path, shard: int) -> tuple[list[TarMember], str | None]:
    """Index the samples of a WebDataset tar (key = name up to the first dot of the file name), in tar order, as far
    as it can be read; returns them and what is wrong with the tar (None for a sound one)."""
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    problem = None
    try:
        size = os.path.getsize(path)
        with tarfile.open(path, "r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                folder, _, name = info.name.rpartition("/")
                stem, dot, suffix = name.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if info.offset_data + info.size > size:  # the sample this member belongs to is incomplete
                    problem = f"cut short at byte {size} inside member {info.name}"
                    samples.pop(key, None)
                    break
                if dot:
                    samples.setdefault(key, {})[suffix] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError, EOFError) as error:
        problem = f"not a readable tar after {len(samples)} samples ({describe_error(error)})"
    return [TarMember(shard, key, members) for key, members in samples.items()], problem


def builder_count(tar: Path) -> int | None:
    """Samples the builder wrote into ``tar`` (its ``.stats.json``'s kept count), None when unknown."""
    try:
        stats = tar.with_name(tar.name.removesuffix(TAR_SUFFIX) + STATS_SUFFIX)
        return int(json.loads(stats.read_text())["counts"]["kept"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class TarSampleReader:
    """Random access to the samples of a list of tars; file descriptors are opened lazily.

    Damaged tars keep their readable samples (:func:`index_tar`); :attr:`lost_samples` counts the others and
    :attr:`problems` names each damaged shard.
    """

    def __init__(self, shards: list[Path], required: tuple[str, ...]) -> None:
        self.shards = [Path(s) for s in shards]
        samples: list[TarMember] = []
        self.problems: list[str] = []
        self.lost_samples = self.expected_samples = 0
        for index, path in enumerate(self.shards):
            members, problem = index_tar(path, index) if path.is_file() else ([], "missing")
            complete = [m for m in members if all(ext in m.members for ext in required)]
            expected = builder_count(path)
            expected = len(complete) if expected is None else expected
            self.expected_samples += expected
            if problem or len(complete) < expected:
                self.lost_samples += max(expected - len(complete), 0)
                self.problems.append(f"{path.name}: {problem or 'samples missing'}")
                log.warning("shard %s is damaged (%s): %d of %d samples readable, the rest skipped",
                            path, problem or "samples missing", len(complete), expected)  # fmt: skip
            samples += complete
        self.samples = samples
        self._descriptors: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_descriptors": {}}

    def __del__(self) -> None:
        for descriptor in getattr(self, "_descriptors", {}).values():
            try:
                os.close(descriptor)
            except OSError:
                pass

    def where(self, index: int) -> str:
        """``shard 00003.tar, sample 000030002`` for messages."""
        member = self.samples[index]
        return f"shard {self.shards[member.shard].name}, sample {member.key}"

    def read(self, index: int) -> dict:
        """The raw sample ``{"__key__": key, suffix: bytes, ...}``."""
        member = self.samples[index]
        descriptor = self._descriptors.get(member.shard)
        if descriptor is None:
            descriptor = self._descriptors[member.shard] = os.open(self.shards[member.shard], os.O_RDONLY)
        sample: dict = {"__key__": member.key}
        for suffix, (offset, size) in member.members.items():
            # pread: no shared file offset, so forked DataLoader workers may share the descriptor.
            sample[suffix] = os.pread(descriptor, size, offset)
        return sample
