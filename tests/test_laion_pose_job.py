"""The whole LAION-Pose job on a local Ray cluster against a real HTTP server on 127.0.0.1.

The server serves real photos of people (the bundled sample, from
scikit-image/matplotlib) and every bad case a crawl meets; the job downloads
them with img2dataset, runs the real MediaPipe backend and writes shards that
are read back with webdataset and pyarrow. The resume test kills a job
started as a subprocess (SIGKILL to its process group) after some shards and
checks that a rerun gives exactly what an uninterrupted run gave.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasets.laion_pose import INDEX_SCHEMA, SAMPLE_EXTS, STATUSES, iter_samples, read_index
from pipelines.build_laion_pose import main
from pipelines.laion_pose.cli import SAMPLE_DIR

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
IMAGES = SAMPLE_DIR / "images"
ODD_CAPTION = "Astronaut \u5b87\u5b99 \U0001f469\u200d\U0001f680 e\u0301 \u05e9\u05dc\u05d5\u05dd \u200b\ufeff\ttab\nline \x00nul"
SLOW_S = 3.0
TIMEOUT_S = 2

# path -> (http status, extra headers, body file or bytes); "/slow" sleeps past the client timeout; "/gate" waits for the test.
ROUTES: dict[str, tuple[int, dict, object]] = {
    "/people/astronaut.jpg": (200, {"Content-Type": "image/jpeg"}, "astronaut.jpg"),
    "/people/camera_gray.jpg": (200, {"Content-Type": "image/jpeg"}, "camera_gray.jpg"),
    "/people/mirrored.jpg": (200, {"Content-Type": "image/jpeg"}, "astronaut_mirrored.jpg"),
    "/people/cmyk.jpg": (200, {"Content-Type": "image/jpeg"}, "astronaut_cmyk.jpg"),
    "/people/alpha.png": (200, {"Content-Type": "image/png"}, "astronaut_alpha.png"),
    "/people/16bit.png": (200, {"Content-Type": "image/png"}, "astronaut_16bit.png"),
    "/people/exif_rotated.jpg": (200, {"Content-Type": "image/jpeg"}, "astronaut_exif_rotated.jpg"),
    "/scenery/coffee.jpg": (200, {"Content-Type": "image/jpeg"}, "coffee.jpg"),
    "/scenery/chelsea.jpg": (200, {"Content-Type": "image/jpeg"}, "chelsea.jpg"),
    "/bad/html.jpg": (200, {"Content-Type": "text/html"}, b"<html><body>Sorry, this image was removed</body></html>"),
    "/bad/truncated.jpg": (200, {"Content-Type": "image/jpeg"}, "truncated.jpg"),
    "/bad/one_pixel.png": (200, {"Content-Type": "image/png"}, "one_pixel.png"),
    "/bad/bomb.png": (200, {"Content-Type": "image/png"}, "bomb.png"),
    "/bad/opted_out.jpg": (200, {"Content-Type": "image/jpeg", "X-Robots-Tag": "noai"}, "astronaut.jpg"),
    "/slow/astronaut.jpg": (200, {"Content-Type": "image/jpeg"}, "astronaut.jpg"),
    "/gate/camera_gray.jpg": (200, {"Content-Type": "image/jpeg"}, "camera_gray.jpg"),
}
# (path or full URL, caption, expected status or set of acceptable ones); the gate row comes last, alone in its shard.
BORDERLINE = {"kept", "too_few_keypoints"}  # astronaut variants show 8-10 of 17 keypoints: either side of "more than half"
ROWS = [
    ("/people/camera_gray.jpg", "A man with a camera on a tripod", "kept"),
    ("/people/mirrored.jpg", ODD_CAPTION, "kept"),
    ("/people/alpha.png", "Cut-out astronaut", "kept"),
    ("/people/astronaut.jpg", "An astronaut", BORDERLINE),
    ("/people/cmyk.jpg", "CMYK scan", BORDERLINE),
    ("/people/16bit.png", "16-bit PNG", BORDERLINE),
    ("/people/exif_rotated.jpg", "Rotated phone photo", BORDERLINE),
    ("/scenery/coffee.jpg", "A cup of coffee", "no_person"),
    ("/scenery/chelsea.jpg", "A cat", "no_person"),
    ("/bad/missing.jpg", "A 404", "download_failed"),
    ("CLOSED_PORT", "Nobody listens there", "download_failed"),
    ("/slow/astronaut.jpg", "A server slower than the timeout", "download_failed"),
    ("/bad/html.jpg", "HTML instead of an image", "not_an_image"),
    ("/bad/truncated.jpg", "A truncated JPEG", "not_an_image"),
    ("/bad/one_pixel.png", "A 1x1 pixel", "image_too_small"),
    ("/bad/bomb.png", "A decompression bomb", "image_too_large"),
    ("/bad/opted_out.jpg", "X-Robots-Tag: noai", "opted_out"),
    ("/gate/camera_gray.jpg", "Held back until the test opens the gate", "kept"),
]
SHARD_SIZE = 2


class _Handler(http.server.BaseHTTPRequestHandler):
    gate: threading.Event

    def do_GET(self):  # noqa: N802 - http.server's naming
        route = ROUTES.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        if self.path.startswith("/slow/"):
            time.sleep(SLOW_S)
        if self.path.startswith("/gate/"):
            self.gate.wait(timeout=30)
        status, headers, body = route
        data = body if isinstance(body, bytes) else (IMAGES / body).read_bytes()
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    gate = threading.Event()
    gate.set()
    handler = type("Handler", (_Handler,), {"gate": gate})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", gate
    gate.set()
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def laion_input(server, tmp_path_factory) -> Path:
    base, _ = server
    closed = f"http://127.0.0.1:{_closed_port()}/image.jpg"
    urls = [closed if path == "CLOSED_PORT" else base + path for path, _, _ in ROWS]
    table = pa.table(
        {
            "URL": urls,
            "TEXT": [caption for _, caption, _ in ROWS],
            "similarity": np.linspace(0.25, 0.4, len(ROWS)),
            "punsafe": np.linspace(0.0, 0.1, len(ROWS)),
            "hash": pa.array(range(1000, 1000 + len(ROWS)), pa.int64()),
        }
    )
    path = tmp_path_factory.mktemp("laion") / "part-00000.parquet"
    pq.write_table(table, path)
    return path


def _args(laion_input: Path, output: Path) -> list[str]:
    return [
        "--input", str(laion_input), "--output", str(output), "--allow-private-urls", "--shard-size", str(SHARD_SIZE),
        "--timeout", str(TIMEOUT_S), "--retries", "0", "--pose-workers", "1", "--download-cpus", "0.5",
    ]  # fmt: skip


def test_missing_column_fails_before_any_work(tmp_path, caplog):
    import ray

    pq.write_table(pa.table({"URL": ["http://127.0.0.1/a.jpg"], "caption": ["a"]}), tmp_path / "in.parquet")
    assert not ray.is_initialized()
    code = main(["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out")])
    assert code == 2 and "['TEXT'] not found" in caplog.text
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def full_run(ray_cluster, laion_input, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("full") / "laion_pose"
    assert main(_args(laion_input, output)) == 0
    return output


def test_no_arguments_build_the_bundled_sample(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    output = tmp_path / "outputs" / "laion_pose_sample"
    totals = json.loads((output / "stats.json").read_text())
    assert totals["input_rows"] == 18 == sum(totals["counts"].values()) and totals["complete"]
    assert totals["counts"]["refused_url"] == 2  # loopback and file:// outside the sample: refused without the flag
    assert totals["counts"]["no_person"] == 3 and totals["counts"]["kept"] >= 4
    before = sorted((p.name, p.stat().st_mtime_ns) for p in output.glob("0*"))
    assert main([]) == 0  # a rerun finds every shard finished and redoes nothing
    assert sorted((p.name, p.stat().st_mtime_ns) for p in output.glob("0*")) == before
    monkeypatch.chdir(output)  # config.json is a --config file for the same job, from any folder: it resumes
    assert main(["--config", str(output / "config.json")]) == 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in output.glob("0*")) == before


def _expected(status):
    return status if isinstance(status, set) else {status}


def test_job_writes_every_row_with_its_status(full_run, laion_input):
    index = read_index(full_run).sort_by("key")
    keys = [f"{shard:05d}{row:04d}" for shard in range(len(ROWS) // SHARD_SIZE) for row in range(SHARD_SIZE)]
    assert index.column("key").to_pylist() == keys
    assert index.schema.names == INDEX_SCHEMA.names + ["similarity", "punsafe", "hash"]
    assert index.column("hash").to_pylist() == list(range(1000, 1000 + len(ROWS)))
    statuses = index.column("status").to_pylist()
    errors = index.column("error").to_pylist()
    for (path, _, expected), status, error in zip(ROWS, statuses, errors):
        assert status in _expected(expected), (path, status, error)
    assert "timed out" in errors[[p for p, _, _ in ROWS].index("/slow/astronaut.jpg")]
    assert "404" in errors[[p for p, _, _ in ROWS].index("/bad/missing.jpg")]

    totals = json.loads((full_run / "stats.json").read_text())
    assert totals["input_rows"] == len(ROWS) and totals["complete"] and totals["shards"] == len(ROWS) // SHARD_SIZE
    assert set(totals["counts"]) == set(STATUSES) and sum(totals["counts"].values()) == len(ROWS)
    assert {k: v for k, v in totals["counts"].items() if v} == dict(Counter(statuses))
    assert totals["estimators"] == ["mediapipe/blazepose-full"]
    assert json.loads((full_run / "config.json").read_text())["job"]["input"]["shard_size"] == SHARD_SIZE


def test_tars_hold_the_kept_samples(full_run):
    import webdataset as wds

    index = read_index(full_run)
    kept = index.filter(pc.equal(index["status"], "kept")).sort_by("key")
    raw = list(wds.WebDataset(sorted(str(p) for p in full_run.glob("*.tar")), shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in raw) == kept.column("key").to_pylist()
    assert all(set(s) - {"__key__", "__url__", "__local_path__"} == set(SAMPLE_EXTS) for s in raw)
    samples = {s.key: s for s in iter_samples(full_run)}
    for row in kept.to_pylist():
        sample = samples[row["key"]]
        assert sample.image.shape == (row["height"], row["width"], 3)
        assert sample.caption == row["caption"] and row["shard"] == row["key"][:5] + ".tar"
        assert len(sample.keypoints) == row["person_count"] == 1
        assert (sample.keypoints[0, :, 2] > 0.3).sum() == row["visible_keypoints"] > 8
    assert samples["000000001"].caption == ODD_CAPTION  # unicode, control characters and NUL survive


def _finished(output: Path) -> int:
    return len(list(output.glob("*.stats.json")))


def _kill_tree(process: subprocess.Popen, ray_temp: str) -> None:
    """SIGKILL the job's process group, then any process of its own Ray session still alive (by PID)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, ray_temp)]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _wait_until_free(output: Path, timeout: float = 90) -> None:
    """Until the killed run's last Ray worker (its pose actor may finish its shard) has let go of the output lock."""
    from datasets.output_folder import OutputFolderError, OutputLock

    deadline = time.monotonic() + timeout
    while True:
        try:
            OutputLock(output).acquire().release(unlink=False)
            return
        except OutputFolderError:
            assert time.monotonic() < deadline, "the killed run's workers never let go of the output folder"
            time.sleep(0.5)


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_killed_job_resumes_to_the_same_result(full_run, laion_input, server, tmp_path):
    _, gate = server
    output = tmp_path / "laion_pose"
    ray_temp = tempfile.mkdtemp(prefix="lpr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gate.clear()  # the last shard's download hangs until killed
    command = [sys.executable, str(REPO / "pipelines" / "build_laion_pose.py"), *_args(laion_input, output), "--num-cpus", "2", "--ray-temp-dir", ray_temp]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "killed_run.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while _finished(output) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert 2 <= _finished(output) < len(ROWS) // SHARD_SIZE
    finally:
        _kill_tree(process, ray_temp)
        gate.set()
        shutil.rmtree(ray_temp, ignore_errors=True)
    _wait_until_free(output)
    interrupted = _finished(output)
    for stats in output.glob("*.stats.json"):  # what is marked finished is whole
        stem = stats.name.removesuffix(".stats.json")
        assert pq.read_table(output / f"{stem}.parquet").num_rows == SHARD_SIZE
    assert not (output / "stats.json").exists()

    assert main(_args(laion_input, output)) == 0
    columns = ["key", "status", "url", "caption", "width", "height", "person_count", "visible_keypoints", "shard", "sha256", "hash"]
    resumed, reference = read_index(output).sort_by("key"), read_index(full_run).sort_by("key")
    assert resumed.select(columns).equals(reference.select(columns))
    assert sorted(s.key for s in iter_samples(output)) == sorted(s.key for s in iter_samples(full_run))
    totals = json.loads((output / "stats.json").read_text())
    assert totals["counts"] == json.loads((full_run / "stats.json").read_text())["counts"]
    assert interrupted < totals["shards"] == len(ROWS) // SHARD_SIZE
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no temporaries left
