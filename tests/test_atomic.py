"""datasets.atomic: the target is its old self or complete, never half-written, and no temporary stays behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from datasets.atomic import TEMP_MARKER, atomic_path, temporary_path, write_bytes, write_json, write_text


def test_temporary_path_is_hidden_beside_the_target_and_fresh(tmp_path):
    first, second = temporary_path(tmp_path / "a.json"), temporary_path(tmp_path / "a.json")
    assert first.parent == tmp_path and first.name.startswith(f".a.json{TEMP_MARKER}{os.getpid()}-")
    assert first != second


def test_the_target_appears_only_complete(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as temp:
        with open(temp, "wb") as handle:
            handle.write(b"half")
            handle.flush()
            assert not target.exists()  # mid-write: nothing at the target yet
            handle.write(b" and the rest")
        assert not target.exists()
    assert target.read_bytes() == b"half and the rest"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "page.html", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temp:
            temp.write_text("new, half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["page.html"]


def test_a_failure_before_the_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.json"):
            raise KeyError("x")
    assert os.listdir(tmp_path) == []


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    """A process killed mid-write (no cleanup runs) leaves the old target and only a hidden temporary."""
    target = write_bytes(tmp_path / "data.bin", b"old")
    script = (
        "import os, sys\n"
        "from datasets.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as temp:\n"
        "    temp.write_bytes(b'new, half')\n"
        "    os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)
    assert result.returncode == 9
    assert target.read_bytes() == b"old"
    leftovers = [name for name in os.listdir(tmp_path) if name != "data.bin"]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".data.bin{TEMP_MARKER}")


def test_conveniences_write_what_they_are_given(tmp_path):
    assert write_bytes(tmp_path / "b", b"\x00\x01", fsync=True).read_bytes() == b"\x00\x01"
    assert write_text(tmp_path / "t", "héllo").read_bytes() == "héllo".encode("utf-8")
    path = write_json(tmp_path / "j.json", {"b": 1, "a": "é"}, indent=1, sort_keys=True, newline=True)
    assert path.read_text(encoding="utf-8") == json.dumps({"b": 1, "a": "é"}, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert sorted(os.listdir(tmp_path)) == ["b", "j.json", "t"]


def test_overwrites_an_existing_target(tmp_path):
    target = write_json(tmp_path / "r.json", {"v": 1})
    write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2}
