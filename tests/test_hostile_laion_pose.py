"""Hostile and careless inputs to the LAION-Pose builder (pipelines/build_laion_pose.py).

Real HTTP servers on 127.0.0.1 redirect to loopback, drip their bytes and send endless bodies; the parquet input
carries bytes that are not UTF-8; the output folder is a file, read-only, or in use. The fetcher is tested on its
own for the security properties and time bounds, the job once end to end on a local Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets.laion_pose import read_index
from datasets.output_folder import OutputLock
from pipelines.laion_pose.cli import SAMPLE_DIR, SAMPLE_PARQUET
from pipelines.laion_pose.fetcher import ImageFetcher
from pipelines.laion_pose.url_policy import UrlPolicy
from tests.hostile import (
    REPO, HostileServer, assert_refused, drip_body, drip_headers, endless, lock_held_elsewhere, redirect, run_entry,
    serve_bytes, unwritable_folder,
)  # fmt: skip

SCRIPT = str(Path("pipelines") / "build_laion_pose.py")
PHOTO = (SAMPLE_DIR / "images" / "camera_gray.jpg").read_bytes()
DEADLINE_S = 1.5
CAP = 1_000_000


@pytest.fixture(scope="module")
def secret():
    """An 'internal' service: nothing may ever reach it."""
    with HostileServer({"/secret.jpg": serve_bytes(PHOTO)}) as server:
        yield server


@pytest.fixture(scope="module")
def hostile(secret):
    """The 'public' server (allowed with --allow-host) and its tricks."""
    inside = f"127.0.0.1:{secret.port}/secret.jpg"
    routes = {
        "/photo.jpg": serve_bytes(PHOTO),
        "/redirect-ok": redirect("/photo.jpg"),
        "/redirect-loopback": redirect(f"http://{inside}"),
        "/redirect-localhost": redirect(f"http://localhost:{secret.port}/secret.jpg"),
        "/redirect-chain": redirect("/redirect-loopback"),
        "/redirect-file": redirect("file:///etc/hostname"),
        "/drip-body": drip_body(),
        "/drip-headers": drip_headers(),
        "/endless-declared": endless(2**31),
        "/endless-chunked": endless(None),
    }
    with HostileServer(routes) as server:
        yield server


def fetcher(policy: UrlPolicy, **limits) -> ImageFetcher:
    return ImageFetcher(policy, **{"timeout": 5.0, "deadline": DEADLINE_S, "max_bytes": CAP, **limits})


def public_policy(server: HostileServer, **kwargs) -> UrlPolicy:
    return UrlPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), **kwargs)


def test_every_redirect_hop_goes_through_the_url_policy(hostile, secret):
    fetch = fetcher(public_policy(hostile)).fetch
    assert fetch(f"{hostile.base}/redirect-ok").data == PHOTO
    for path, hop, reason in [
        ("/redirect-loopback", 1, f"redirect 1 to http://127.0.0.1:{secret.port}/secret.jpg: host 127.0.0.1 is a loopback address"),
        ("/redirect-localhost", 1, "host localhost resolves to loopback address"),
        ("/redirect-chain", 2, f"redirect 2 to http://127.0.0.1:{secret.port}/secret.jpg"),
        ("/redirect-file", 1, "redirect 1 to file:///etc/hostname: only http/https redirects are followed"),
    ]:
        result = fetch(hostile.base + path)
        assert (result.data, result.status) == (None, "refused_url") and reason in result.error, (path, result)
    assert secret.hits("/secret.jpg") == 0


def test_the_connection_goes_to_the_address_that_was_checked(hostile):
    """'mirror.test' exists only in the policy's resolver: the fetch can only reach the server through the address
    that resolver gave and the policy checked, never through a second lookup."""
    calls = []

    def mirror_dns(host, port):
        calls.append(host)
        if host != "mirror.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    url = f"http://mirror.test:{hostile.port}/photo.jpg"
    refused = fetcher(UrlPolicy(resolver=mirror_dns)).fetch(url)
    assert refused.status == "refused_url" and "mirror.test resolves to loopback address 127.0.0.1" in refused.error
    assert hostile.hits("/photo.jpg") == 0 or ("/photo.jpg", f"mirror.test:{hostile.port}") not in hostile.requests
    allowed = fetcher(UrlPolicy(resolver=mirror_dns, allowed_hosts=(f"mirror.test:{hostile.port}",))).fetch(url)
    assert allowed.data == PHOTO and calls == ["mirror.test", "mirror.test"]
    assert ("/photo.jpg", f"mirror.test:{hostile.port}") in hostile.requests  # the Host header names the URL's host


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_a_dripping_server_is_cut_at_the_image_deadline(hostile, path):
    start = time.monotonic()
    result = fetcher(public_policy(hostile), retries=2).fetch(hostile.base + path)
    elapsed = time.monotonic() - start
    assert result.status == "download_failed" and f"the {DEADLINE_S:g} s deadline" in result.error
    assert DEADLINE_S - 0.1 < elapsed < DEADLINE_S + 1.0, elapsed  # the per-read timeout (5 s) never fired


@pytest.mark.parametrize(("path", "within_s"), [("/endless-declared", 0.5), ("/endless-chunked", 5.0)])
def test_an_endless_body_stops_at_the_byte_cap(hostile, path, within_s):
    start = time.monotonic()
    result = fetcher(public_policy(hostile)).fetch(hostile.base + path)
    assert result.status == "download_failed" and f"larger than the {CAP}-byte cap" in result.error
    assert time.monotonic() - start < within_s


# --- the job, end to end on a local Ray --------------------------------------------------------------------


def _not_utf8_strings(values: list[bytes | None]) -> pa.Array:
    """A parquet ``string`` column holding bytes that are not UTF-8 (parquet writers do not check)."""
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), null_count=binary.null_count)


def test_job_counts_hostile_rows_and_completes_its_shards(hostile, secret, tmp_path):
    base = hostile.base.encode()
    rows = [  # (URL bytes, caption bytes, expected status, reason)
        (base + b"/redirect-loopback", b"redirected inside", "refused_url", "redirect 1 to http://127.0.0.1"),
        (base + b"/drip-body", b"a dripping server", "download_failed", f"the {DEADLINE_S:g} s deadline"),
        (base + b"/endless-chunked", b"an endless body", "download_failed", f"larger than the {CAP}-byte cap"),
        (base + b"/photo.jpg", b"caf\xe9 au lait \xff", "kept", None),
        (base + b"/\xff\xfe.jpg", b"a URL of raw bytes", "download_failed", "the URL is not valid UTF-8"),
        (base + b"/redirect-ok", b"a redirect that stays outside", "kept", None),
    ]
    table = pa.table({
        "URL": pa.array([r[0] for r in rows], pa.binary()),
        "TEXT": pa.array([r[1] for r in rows], pa.binary()),
        "note": _not_utf8_strings([b"fine", b"\xc3\x28 broken", None, b"ok", b"\xff", b"x"]),
        "similarity": [0.3] * len(rows),
    })  # fmt: skip
    source = tmp_path / "hostile.parquet"
    pq.write_table(table, source)
    output = tmp_path / "out"
    ray_temp = tempfile.mkdtemp(prefix="lph", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    start = time.monotonic()
    try:
        done = run_entry(
            SCRIPT, "--input", str(source), "--output", str(output), "--allow-host", f"127.0.0.1:{hostile.port}",
            "--image-deadline", str(DEADLINE_S), "--max-image-bytes", str(CAP), "--timeout", "5", "--shard-size", "3",
            "--pose-workers", "1", "--num-cpus", "2", "--ray-temp-dir", ray_temp, timeout=400,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    elapsed = time.monotonic() - start
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-4000:]
    index = read_index(output).sort_by("key").to_pylist()
    for row, (_, _, status, reason) in zip(index, rows):
        assert row["status"] == status and (reason is None or reason in row["error"]), row
    assert index[3]["caption"] == "caf\ufffd au lait \ufffd" and index[1]["note"] == "\ufffd( broken"
    totals = json.loads((output / "stats.json").read_text())
    assert totals["complete"] and totals["input_rows"] == len(rows) == sum(totals["counts"].values())
    assert secret.hits("/secret.jpg") == 0 and elapsed < 300
    assert not (output / ".lock").exists()


def test_ctrl_c_stops_the_job_cleanly_and_frees_the_output(hostile, tmp_path):
    """What the README says about stopping a job: Ctrl-C (SIGINT to the foreground process group) mid-run stops the
    actors, shuts down the Ray the job started and releases the output lock; finished shards stay."""
    source = tmp_path / "slow.parquet"
    urls = [f"{hostile.base}/photo.jpg"] * 2 + [f"{hostile.base}/drip-body"] * 2
    pq.write_table(pa.table({"URL": urls, "TEXT": ["a photo"] * 2 + ["a dripping server"] * 2}), source)
    output, ray_temp = tmp_path / "out", tempfile.mkdtemp(prefix="lpi", dir="/tmp")
    command = [SCRIPT, "--input", str(source), "--output", str(output), "--allow-host", f"127.0.0.1:{hostile.port}",
               "--image-deadline", "25", "--shard-size", "2", "--pose-workers", "1", "--num-cpus", "2", "--ray-temp-dir", ray_temp]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "job.log"
    with open(log, "w") as sink:
        job = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, start_new_session=True, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 180
        while not (output / "00000.stats.json").exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.poll() is None and (output / ".lock").exists()  # the second shard is still dripping
        os.killpg(job.pid, signal.SIGINT)
        start = time.monotonic()
        job.wait(timeout=60)
        stopped_s = time.monotonic() - start
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        shutil.rmtree(ray_temp, ignore_errors=True)
    stderr = log.read_text()
    assert job.returncode == 130 and "Traceback" not in stderr and stopped_s < 30, stderr[-3000:]
    assert "interrupted: finished shards are kept; rerun the same command to resume" in stderr
    assert not (output / ".lock").exists() and (output / "00000.stats.json").exists()
    OutputLock(output).acquire().release()  # nothing of the stopped run holds the folder


# --- refusals before any work ------------------------------------------------------------------------------


def _refusal(output: Path) -> tuple[float, object]:
    start = time.monotonic()
    done = run_entry(SCRIPT, "--input", str(SAMPLE_PARQUET), "--output", str(output), "--num-cpus", "1")
    return time.monotonic() - start, done


def test_unusable_output_folders_are_refused_before_any_work(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    seconds, done = _refusal(afile)
    assert_refused(done, f"--output {afile} is a file, not a folder")
    assert seconds < 30 and "Ray" not in done.stderr  # refused before Ray starts
    read_only = unwritable_folder(tmp_path)
    assert_refused(_refusal(read_only)[1], f"--output {read_only} is not writable")
    assert_refused(_refusal(afile / "below")[1], f"--output {afile / 'below'} cannot be created")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    assert_refused(_refusal(garbage)[1], "config.json is not a LAION-Pose config")


def test_a_second_build_on_the_same_output_is_refused_naming_the_holder(tmp_path):
    output = tmp_path / "busy"
    output.mkdir()
    with lock_held_elsewhere(output) as pid:
        line = assert_refused(_refusal(output)[1], f"{output} is in use by another run: PID {pid} on host {socket.gethostname()}")
    assert "Ray" not in line


def test_an_output_from_before_the_download_limits_resumes_at_their_defaults(tmp_path):
    """config.json of an earlier version does not record the settings added since: they count as their defaults."""
    from dataclasses import replace

    from pipelines.laion_pose.config import DownloadConfig, InputConfig, JobConfig
    from pipelines.laion_pose.job import prepare_output

    config = JobConfig(input=InputConfig(path=str(SAMPLE_PARQUET)), output=str(tmp_path))
    prepare_output(tmp_path, config)
    recorded = json.loads((tmp_path / "config.json").read_text())
    for name in ("image_deadline", "max_image_bytes", "allowed_hosts"):
        del recorded["output_signature"]["download"][name]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    prepare_output(tmp_path, config)  # resumes
    with pytest.raises(ValueError, match=r"section\(s\) \['download'\] differ"):
        prepare_output(tmp_path, replace(config, download=DownloadConfig(image_deadline=5)))
