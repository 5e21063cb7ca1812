"""Atomic file writes: a file is either its old self or complete, never half-written.

Everything is written under a hidden temporary name in the target's folder
(``.NAME.tmp-<pid>-<random>``, so two processes never share one) and renamed
over the target with :func:`os.replace`, atomic on one filesystem. A failure,
or a process killed mid-write, leaves the old target untouched; the
:func:`atomic_path` block removes its temporary on any exception, and
:func:`datasets.shards.remove_partial_files` removes those a killed process
left in a shard folder (they share :data:`TEMP_MARKER`).

API::

    from datasets.atomic import atomic_path, write_bytes, write_json, write_text

    with atomic_path(path) as temp:                  # a Path in path's folder; nothing exists there yet
        image.save(temp, format="PNG")               # give the format: the temporary name has no extension
    write_text(path, html)                           # utf-8
    write_bytes(path, data)
    write_json(path, obj, indent=1)                  # json.dumps keywords; ensure_ascii=False by default

``fsync=True`` flushes the data to disk before the rename (the shard writer
uses it; a power cut then cannot leave a renamed but empty file).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_MARKER = ".tmp-"
"""Part of every temporary name: ``.NAME.tmp-<pid>-<random>``."""


def temporary_path(target: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``target``: ``.NAME.tmp-<pid>-<8 hex>``."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(target: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on leaving the block normally, rename it over ``target``.

    The block must create the file at the yielded path. On an exception the
    temporary is removed and ``target`` keeps its old content (or stays absent).
    """
    target = Path(target)
    temp = temporary_path(target)
    try:
        yield temp
        if fsync:
            fsync_file(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as temp:
        temp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode(encoding), fsync=fsync)


def write_json(path: str | os.PathLike, obj, *, newline: bool = False, fsync: bool = False, **dumps) -> Path:
    """Write ``json.dumps(obj, **dumps)`` (``ensure_ascii=False`` unless given), plus ``"\\n"`` if ``newline``, atomically."""
    dumps.setdefault("ensure_ascii", False)
    return write_text(path, json.dumps(obj, **dumps) + ("\n" if newline else ""), fsync=fsync)
