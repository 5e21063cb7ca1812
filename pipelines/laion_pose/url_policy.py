"""Which URLs the downloader may fetch.

Cluster users do not want a crawl of public metadata to reach internal
services, so by default only ``http``/``https`` URLs whose host resolves
exclusively to public (globally routable) addresses are fetched. Refused:

- ``file://`` URLs, unless they point inside one of ``allowed_file_roots``;
- hosts that are, or resolve to, private, loopback, link-local, shared (CGNAT),
  multicast, reserved or unspecified addresses (IPv4 and IPv6, IPv4-mapped
  IPv6 included);
- any other scheme (``ftp``, ``data``, ...).

``allow_private_urls`` lifts all of that (any scheme img2dataset's urllib
fetcher supports). Malformed URLs and hosts that do not resolve are not
refusals but failures (``download_failed``); neither is ever fetched.

Known limit: the check happens before img2dataset fetches, which resolves the
name again and follows HTTP redirects, so a hostile public server can still
redirect or re-resolve to an internal address; run workers in a network that
does not reach internal services when that matters.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
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
    """Checks URLs before download; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_file_roots: tuple[str, ...] = (),
        dns_timeout: float = 5.0,
        resolver=socket.getaddrinfo,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_file_roots = tuple(Path(os.path.realpath(root)) for root in allowed_file_roots)
        self.dns_timeout = dns_timeout
        self.resolver = resolver

    def check_many(self, urls: list[str | None], *, threads: int = 32) -> list[UrlVerdict | None]:
        """One verdict per URL (None: may be fetched). Hosts are resolved once each, in parallel."""
        parsed = [self._static_check(url) for url in urls]
        hosts = sorted({p for p in parsed if isinstance(p, str)})
        problems = self._resolve_all(hosts, threads) if hosts else {}
        return [problems.get(p) if isinstance(p, str) else p for p in parsed]

    def check(self, url: str | None) -> UrlVerdict | None:
        return self.check_many([url])[0]

    def _static_check(self, url: str | None) -> UrlVerdict | str | None:
        """A verdict, None (allowed), or the host name still to be resolved."""
        if not url or not url.strip():
            return UrlVerdict(FAILED, "empty URL")
        try:
            parts = urlsplit(url.strip())
            _ = parts.port  # raises on a malformed port
        except ValueError as err:
            return UrlVerdict(FAILED, f"malformed URL: {err}")
        scheme = parts.scheme.lower()
        if not scheme:
            return UrlVerdict(FAILED, "relative URL with no base (set url_base)")
        if scheme == "file":
            return self._file_check(parts)
        if self.allow_private:
            return None
        if scheme not in WEB_SCHEMES:
            return UrlVerdict(REFUSED, f"scheme {scheme!r} is not allowed (only http/https without --allow-private-urls)")
        if not parts.hostname:
            return UrlVerdict(FAILED, "URL has no host")
        try:
            problem = _address_problem(parts.hostname)
        except ValueError:
            return parts.hostname.lower()  # a name: resolve it
        return UrlVerdict(REFUSED, f"host {parts.hostname} is a {problem} address") if problem else None

    def _file_check(self, parts) -> UrlVerdict | None:
        if self.allow_private:
            return None
        path = Path(os.path.realpath(unquote(parts.path)))
        if any(path.is_relative_to(root) for root in self.allowed_file_roots):
            return None
        return UrlVerdict(REFUSED, "file:// URLs are not allowed (use --allow-private-urls)")

    def _resolve_all(self, hosts: list[str], threads: int) -> dict[str, UrlVerdict | None]:
        pool = ThreadPoolExecutor(max_workers=max(1, min(threads, len(hosts))))
        futures = {host: pool.submit(self.resolver, host, None) for host in hosts}
        verdicts: dict[str, UrlVerdict | None] = {}
        try:
            for host, future in futures.items():
                try:
                    infos = future.result(timeout=self.dns_timeout)
                except FutureTimeout:
                    verdicts[host] = UrlVerdict(FAILED, f"resolving {host} timed out")
                    continue
                except OSError as err:
                    verdicts[host] = UrlVerdict(FAILED, f"cannot resolve {host}: {err}")
                    continue
                verdicts[host] = self._host_verdict(host, infos)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return verdicts

    @staticmethod
    def _host_verdict(host: str, infos) -> UrlVerdict | None:
        addresses = sorted({info[4][0] for info in infos})
        if not addresses:
            return UrlVerdict(FAILED, f"{host} resolves to no address")
        for address in addresses:
            problem = _address_problem(address)
            if problem:
                return UrlVerdict(REFUSED, f"host {host} resolves to {problem} address {address}")
        return None
