"""Each LAION-Pose builder stage on a handful of real records, without Ray: the shard writer, download, pose
and write. What the builder takes in (input plan, URL policy, resizer, command line) is tests/test_laion_pose_inputs.py.

Inputs are the bundled sample (pipelines/sample, made by its make_sample.py):
real photos from scikit-image/matplotlib and real bad files.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasets.laion_pose import INDEX_SCHEMA, STATUSES, check_annotation, iter_samples, read_index
from pipelines.laion_pose.cli import SAMPLE_DIR, SAMPLE_PARQUET
from pipelines.laion_pose.config import DownloadConfig, InputConfig, PoseStageConfig
from pipelines.laion_pose.download import DOWNLOADED, download_shard
from pipelines.laion_pose.inputs import plan_input
from pipelines.laion_pose.pose_stage import PoseAnnotator, decode_rgb, objects
from pipelines.laion_pose.workers import annotate_shard
from pipelines.laion_pose.writer import index_schema
from datasets.shards import (
    ProgressLogger,
    ShardWriter,
    aggregate_stats,
    finished_shards,
    make_shard_stats,
    remove_partial_files,
)

IMAGES = SAMPLE_DIR / "images"


# ---------------------------------------------------------------- shards


def test_shard_writer_is_atomic_and_resumable(tmp_path):
    with ShardWriter(tmp_path, "00000") as writer:
        writer.write({"__key__": "a", "txt": b"x"})
        with pytest.raises(ValueError, match="duplicate"):
            writer.write({"__key__": "a", "txt": b"y"})
        writer.commit(pa.table({"key": ["a"]}), make_shard_stats("00000", {"kept": 1, "no_person": 1}, statuses=["kept", "no_person"]))
    with ShardWriter(tmp_path, "00001") as writer:  # never committed, like a killed job
        writer.write({"__key__": "b", "txt": b"x"})
        assert any(p.name.startswith(".00001.tar.tmp-") for p in tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.parquet", "00000.stats.json", "00000.tar"]
    assert finished_shards(tmp_path) == {"00000"}
    (tmp_path / ".00002.tar.tmp-1-abc").write_bytes(b"partial")
    assert [p.name for p in remove_partial_files(tmp_path)] == [".00002.tar.tmp-1-abc"]
    totals = aggregate_stats(tmp_path, statuses=["kept", "no_person", "pose_failed"])
    assert totals["input_rows"] == 2 and totals["counts"] == {"kept": 1, "no_person": 1, "pose_failed": 0}
    assert json.loads((tmp_path / "stats.json").read_text())["shards"] == 1
    with pytest.raises(ValueError, match="unknown status"):
        make_shard_stats("00003", {"bogus": 1}, statuses=["kept"])
    (tmp_path / "00004.stats.json").write_text(json.dumps({"shard": "00004", "input_rows": 3, "counts": {"kept": 1}}))
    with pytest.raises(ValueError, match="do not add up"):
        aggregate_stats(tmp_path)


def test_shard_tar_matches_webdataset_tarwriter_and_reads_back(tmp_path):
    import tarfile

    import webdataset as wds

    samples = [{"__key__": f"k{i}", "txt": f"caption {i}".encode(), "jpg": bytes([i]) * 700, "pose.png": b"p" * i} for i in range(3)]
    with ShardWriter(tmp_path, "00000") as writer:
        for sample in samples:
            writer.write({**sample, "__url__": "meta entries are not members"})
        with pytest.raises(ValueError, match="must be bytes"):
            writer.write({"__key__": "bad", "txt": "a str"})
        writer.commit(pa.table({"key": ["k0"]}), make_shard_stats("00000", {"kept": 3}, statuses=["kept"]))
    with open(tmp_path / "reference.tar", "wb") as handle, wds.TarWriter(handle, encoder=False) as reference:
        for sample in samples:
            reference.write(sample)
    with tarfile.open(tmp_path / "00000.tar") as ours, tarfile.open(tmp_path / "reference.tar") as theirs:
        describe = lambda tar: [(m.name, m.size, m.mode, m.uname, m.gname, m.type, tar.extractfile(m).read()) for m in tar]  # noqa: E731
        assert describe(ours) == describe(theirs)
        assert ours.members[0].name == "k0.jpg"
    read = list(wds.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False))
    assert [(s["__key__"], s["txt"], s["jpg"], s["pose.png"]) for s in read] == [
        (s["__key__"], s["txt"], s["jpg"], s["pose.png"]) for s in samples
    ]


def test_writing_a_shard_does_not_import_webdataset_or_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, pyarrow as pa\n"
        "from datasets.shards import ShardWriter, make_shard_stats\n"
        f"with ShardWriter({str(tmp_path)!r}, '00000') as w:\n"
        "    w.write({'__key__': 'a', 'txt': b'x'})\n"
        "    w.commit(pa.table({'key': ['a']}), make_shard_stats('00000', {'kept': 1}))\n"
        "print(sorted(m for m in ('webdataset', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "[]" and (tmp_path / "00000.tar").exists()


def test_progress_line_counts_rows_rate_and_kept_ratio():
    now = [100.0]
    progress = ProgressLogger(4, unit="images", clock=lambda: now[0])
    progress.skip(1)
    now[0] = 110.0
    line = progress.update({"input_rows": 20, "counts": {"kept": 5}})
    assert line == "shards 2/4 | 20 images in 10.0 s (2.00 images/s) | kept 5/20 (25.0%)"


# ---------------------------------------------------------------- download + pose + write


@pytest.fixture(scope="module")
def sample_shard():
    """The bundled sample as one shard, fetched from file:// and resized by img2dataset's resizer (no Ray)."""
    config = InputConfig(path=str(SAMPLE_PARQUET), url_base=SAMPLE_DIR.as_uri() + "/", shard_size=100)
    plan = plan_input(config)
    downloaded = download_shard(plan.shards[0], plan, config, DownloadConfig(allowed_file_roots=(str(SAMPLE_DIR),)))
    return plan, downloaded


