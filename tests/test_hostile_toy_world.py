"""Careless inputs to the toy-world builder (python -m pipelines.build_toy_world): an output that is a file, that
cannot be written, that another build holds, or that holds a broken config. One line and exit code 2 each."""

from __future__ import annotations

import socket

from tests.hostile import assert_refused, lock_held_elsewhere, run_entry, unwritable_folder


def build(output):
    return run_entry("-m", "pipelines.build_toy_world", "--output", str(output), "--preset", "smoke", "--workers", "1")


def test_unusable_busy_or_foreign_output_is_refused(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert_refused(build(afile), f"--output {afile} is a file, not a folder")
    read_only = unwritable_folder(tmp_path)
    assert_refused(build(read_only), f"--output {read_only} is not writable")
    busy = tmp_path / "busy"
    busy.mkdir()
    with lock_held_elsewhere(busy) as pid:
        assert_refused(build(busy), f"{busy} is in use by another run: PID {pid} on host {socket.gethostname()}")
    assert not (busy / "images").exists()
    (busy / "config.json").write_text("not json")
    assert_refused(build(busy), "config.json is not a toy-world config")
