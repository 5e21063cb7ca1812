"""Fetching one image: every redirect hop through the URL policy, a pinned connection, a deadline and a byte cap.

:class:`ImageFetcher` replaces img2dataset's urllib fetch, which resolved a
name again after our check, followed redirects to any address, applied its
timeout per socket read (a server dripping a byte a second held a thread as
long as it liked) and read a body of any size into memory. Here:

- each hop (the URL, then every ``Location`` it redirects to, at most
  :data:`MAX_REDIRECTS`) goes through :meth:`UrlPolicy.admit`; a refused hop
  is ``refused_url`` with the hop in the reason;
- the connection goes to an address the policy checked (the TLS name is still
  the URL's host), never to a fresh lookup of the name;
- ``timeout`` bounds each connect and read, ``deadline`` the whole image
  (lookups, redirects, retries and body): a watchdog shuts the socket down
  when it passes;
- a body larger than ``max_bytes`` (declared or read) is ``download_failed``
  without being read whole;
- ``X-Robots-Tag`` opt-outs are img2dataset's rule (:func:`img2dataset.downloader.is_disallowed`).

``file://`` URLs the policy admits are read from disk under the same byte cap.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote, unquote, urljoin, urlsplit

from pipelines.laion_pose.url_policy import FAILED, REFUSED, WEB_SCHEMES, Admission, UrlPolicy, UrlVerdict

OPTED_OUT = "opted_out"
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 1 << 16
USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
"""img2dataset's User-Agent."""
_SAFE_IN_TARGET = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True)
class Fetched:
    """The outcome of one image fetch: its bytes, or a status of :data:`datasets.laion_pose.STATUSES` and a reason."""

    data: bytes | None = None
    status: str | None = None
    error: str | None = None
    retryable: bool = False
    """A network failure another attempt may get past (not a refusal, an opt-out or a limit)."""


class _Watchdog:
    """Shuts the current socket down when the deadline passes, so no connect or read outlives it."""

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._socket is not None:
                _shutdown(self._socket)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address, with the URL's host in the ``Host`` header."""

    def __init__(self, host: str, port: int, address: str, timeout: float, watchdog: _Watchdog) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address, self.watchdog = address, watchdog

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET, socket.SOCK_STREAM)
        self.watchdog.watch(sock)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.address, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        self.sock = self._open()


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _PinnedHTTPS(_PinnedHTTP):
    """The same over TLS: the certificate is checked against the URL's host, not the address."""

    def connect(self) -> None:
        self.sock = _tls_context().wrap_socket(self._open(), server_hostname=self.host)


