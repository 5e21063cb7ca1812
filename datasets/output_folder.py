"""The output folder of a builder or trainer: checked before any work, and locked while a run writes into it.

The ``.lock`` note is an on-disk contract every writer shares, like the records, so it lives here where
every package may import it. API (the builders in ``pipelines/``, the training loop, ``evaluation.run``)::

    from datasets.output_folder import OutputFolderError, OutputLock, prepare_output_folder

    folder = prepare_output_folder(config.output)      # exists (created), is a folder, is writable
    with OutputLock(folder, workers=True) as lock:     # refuses a second run on the same folder
        ...                                            # hand lock.run_id to the workers that write
    OutputLock.join(folder, run_id)                    # in a worker process (Ray actor) for its lifetime
    with shared_lock(folder, run_id): ...              # in a Ray task, for the task

:func:`prepare_output_folder` raises :class:`OutputFolderError` (a
``ValueError``) with one line when the path is a file, cannot be created or
cannot be written: the entry points turn that into exit code 2 before they
start Ray or load a model.

:class:`OutputLock` holds ``FOLDER/.lock``: a JSON note of the holder (PID,
host, start time, command, run id) under an exclusive ``flock``. A second run
on the folder is refused with a message naming the holder's PID and host. The
kernel drops a ``flock`` when its holder dies, so the lock of a killed run is
taken over by the next one without any cleanup; no PID is trusted blindly.
With ``workers=True`` the owner turns its lock into a shared one after writing
the note, and each worker process that writes into the folder joins it
(:meth:`OutputLock.join`, a shared ``flock`` of its own). A run whose driver
was killed while its Ray workers still finish a shard therefore keeps the
folder locked until the last of them exits, and a rerun started meanwhile is
refused instead of writing the same shards. On a filesystem without ``flock``
the lock is skipped with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
log = logging.getLogger(__name__)


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message says why, in one line."""


def prepare_output_folder(path: str | os.PathLike, *, flag: str = "--output") -> Path:
    """Create ``path`` (and its parents) and prove it writable; :class:`OutputFolderError` when it cannot be used."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{flag} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(f"{flag} {folder} cannot be created: {error.strerror or error}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"{flag} {folder} is not writable: {error.strerror or error}") from None
    return folder


def with_defaults(previous: dict, defaults: dict) -> dict:
    """The settings an earlier run recorded in an output folder (``previous``, nested mappings), with those it does
    not record (added since it was written) at their ``defaults``: an output built before a setting existed resumes
    when the setting is left at its default."""
    filled = dict(previous)
    for name, value in defaults.items():
        if name not in filled:
            filled[name] = value
        elif isinstance(value, dict) and isinstance(filled[name], dict):
            filled[name] = with_defaults(filled[name], value)
    return filled


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _read_note(path: Path) -> dict:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def describe_holder(note: dict) -> str:
    """The holder of a lock note, for messages: ``PID 123 on host h (started ..., `command`)``."""
    if not note:
        return "a run whose lock note is unreadable"
    pid, host = note.get("pid"), note.get("host")
    text = f"PID {pid} on host {host}"
    if note.get("started"):
        text += f" (started {note['started']}: {note.get('command', '')})"
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        text += "; that process has exited, but worker processes it started (Ray actors) still hold the lock"
    return text


class OutputLock:
    """The lock of one run on an output folder; see the module docstring."""

    def __init__(self, folder: str | os.PathLike, *, workers: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.workers = workers
        self.run_id = uuid.uuid4().hex
        self._fd: int | None = None

    def _note(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300],
            "run_id": self.run_id,
        }

    def acquire(self) -> "OutputLock":
        """Take the folder; :class:`OutputFolderError` naming the holder when another run has it."""
        for _ in range(5):  # the holder may release (and unlink) between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
                    raise OutputFolderError(f"{self.folder} is in use by another run: {describe_holder(_read_note(self.path))}")
                if os.path.exists(self.path) and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    self._fd, fd = fd, None
                    break
            finally:
                if fd is not None:
                    os.close(fd)
        else:
            raise OutputFolderError(f"{self.folder}: could not take {LOCK_NAME} (it keeps changing)")
        previous = _read_note(self.path)
        if previous.get("pid"):
            log.info("taking over %s from an ended run: PID %s on host %s", self.path, previous.get("pid"), previous.get("host"))
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(self._note()).encode(), 0)
        os.fsync(self._fd)
        shared = not self.workers or _flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the workers may join now
        if not shared or _read_note(self.path).get("run_id") != self.run_id:
            self.release(unlink=False)
            raise OutputFolderError(f"{self.folder} was taken by another run: {describe_holder(_read_note(self.path))}")
        return self

    @staticmethod
    def join(folder: str | os.PathLike, run_id: str | None) -> int | None:
        """In a worker process: share the lock of run ``run_id``; returns the descriptor to keep open (None without
        a lock file). Raises :class:`OutputFolderError` when another run holds the folder now."""
        path = Path(folder) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        if not _flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB) or (run_id is not None and _read_note(path).get("run_id") != run_id):
            os.close(fd)
            raise OutputFolderError(f"{folder} is in use by another run now: {describe_holder(_read_note(path))}")
        return fd

    def release(self, *, unlink: bool = True) -> None:
        """Give the folder back (the lock file goes with it)."""
        if self._fd is None:
            return
        if unlink:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _flock(fd: int, operation: int) -> bool:
    """``flock``; False when another process holds a conflicting lock; True (with a warning) without lock support."""
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        log.warning("this filesystem has no file locks (%s): a second run on the same output would not be refused", error)
    return True


@contextmanager
def shared_lock(folder: str | os.PathLike, run_id: str | None) -> Iterator[None]:
    """:meth:`OutputLock.join` for the duration of a ``with`` block (a Ray task, whose process outlives it)."""
    fd = OutputLock.join(folder, run_id)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