@pytest.fixture(scope="module")
def annotator():
    built = PoseAnnotator(PoseStageConfig())
    yield built
    built.close()


EXPECTED_DOWNLOAD = {
    "images/truncated.jpg": "not_an_image",
    "images/html_page.jpg": "not_an_image",
    "images/one_pixel.png": "image_too_small",
    "images/bomb.png": "image_too_large",
    "images/does_not_exist.jpg": "download_failed",
    "http://127.0.0.1:9/internal.jpg": "refused_url",
    "file:///etc/hostname": "refused_url",
}


def test_download_stage_counts_every_row(sample_shard):
    plan, downloaded = sample_shard
    table = downloaded.table
    source = pq.read_table(SAMPLE_PARQUET)
    assert table.num_rows == source.num_rows == downloaded.carried.num_rows
    assert table.column("key").to_pylist() == [f"00000{i:04d}" for i in range(source.num_rows)]
    assert downloaded.carried.column("AESTHETIC_SCORE").to_pylist() == source.column("AESTHETIC_SCORE").to_pylist()
    for raw, status, image in zip(source.column("URL").to_pylist(), table.column("status").to_pylist(), table.column("image").to_pylist()):
        assert status == EXPECTED_DOWNLOAD.get(raw, DOWNLOADED), raw
        assert (image is not None) == (status == DOWNLOADED)
    outcomes = downloaded.stats["download"]["outcomes"]
    assert sum(outcomes.values()) == downloaded.stats["download"]["fetched"] == source.num_rows and outcomes["refused_url"] == 2
    stored = dict(zip(source.column("URL").to_pylist(), zip(table.column("image").to_pylist(), table.column("sha256").to_pylist())))
    image, digest = stored["images/coffee.jpg"]  # a JPEG that fits: the fetched bytes, their hash
    assert image == (IMAGES / "coffee.jpg").read_bytes() and digest == hashlib.sha256(image).hexdigest()


def test_pose_stage_keeps_people_and_rejects_the_rest(sample_shard, annotator):
    _, downloaded = sample_shard
    table = downloaded.table
    batch = {name: objects(table.column(name).to_pylist()) for name in table.column_names}
    out = annotator(batch)
    by_url = dict(zip(pq.read_table(SAMPLE_PARQUET).column("URL").to_pylist(), range(table.num_rows)))
    for name in ("camera_gray.jpg", "astronaut_mirrored.jpg", "astronaut_alpha.png"):
        index = by_url[f"images/{name}"]
        assert out["status"][index] == "kept", name
        annotation = json.loads(out["annotation"][index])
        check_annotation(annotation)
        assert annotation["estimator"] == "mediapipe/blazepose-full" and len(annotation["persons"]) == 1
        skeleton = cv2.imdecode(np.frombuffer(out["skeleton"][index], np.uint8), cv2.IMREAD_COLOR)
        assert skeleton.shape[:2] == (out["height"][index], out["width"][index]) and skeleton.any()
    for name in ("coffee.jpg", "chelsea.jpg", "rocket.jpg"):
        assert out["status"][by_url[f"images/{name}"]] == "no_person", name
    assert out["status"][by_url["images/grace_hopper.jpg"]] == "too_few_keypoints"  # a head-and-shoulders portrait
    for url, status in EXPECTED_DOWNLOAD.items():
        assert out["status"][by_url[url]] == status and out["person_count"][by_url[url]] is None


