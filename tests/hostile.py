"""What the hostile-input tests share: running an entry point as a user does, hostile HTTP servers, locked and
unwritable folders. Every input is made here or by the test; nothing under test is mocked."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
DRIP_LIMIT_S = 30.0
"""A dripping route gives up after this long, so its server thread always ends."""


def run_entry(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (a script path or ``-m module ...``) from this checkout, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, and one stderr line holding every needle; returns that line."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if all(needle in line for needle in needles)]
    assert len(lines) == 1, (needles, done.stderr[-3000:])
    return lines[0]


def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot write into: read-only permissions, or for root (who ignores them)
    a folder of the read-only sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "earlier-run.txt").write_text("an earlier run's file\n")
    folder.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return folder
    folder.chmod(0o755)
    return Path("/sys/fs")


@contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[int]:
    """Another process holding ``folder``'s output lock (as a running build would); yields its PID."""
    code = (
        "import sys, time\nfrom datasets.output_folder import OutputLock\n"
        f"OutputLock({str(folder)!r}, workers=True).acquire()\nprint('held', flush=True)\ntime.sleep(300)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --- hostile HTTP servers --------------------------------------------------------------------------------


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def serve_bytes(data: bytes, content_type: str = "image/jpeg") -> Route:
    def route(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def redirect(location: str) -> Route:
    def route(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def drip_body(interval: float = 0.1) -> Route:
    """Headers at once, then one byte every ``interval`` seconds of a body declared 1 MB long."""

    def route(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(1_000_000))
        handler.end_headers()
        _drip(handler, b"\xff", interval)

    return route


def drip_headers(interval: float = 0.1) -> Route:
    """The status line and headers themselves, one byte every ``interval`` seconds."""

    def route(handler) -> None:
        _drip(handler, b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"a" * 10_000, interval)

    return route


def _drip(handler, data: bytes, interval: float) -> None:
    end = time.monotonic() + DRIP_LIMIT_S
    try:
        for index in range(10**9):
            if time.monotonic() > end:
                return
            handler.wfile.write(data[index % len(data) : index % len(data) + 1])
            handler.wfile.flush()
            time.sleep(interval)
    except OSError:  # the client gave up: what the test wants
        pass


def endless(declared: int | None) -> Route:
    """A body of zeros as fast as the client reads it, declared ``declared`` bytes long (None: chunked, no length)."""

    def route(handler) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        if declared is None:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        chunk = b"\0" * 65536
        piece = (b"%x\r\n" % len(chunk)) + chunk + b"\r\n" if declared is None else chunk
        end = time.monotonic() + DRIP_LIMIT_S
        try:
            while time.monotonic() < end:
                handler.wfile.write(piece)
        except OSError:
            pass

    return route


class HostileServer:
    """A real HTTP server on 127.0.0.1 serving ``routes`` (path -> route); records every request's path and Host."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests.append((self.path, self.headers.get("Host", "")))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                route(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HostileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits(self, path: str) -> int:
        return sum(1 for requested, _ in self.requests if requested == path)
