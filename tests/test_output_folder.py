"""The output-folder checks and lock every builder and trainer shares (datasets/output_folder.py), with real
processes: a holder alive, killed, and killed while a worker it started still writes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from datasets.output_folder import LOCK_NAME, OutputFolderError, OutputLock, prepare_output_folder, shared_lock
from tests.hostile import REPO, lock_held_elsewhere, unwritable_folder

HOLDER = """
import os, sys, time
from datasets.output_folder import OutputLock
lock = OutputLock(sys.argv[1], workers=True).acquire()
if sys.argv[2] == "with-worker":
    if os.fork() == 0:  # a worker (a Ray actor, say) that joins the run's lock and outlives its driver
        OutputLock.join(sys.argv[1], lock.run_id)
        print("worker", os.getpid(), flush=True)
        time.sleep(300)
        os._exit(0)
    time.sleep(0.5)
print("held", flush=True)
time.sleep(300)
"""


def test_unusable_folders_are_refused_with_one_line(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    for path, message in [
        (afile, "is a file, not a folder"),
        (afile / "sub", "cannot be created"),
        (unwritable_folder(tmp_path), "is not writable"),
    ]:
        with pytest.raises(OutputFolderError, match=message) as error:
            prepare_output_folder(path)
        assert "\n" not in str(error.value)
    assert prepare_output_folder(tmp_path / "new" / "deep").is_dir()
    assert not list((tmp_path / "new" / "deep").iterdir())  # the write probe leaves nothing


def test_a_held_lock_refuses_naming_pid_and_host_and_goes_with_a_clean_release(tmp_path):
    with lock_held_elsewhere(tmp_path) as pid:
        with pytest.raises(OutputFolderError, match=f"in use by another run: PID {pid} on host {socket.gethostname()}"):
            OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path) as lock:
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text() and lock.run_id
    assert not (tmp_path / LOCK_NAME).exists()


def _holder(folder, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    holder = _holder(tmp_path, "alone")
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert f'"pid": {holder.pid}' in (tmp_path / LOCK_NAME).read_text()  # the note of the dead run stays behind
    with caplog.at_level(logging.INFO), OutputLock(tmp_path):
        pass
    assert f"taking over {tmp_path / LOCK_NAME} from an ended run: PID {holder.pid}" in caplog.text


def test_workers_of_a_killed_driver_keep_the_folder_until_they_exit(tmp_path):
    holder = _holder(tmp_path, "with-worker")
    worker_pid = int(holder.stdout.readline().split()[1])
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)  # the driver dies; its worker still writes
    holder.wait(timeout=30)
    try:
        with pytest.raises(OutputFolderError, match=f"PID {holder.pid} on host .*has exited, but worker processes"):
            OutputLock(tmp_path).acquire()
    finally:
        os.kill(worker_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{worker_pid}/fd/0"):  # the kernel closes its files (and drops its flock) as it exits
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with OutputLock(tmp_path, workers=True) as lock:  # the last worker gone, the folder is free
        with shared_lock(tmp_path, lock.run_id):  # this run's own workers join
            pass
        with pytest.raises(OutputFolderError, match="in use by another run now"):
            OutputLock.join(tmp_path, "an-older-run")