class _FailsOnSmallImages:
    """A real MediaPipe estimator that raises on images under 400 pixels wide (a crashing model)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def __call__(self, images):
        if any(image.shape[1] < 400 for image in images):
            raise RuntimeError("model crashed")
        return self.inner(images)


def test_a_failing_image_is_a_pose_failed_row(sample_shard, annotator):
    _, downloaded = sample_shard
    table = downloaded.table
    stage = PoseAnnotator(PoseStageConfig(images_per_call=4), estimator=_FailsOnSmallImages(annotator.estimator))
    out = stage({name: objects(table.column(name).to_pylist()) for name in table.column_names})
    widths = [None if image is None else decode_rgb(image).shape[1] for image in table.column("image").to_pylist()]
    for width, status, error in zip(widths, out["status"], out["error"]):
        if width is not None and width < 400:
            assert status == "pose_failed" and "model crashed" in error
        elif width is not None:
            assert status in ("kept", "no_person", "too_few_keypoints")


def test_written_shard_reads_back(tmp_path, sample_shard, annotator):
    plan, downloaded = sample_shard
    stats = annotate_shard(annotator, downloaded, tmp_path, index_schema(plan.carried_schema))
    index = read_index(tmp_path)
    assert index.schema.names[: len(INDEX_SCHEMA)] == INDEX_SCHEMA.names
    assert "AESTHETIC_SCORE" in index.schema.names and index.num_rows == stats["input_rows"] == 18
    assert set(stats["counts"]) == set(STATUSES) and sum(stats["counts"].values()) == 18
    kept = index.filter(pc.equal(index["status"], "kept"))
    samples = list(iter_samples(tmp_path))
    assert [s.key for s in samples] == kept.column("key").to_pylist() and stats["samples"] == len(samples)
    for sample, width, height in zip(samples, kept.column("width").to_pylist(), kept.column("height").to_pylist()):
        assert sample.image.shape == (height, width, 3) and sample.keypoints.shape[1:] == (17, 3)
        assert sample.caption == sample.annotation["caption"]


def _as_shard(downloaded, index: int):
    """The downloaded sample as shard ``index``, its keys renamed to match."""
    import dataclasses

    table = downloaded.table
    field = table.schema.get_field_index("key")
    keys = pa.array([f"{index:05d}{key[5:]}" for key in table.column("key").to_pylist()], pa.string())
    renamed = table.set_column(field, table.schema.field(field), keys)
    return dataclasses.replace(downloaded, spec=dataclasses.replace(downloaded.spec, index=index), table=renamed)


def test_pose_worker_writes_shards_processed_from_two_threads(tmp_path, sample_shard):
    """The pose actor runs with max_concurrency 2 (one shard's write overlaps the next one's model run)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.laion_pose.workers import PoseWorker

    plan, downloaded = sample_shard
    shards = [_as_shard(downloaded, i) for i in range(3)]
    worker = PoseWorker(PoseStageConfig(images_per_call=4), str(tmp_path), index_schema(plan.carried_schema))
    try:
        with ThreadPoolExecutor(2) as pool:
            stats = list(pool.map(worker.process, shards))
    finally:
        worker.close()
    assert finished_shards(tmp_path) == {"00000", "00001", "00002"}
    assert [s["shard"] for s in stats] == ["00000", "00001", "00002"]
    assert all(s["counts"] == stats[0]["counts"] and s["counts"]["kept"] >= 3 for s in stats)


class _HeldModel:
    """A real MediaPipe estimator whose first call waits until the test lets it go (a model run in progress)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.running, self.go = threading.Event(), threading.Event()

    def __call__(self, images):
        if not self.go.is_set():
            self.running.set()
            assert self.go.wait(timeout=60), "the test never let the model go"
        return self.inner(images)


def test_a_shard_decodes_while_another_runs_the_model(tmp_path, sample_shard, annotator):
    """The pose actor's model lock covers the model calls only: shard 2 decodes its images during shard 1's run."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.laion_pose.workers import PoseWorker

    plan, downloaded = sample_shard
    model = _HeldModel(annotator.estimator)  # the module's model serves both shards
    worker = PoseWorker(PoseStageConfig(images_per_call=4), str(tmp_path), index_schema(plan.carried_schema), model)
    second_decoded, decoding = threading.Event(), worker.annotator.decode

    def decode(batch):
        result = decoding(batch)
        if str(batch["key"][0]).startswith("00001"):
            second_decoded.set()
        return result

    worker.annotator.decode = decode
    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(worker.process, _as_shard(downloaded, 0))
        assert model.running.wait(timeout=60)
        two = pool.submit(worker.process, _as_shard(downloaded, 1))
        overlapped = second_decoded.wait(timeout=60) and not one.done()
        model.go.set()
        stats = [one.result(), two.result()]
    assert overlapped, "shard 00001 decoded nothing while shard 00000 held the model"
    assert finished_shards(tmp_path) == {"00000", "00001"} and stats[0]["counts"] == stats[1]["counts"]