class ImageFetcher:
    """Fetches image URLs under a :class:`UrlPolicy` (see the module docstring); safe to call from many threads."""

    def __init__(
        self, policy: UrlPolicy, *, timeout: float, deadline: float, max_bytes: int, retries: int = 0,
        user_agent_token: str | None = None, robots_directives: set[str] | None = None,
    ) -> None:  # fmt: skip
        self.policy, self.timeout, self.deadline, self.max_bytes, self.retries = policy, timeout, deadline, max_bytes, retries
        self.user_agent_token = None if user_agent_token is None else user_agent_token.strip().lower()
        self.robots_directives = robots_directives
        self.user_agent = USER_AGENT + (
            f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)" if user_agent_token else ""
        )

    def fetch(self, url: str | None) -> Fetched:
        """The image at ``url``: retried on network failures while attempts and the deadline last."""
        deadline = time.monotonic() + self.deadline
        result = Fetched(status=FAILED, error="not fetched")
        for _ in range(self.retries + 1):
            result = self._attempt(url, deadline)
            if not result.retryable or time.monotonic() >= deadline:
                break
        return result

    def _attempt(self, url: str | None, deadline: float) -> Fetched:
        for hop in range(MAX_REDIRECTS + 1):
            admitted = self.policy.admit(url, timeout=deadline - time.monotonic())
            if isinstance(admitted, UrlVerdict):
                reason = admitted.error if hop == 0 else f"redirect {hop} to {url}: {admitted.error}"
                return Fetched(status=admitted.status, error=reason)
            if admitted.scheme == "file":
                return self._read_file(admitted.url)
            outcome = self._get(admitted, deadline)
            if isinstance(outcome, Fetched):
                return outcome
            target = urljoin(admitted.url, outcome)
            if urlsplit(target).scheme.lower() not in WEB_SCHEMES:
                return Fetched(status=REFUSED, error=f"redirect {hop + 1} to {target}: only http/https redirects are followed")
            url = target
        return Fetched(status=FAILED, error=f"more than {MAX_REDIRECTS} redirects")

    def _read_file(self, url: str) -> Fetched:
        try:
            with open(unquote(urlsplit(url).path), "rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as err:
            return Fetched(status=FAILED, error=str(err))
        if len(data) > self.max_bytes:
            return Fetched(status=FAILED, error=self._too_big("the file"))
        return Fetched(data=data)

    def _too_big(self, what: str) -> str:
        return f"{what} is larger than the {self.max_bytes}-byte cap (--max-image-bytes)"

    def _get(self, admitted: Admission, deadline: float) -> Fetched | str:
        """One GET on a checked address: the image, a failure, or the ``Location`` of a redirect."""
        parts = urlsplit(admitted.url)
        target = quote(parts.path or "/", safe=_SAFE_IN_TARGET) + (f"?{quote(parts.query, safe=_SAFE_IN_TARGET)}" if parts.query else "")
        kind = _PinnedHTTPS if admitted.scheme == "https" else _PinnedHTTP
        port = parts.port or (443 if admitted.scheme == "https" else 80)
        watchdog = _Watchdog(deadline)
        failure = Fetched(status=FAILED, error="no address to connect to")
        try:
            for address in admitted.addresses:
                connection = kind(parts.hostname, port, address, min(self.timeout, max(deadline - time.monotonic(), 0.001)), watchdog)
                try:
                    outcome = self._exchange(connection, target)
                    return self._failure(None, watchdog) if watchdog.fired else outcome
                except (OSError, http.client.HTTPException, ValueError) as err:
                    failure = self._failure(err, watchdog)
                    if watchdog.fired or connection.sock is not None:  # connected, then failed: no other address
                        return failure
                finally:
                    connection.close()
            return failure
        finally:
            watchdog.cancel()

    def _failure(self, err: Exception | None, watchdog: _Watchdog) -> Fetched:
        if watchdog.fired or err is None:
            return Fetched(status=FAILED, error=f"took longer than the {self.deadline:g} s deadline (--image-deadline)")
        if isinstance(err, TimeoutError):
            return Fetched(status=FAILED, error=f"timed out (no data for {self.timeout:g} s)", retryable=True)
        return Fetched(status=FAILED, error=f"{type(err).__name__}: {err}", retryable=True)

    def _exchange(self, connection: _PinnedHTTP, target: str) -> Fetched | str:
        connection.request("GET", target, headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"})
        response = connection.getresponse()
        location = response.getheader("Location")
        if response.status in REDIRECTS and location:
            return location
        if response.status != 200:
            return Fetched(status=FAILED, error=f"HTTP Error {response.status}: {response.reason}", retryable=response.status >= 500)
        if self.robots_directives and self._opted_out(response.headers):
            return Fetched(status=OPTED_OUT, error="Use of image disallowed by X-Robots-Tag directive")
        declared = response.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
            return Fetched(status=FAILED, error=self._too_big(f"the response ({int(declared)} bytes)"))
        body = bytearray()
        while chunk := response.read1(CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                return Fetched(status=FAILED, error=self._too_big("the response"))
        if response.length:  # the connection ended before the declared length
            raise http.client.IncompleteRead(bytes(body), response.length)
        return Fetched(data=bytes(body))

    def _opted_out(self, headers) -> bool:
        from img2dataset.downloader import is_disallowed

        return is_disallowed(headers, self.user_agent_token, self.robots_directives)
