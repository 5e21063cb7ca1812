"""Hostile and careless inputs to the HD-VILA clip builder (pipelines/build_hdvila_clips.py): unreadable metadata,
captions and video folders, unusable or busy output folders. Each is one line and exit code 2, before Ray starts."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest

from pipelines.hdvila.metadata import iter_videos
from tests.hostile import assert_refused, lock_held_elsewhere, run_entry, unwritable_folder

SCRIPT = str(Path("pipelines") / "build_hdvila_clips.py")
GOOD_LINE = json.dumps({"video_id": "v1", "url": "", "clip": [{"clip_id": "v1.0.mp4", "span": ["00:00:00.000", "00:00:01.000"]}]})


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    videos = tmp_path / "videos"
    videos.mkdir()
    metadata = tmp_path / "meta.jsonl"
    metadata.write_text(GOOD_LINE + "\n")
    return {"metadata": metadata, "videos": videos, "output": tmp_path / "clips"}


def build(inputs: dict[str, Path], *extra: str, **changed: Path):
    paths = {**inputs, **changed}
    return run_entry(
        SCRIPT, "--metadata", str(paths["metadata"]), "--videos", str(paths["videos"]), "--output", str(paths["output"]),
        "--ray-num-cpus", "1", *extra,
    )  # fmt: skip


def test_unreadable_metadata_is_one_line(inputs, tmp_path):
    binary = tmp_path / "image.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00binary")
    not_parquet = tmp_path / "meta.parquet"
    not_parquet.write_text(GOOD_LINE)
    broken_gzip = tmp_path / "meta.jsonl.gz"
    broken_gzip.write_bytes(gzip.compress((GOOD_LINE + "\n").encode() * 50)[:40])
    cases = [
        (tmp_path / "missing.jsonl", "does not exist"),
        (binary, "is not UTF-8 text (line 1)"),
        (not_parquet, "is not a parquet file"),
        (broken_gzip, "cannot be read"),
    ]
    for metadata, message in cases:
        done = build(inputs, metadata=metadata)
        assert_refused(done, f"metadata {metadata} {message}")
        assert "Ray" not in done.stderr


def test_missing_videos_folder_and_broken_captions_are_one_line(inputs, tmp_path):
    assert_refused(build(inputs, videos=tmp_path / "nowhere"), f"videos folder {tmp_path / 'nowhere'} does not exist")
    captions = tmp_path / "captions.parquet"
    captions.write_bytes(b"PAR1 but not really")
    assert_refused(build(inputs, "--captions", str(captions)), f"captions {captions} cannot be read")


def test_unusable_or_busy_output_is_refused(inputs, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert_refused(build(inputs, output=afile), f"--output {afile} is a file, not a folder")
    read_only = unwritable_folder(tmp_path)
    assert_refused(build(inputs, output=read_only), f"--output {read_only} is not writable")
    busy = tmp_path / "busy"
    busy.mkdir()
    with lock_held_elsewhere(busy) as pid:
        assert_refused(build(inputs, output=busy), f"in use by another run: PID {pid} on host {socket.gethostname()}")


def test_a_later_line_that_is_not_utf8_is_a_row_not_a_failure(tmp_path):
    metadata = tmp_path / "meta.jsonl"
    metadata.write_bytes(GOOD_LINE.encode() + b"\n{\"video_id\": \"caf\xe9\"}\n" + GOOD_LINE.replace("v1", "v2").encode() + b"\n")
    entries = list(iter_videos(str(metadata)))
    assert [(e.video_id, e.error) for e in entries] == [("v1", None), ("", "line 2 is not UTF-8 text"), ("v2", None)]
