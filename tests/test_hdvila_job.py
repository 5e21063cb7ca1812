"""The HD-VILA builder: planning, the ClipCutter stage on bad videos, and the whole job on a local Ray cluster."""

from __future__ import annotations

import hashlib
import logging
import json
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import av

from datasets.clips import INDEX_SCHEMA, KEPT, STATUSES, check_annotation, read_index, shard_paths  # noqa: E402
from pipelines.hdvila.config import CutConfig, SourceConfig  # noqa: E402
from pipelines.hdvila.metadata import VideoIndex, iter_videos, load_captions  # noqa: E402
from pipelines.hdvila.planning import ClipPlanner  # noqa: E402
from pipelines.hdvila.stages import ClipCutter, batch_to_rows, rows_to_batch  # noqa: E402
from tests.test_hdvila_cutting import decode_counters, make_counter_video  # noqa: E402


def _span(a: float, b: float) -> list[str]:
    def fmt(t: float) -> str:
        return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"

    return [fmt(a), fmt(b)]


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _entry(video_id: str, spans: list, prefix: str | None = None) -> dict:
    prefix = prefix or video_id
    return {
        "video_id": video_id,
        "url": f"https://www.youtube.com/watch?v={video_id}",
        "clip": [{"clip_id": f"{prefix}.{i}.mp4", "span": span} for i, span in enumerate(spans)],
    }


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Good, short, truncated, broken and audio-only sources named by video_id."""
    root = tmp_path_factory.mktemp("hdvila_videos")
    make_counter_video(root / "good-A.mp4", 100)  # 4 s
    make_counter_video(root / "good_B.mkv", 75, width=160, height=120)  # 3 s, another container
    ticks = [0] + list(np.cumsum([40] * 19 + [80] * 20))
    make_counter_video(root / "vfr.mp4", 40, pts=[int(t) for t in ticks], time_base=Fraction(1, 1000))
    data = make_counter_video(root / "whole.mp4", 100, faststart=True).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "whole.mp4").unlink()
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with av.open(str(root / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (root / "notes.txt").write_text("not a video")
    return root


def _plan(tmp_path, entries, videos_root, **source):
    metadata = _write_jsonl(tmp_path / "meta.jsonl", entries)
    config = SourceConfig(metadata=str(metadata), videos=str(videos_root), **source)
    planner = ClipPlanner(config, VideoIndex.scan(config.videos))
    return config, [row for plan in planner.plan(iter_videos(config.metadata)) for row in plan.rows]


def test_planning_rejects_what_needs_no_video(tmp_path, videos):
    entries = [
        _entry("good-A", [_span(0, 1), _span(0.5, 1.5), _span(1, 2), "bad", ["00:00:03.000", "00:00:03.000"], _span(2, 3.9)]),
        "{not json",
        {"url": "x"},
        _entry("good-A", [_span(0, 1)]),
        _entry("good.A", [_span(0, 1)]),  # key good_A_0: '.' is sanitised to '_'
        _entry("nowhere", [_span(0, 1)]),
    ]
    config, rows = _plan(tmp_path, entries, videos, max_seconds=1.5)
    got = {row["key"]: (row["status"], row["error"]) for row in rows}
    assert [row["key"] for row in rows][:6] == [f"good-A_{i}" for i in range(6)]
    assert got["good-A_0"][0] is None and got["good-A_2"][0] is None  # touching spans do not overlap
    assert got["good-A_1"][0] == "overlapping_span" and "good-A.0.mp4" in got["good-A_1"][1]
    assert got["good-A_3"][0] == "invalid_span" and got["good-A_4"][0] == "empty_span"
    assert got["good-A_5"][0] == "too_long"
    assert got["invalid_line_2"][0] == "invalid_metadata" and "not JSON" in got["invalid_line_2"][1]
    assert got["invalid_line_3"][0] == "invalid_metadata"
    assert got["good-A_0-dup4"][0] == "duplicate_video"
    assert got["good_A_0"][0] == "missing_video"  # 'good.A' has no file (only good-A.mp4)
    assert got["nowhere_0"][0] == "missing_video"
    assert all(status is None or status in STATUSES for status, _ in got.values())
    assert len(set(got)) == len(rows)
    _, kept_overlap = _plan(tmp_path, entries[:1], videos, overlap_policy="keep")
    assert kept_overlap[1]["status"] is None and kept_overlap[1]["flags"] == ["overlapping_span"]
    _, short = _plan(tmp_path, entries[:1], videos, min_seconds=1.5)
    assert [row["status"] for row in short] == ["too_short"] * 3 + ["invalid_span", "empty_span", None]


def test_gzipped_jsonl_and_videos_behind_an_fsspec_url(tmp_path, videos):
    import gzip

    import fsspec

    with gzip.open(tmp_path / "meta.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(_entry("good-A", [_span(1, 1.4)])) + "\n")
    memory = fsspec.filesystem("memory")
    memory.pipe("/hdvila-test/videos/good-A.webm", (videos / "good-A.mp4").read_bytes())  # any extension ffmpeg reads
    source = SourceConfig(metadata=str(tmp_path / "meta.jsonl.gz"), videos="memory://hdvila-test/videos")
    index = VideoIndex.scan(source.videos)
    url = index.find("good-A")
    assert url.startswith("memory://") and url.endswith("/hdvila-test/videos/good-A.webm")
    rows = [row for plan in ClipPlanner(source, index).plan(iter_videos(source.metadata)) for row in plan.rows]
    result = batch_to_rows(ClipCutter(CutConfig(), source)(rows_to_batch(rows)))[0]
    assert result["status"] == KEPT and decode_counters(result["mp4"]) == list(range(25, 35))
    assert json.loads(result["annotation"])["source"]["path"] == url


def test_parquet_metadata_nested_and_flat_and_captions(tmp_path):
    nested = [_entry("v1", [_span(0, 1), _span(1, 2)]), _entry("v2", [_span(0, 2)])]
    pq.write_table(pa.Table.from_pylist(nested), tmp_path / "nested.parquet")
    flat = [{"video_id": e["video_id"], "clip_id": c["clip_id"], "span": c["span"]} for e in nested for c in e["clip"]]
    pq.write_table(pa.Table.from_pylist(flat[::-1]), tmp_path / "flat.parquet")
    read = {name: list(iter_videos(str(tmp_path / name))) for name in ("nested.parquet", "flat.parquet")}
    assert [(v.video_id, len(v.clips)) for v in read["nested.parquet"]] == [("v1", 2), ("v2", 1)]
    assert sorted((v.video_id, sorted(c for c, _ in v.clips)) for v in read["flat.parquet"]) == [
        ("v1", ["v1.0.mp4", "v1.1.mp4"]), ("v2", ["v2.0.mp4"])
    ]
    pq.write_table(pa.table({"video_id": ["v1"], "start": [0.0]}), tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match="missing"):
        list(iter_videos(str(tmp_path / "wrong.parquet")))
    (tmp_path / "caps.csv").write_text('clip,text\nv1.0.mp4,"a man, walking"\nv2.0.mp4,dancing ü\n')
    assert load_captions(str(tmp_path / "caps.csv"), key="clip", column="text") == {"v1.0.mp4": "a man, walking", "v2.0.mp4": "dancing ü"}
    with pytest.raises(ValueError, match="caption"):
        load_captions(str(tmp_path / "caps.csv"), key="clip", column="caption")


def test_download_without_yt_dlp_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # as if yt-dlp were not installed, installed or not
    with pytest.raises(ValueError, match="pip install yt-dlp"):
        SourceConfig(metadata="m.jsonl", videos=str(tmp_path), download=True)


def test_cutter_turns_every_bad_video_into_a_reasoned_row(tmp_path, videos):
    entries = [
        _entry("good-A", [_span(1, 2), _span(3.5, 4.6), _span(2.5, 2.58)]),
        _entry("truncated", [_span(0.2, 0.8), _span(3, 3.5)]),
        _entry("garbage", [_span(0, 1)]),
        _entry("audio_only", [_span(0, 1)]),
        _entry("vfr", [_span(0.5, 1.5)]),
    ]
    source, rows = _plan(tmp_path, entries, videos)
    results = batch_to_rows(ClipCutter(CutConfig(fps=25, size=64), source)(rows_to_batch(rows)))
    got = {row["key"]: row for row in results}
    assert got["good-A_0"]["status"] == KEPT and decode_counters(got["good-A_0"]["mp4"]) == list(range(25, 50))
    assert got["good-A_1"]["status"] == "span_past_end" and "4.000" in got["good-A_1"]["error"]
    assert got["good-A_2"]["status"] == KEPT and got["good-A_2"]["frames"] == 2
    assert got["truncated_0"]["status"] == KEPT and decode_counters(got["truncated_0"]["mp4"]) == list(range(5, 20))
    assert got["truncated_1"]["status"] == "truncated_video" and "declares 4.000" in got["truncated_1"]["error"]
    assert got["garbage_0"]["status"] == "undecodable_video"
    assert got["audio_only_0"]["status"] == "undecodable_video" and "no video stream" in got["audio_only_0"]["error"]
    vfr = got["vfr_0"]
    assert vfr["status"] == KEPT and vfr["flags"] == ["variable_frame_rate"] and "variable frame rate" in vfr["error"]
    annotation = json.loads(vfr["annotation"])
    check_annotation(annotation)
    assert annotation["source"]["variable_frame_rate"] and annotation["frames"] == 25 and annotation["flags"] == ["variable_frame_rate"]
    rejected = batch_to_rows(ClipCutter(CutConfig(vfr_policy="reject"), source)(rows_to_batch([r for r in rows if r["video_id"] == "vfr"])))
    assert rejected[0]["status"] == "variable_frame_rate" and rejected[0]["mp4"] is None


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    if ray.is_initialized():
        yield ray
        return
    temp_dir = tempfile.mkdtemp(prefix="ray-hdv-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _job_inputs(tmp_path: Path) -> tuple[Path, Path]:
    entries = [
        _entry("good-A", [_span(0, 1), _span(1, 2.02), _span(1.5, 2.5), _span(2, 2), _span(3.5, 5)]),
        _entry("good_B", [_span(0.5, 1.5), _span(2, 2.96)]),
        _entry("missing", [_span(0, 1)]),
        _entry("truncated", [_span(3, 3.5)]),
        _entry("vfr", [_span(0.1, 1.1)]),
        "]broken line[",
        _entry("garbage", [_span(0, 1)]),
    ]
    metadata = _write_jsonl(tmp_path / "hdvila.jsonl", entries)
    captions = [{"clip_id": f"{e['video_id']}.{i}.mp4", "text": f"clip {i} of {e['video_id']} ✓"} for e in entries[:2] for i in range(len(e["clip"]))]
    pq.write_table(pa.Table.from_pylist(captions), tmp_path / "captions.parquet")
    return metadata, tmp_path / "captions.parquet"


@pytest.mark.slow
def test_whole_job_on_local_ray_resumes_and_is_idempotent(tmp_path, videos, ray_cluster, caplog):
    import webdataset as wds

    from pipelines.build_hdvila_clips import main

    metadata, captions = _job_inputs(tmp_path)
    out = tmp_path / "clips"
    argv = [
        "--metadata", str(metadata), "--videos", str(videos), "--output", str(out), "--fps", "10", "--size", "64",
        "--captions", str(captions), "--caption-column", "text", "--clips-per-shard", "3",
    ]  # fmt: skip
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_rows"] == 12 == sum(stats["counts"].values()) and stats["shards"] == stats["planned_shards"] == 4
    expected = {"kept": 5, "overlapping_span": 1, "empty_span": 1, "span_past_end": 1, "missing_video": 1,
                "truncated_video": 1, "invalid_metadata": 1, "undecodable_video": 1, "variable_frame_rate": 0}  # fmt: skip
    assert {k: stats["counts"][k] for k in expected} == {k: v for k, v in expected.items()}
    assert stats["flagged_variable_frame_rate"] == 1 and stats["kept_seconds"] == pytest.approx(5.1, abs=0.01)

    index = read_index(out)
    assert index.schema.equals(INDEX_SCHEMA) and index.num_rows == 12 and len(set(index.column("key").to_pylist())) == 12
    kept = {row["key"]: row for row in index.to_pylist() if row["status"] == KEPT}
    assert set(kept) == {"good-A_0", "good-A_1", "good_B_0", "good_B_1", "vfr_0"}
    samples = {s["__key__"]: s for s in wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False, empty_check=False)}
    assert set(samples) == set(kept)
    sample = samples["good-A_1"]
    annotation = json.loads(sample["json"])
    assert annotation["span"] == ["00:00:01.000", "00:00:02.020"] and annotation["frames"] == 11 == kept["good-A_1"]["frames"]
    assert (annotation["width"], annotation["height"], annotation["fps"]) == (64, 64, 10.0)
    assert sample["txt"].decode() == "clip 1 of good-A ✓" and kept["good-A_1"]["caption"] == "clip 1 of good-A ✓"
    assert decode_counters(sample["mp4"]) == [25 + int(2.5 * i) for i in range(11)]
    assert decode_counters(samples["good_B_1"]["mp4"]) == [50 + int(2.5 * i) for i in range(10)]  # from the mkv source
    assert hashlib.sha256(sample["mp4"]).hexdigest() == kept["good-A_1"]["sha256"]
    assert json.loads((out / "config.json").read_text())["shaping"]["cut"]["size"] == 64

    # idempotent: a rerun touches nothing; a lost shard is rebuilt identically
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in ("stats.json", "config.json")} == {
        k: v for k, v in before.items() if k not in ("stats.json", "config.json")
    }
    old_rows = pq.read_table(out / "00000.parquet").to_pylist()
    (out / "00000.stats.json").unlink()
    (out / ".00001.tar.tmp-1-deadbeef").write_bytes(b"half a tar")  # what a killed run leaves
    assert main(argv) == 0
    assert pq.read_table(out / "00000.parquet").to_pylist() == old_rows
    assert not list(out.glob(".*tmp-*")) and json.loads((out / "stats.json").read_text())["counts"] == stats["counts"]

    with pytest.raises(SystemExit):  # argparse reports the invalid value
        main([*argv, "--max-in-flight", "0"])
    with caplog.at_level(logging.ERROR):  # resuming with other settings would mix two configurations: one line, exit 2
        assert main([*argv, "--size", "32"]) == 2
    assert "holds shards built with other settings (cut.size)" in caplog.text


@pytest.mark.slow
def test_stream_copy_job_interrupted_then_resumed_matches_one_run(tmp_path, videos, ray_cluster):
    from pipelines.build_hdvila_clips import main

    metadata, _ = _job_inputs(tmp_path)
    common = ["--metadata", str(metadata), "--videos", str(videos), "--mode", "copy", "--clips-per-shard", "3"]
    assert main([*common, "--output", str(tmp_path / "once")]) == 0
    assert main([*common, "--output", str(tmp_path / "twice"), "--max-shards", "2"]) == 0
    assert json.loads((tmp_path / "twice" / "stats.json").read_text())["shards"] == 2
    assert main([*common, "--output", str(tmp_path / "twice")]) == 0
    once, twice = (read_index(tmp_path / name).to_pylist() for name in ("once", "twice"))
    assert once == twice
    kept = [row for row in once if row["status"] == KEPT]
    assert {row["key"] for row in kept} == {"good-A_0", "good-A_1", "good_B_0", "good_B_1", "vfr_0"}
    first = next(row for row in kept if row["key"] == "good-A_1")
    assert (first["cut_start"], first["cut_end"]) == (pytest.approx(0.96), pytest.approx(2.40))  # keyframes every 12 frames
