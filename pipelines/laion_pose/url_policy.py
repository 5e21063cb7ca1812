"""Which URLs the downloader may fetch.

Cluster users do not want a crawl of public metadata to reach internal
services, so by default only ``http``/``https`` URLs whose host resolves
exclusively to public (globally routable) addresses are fetched. Refused:

- ``file://`` URLs, unless they point inside one of ``allowed_file_roots``;
- hosts that are, or resolve to, private, loopback, link-local, shared (CGNAT),
  multicast, reserved or unspecified addresses (IPv4 and IPv6, IPv4-mapped
  IPv6 included);
- any other scheme (``ftp``, ``data``, ...).

``allow_private_urls`` lifts all of that; ``allowed_hosts`` lifts it for
named hosts only (``host`` or ``host:port``, such as an internal mirror).
Malformed URLs and hosts that do not resolve are not refusals but failures
(``download_failed``); neither is ever fetched.

:meth:`UrlPolicy.admit` returns the addresses it checked, and the fetcher
(:mod:`.fetcher`) connects to those addresses only and runs every redirect
hop through :meth:`UrlPolicy.admit` again: a public name cannot re-resolve
(DNS rebinding) or redirect to an internal address between check and connect.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

REFUSED = "refused_url"
FAILED = "download_failed"
WEB_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class UrlVerdict:
    """Why a URL is not fetched."""

    status: str
    """``refused_url`` or ``download_failed``."""
    error: str


@dataclass(frozen=True)
class Admission:
    """A URL the policy lets through, with the addresses it checked (the only ones to connect to)."""

    url: str
    scheme: str
    addresses: tuple[str, ...] = field(default=())
    """Checked IP addresses of the host (``http``/``https``); empty for ``file`` URLs."""


def resolve_relative(url: str | None, base: str | None) -> str | None:
    """Join a scheme-less ``url`` to ``base`` (when given); other URLs unchanged."""
    if url is None or base is None or urlsplit(url).scheme:
        return url
    return urljoin(base, url)


def _address_problem(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


class UrlPolicy:
    """Checks URLs before each fetch and redirect hop; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_file_roots: tuple[str, ...] = (),
        allowed_hosts: tuple[str, ...] = (),
        dns_timeout: float = 5.0,
        resolver=socket.getaddrinfo,
        threads: int = 8,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_file_roots = tuple(Path(os.path.realpath(root)) for root in allowed_file_roots)
        self.allowed_hosts = frozenset(host.lower() for host in allowed_hosts)
        self.dns_timeout = dns_timeout
        self.resolver = resolver
        self._dns = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dns")

    def close(self) -> None:
        """Stop the resolver threads (a lookup still running is abandoned)."""
        self._dns.shutdown(wait=False, cancel_futures=True)

    def check(self, url: str | None) -> UrlVerdict | None:
        """Why ``url`` may not be fetched, or None when it may."""
        admitted = self.admit(url)
        return admitted if isinstance(admitted, UrlVerdict) else None

    def admit(self, url: str | None, timeout: float | None = None) -> UrlVerdict | Admission:
        """A refusal or failure, or the :class:`Admission` of ``url`` with its checked addresses.

        ``timeout`` caps the name resolution below ``dns_timeout`` (what is left of a deadline).
        """
        static = self._static_check(url)
        if isinstance(static, UrlVerdict):
            return static
        scheme, host, port = static
        if scheme == "file":
            return Admission(url.strip(), scheme)
        addresses = (host,) if _is_literal(host) else self._resolve(host, timeout)
        if isinstance(addresses, UrlVerdict):
            return addresses
        if not (self.allow_private or host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts):
            for address in addresses:
                problem = _address_problem(address)
                if problem and address == host:
                    return UrlVerdict(REFUSED, f"host {host} is a {problem} address")
                if problem:
                    return UrlVerdict(REFUSED, f"host {host} resolves to {problem} address {address}")
        return Admission(url.strip(), scheme, addresses)

    def _static_check(self, url: str | None) -> UrlVerdict | tuple[str, str, int]:
        """A verdict, or ``(scheme, host, port)`` still to be resolved and checked (host empty for ``file``)."""
        if not url or not url.strip():
            return UrlVerdict(FAILED, "empty URL")
        try:
            parts = urlsplit(url.strip())
            port = parts.port  # raises on a malformed port
        except ValueError as err:
            return UrlVerdict(FAILED, f"malformed URL: {err}")
        scheme = parts.scheme.lower()
        if not scheme:
            return UrlVerdict(FAILED, "relative URL with no base (set url_base)")
        if scheme == "file":
            return self._file_check(parts) or ("file", "", 0)
        if scheme not in WEB_SCHEMES:
            if self.allow_private:
                return UrlVerdict(FAILED, f"scheme {scheme!r} is not supported (only http, https and file)")
            return UrlVerdict(REFUSED, f"scheme {scheme!r} is not allowed (only http/https without --allow-private-urls)")
        if not parts.hostname:
            return UrlVerdict(FAILED, "URL has no host")
        return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)

    def _file_check(self, parts) -> UrlVerdict | None:
        if self.allow_private:
            return None
        path = Path(os.path.realpath(unquote(parts.path)))
        if any(path.is_relative_to(root) for root in self.allowed_file_roots):
            return None
        return UrlVerdict(REFUSED, "file:// URLs are not allowed (use --allow-private-urls)")

    def _resolve(self, host: str, timeout: float | None) -> tuple[str, ...] | UrlVerdict:
        """The addresses of ``host``, or the failure of its lookup."""
        limit = self.dns_timeout if timeout is None else max(0.0, min(timeout, self.dns_timeout))
        try:
            infos = self._dns.submit(self.resolver, host, None).result(timeout=limit)
        except FutureTimeout:
            return UrlVerdict(FAILED, f"resolving {host} timed out")
        except (OSError, UnicodeError) as err:
            return UrlVerdict(FAILED, f"cannot resolve {host}: {err}")
        addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
        return addresses or UrlVerdict(FAILED, f"{host} resolves to no address")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
