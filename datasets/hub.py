"""Hub ids that cannot be reached fail in seconds, with what to do instead.

Every loader here takes a local folder or a Hugging Face hub id through the same code. Without a network the
hub libraries retry for minutes before they give up (``evaluation.run`` with its default CLIP id took about 3.5
minutes). :func:`check_reachable` runs first wherever a hub id is accepted: a local path, or ``HF_HUB_OFFLINE``
set (the libraries then answer from their cache at once), passes untouched; otherwise the hub endpoint must
accept a TCP connection within a few seconds, or a :class:`HubUnreachableError` says to pass a local folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

CONNECT_SECONDS = 3.0
_TRUE = ("1", "true", "yes", "on")


class HubUnreachableError(OSError):
    """A hub id was given, and the hub cannot be reached."""


def is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def check_reachable(name: str, *, flag: str, timeout: float = CONNECT_SECONDS) -> str:
    """``name`` unchanged when it is a local path, the hub is off by choice (``HF_HUB_OFFLINE``) or reachable;
    otherwise :class:`HubUnreachableError` within about ``timeout`` seconds."""
    if not name or is_local(name) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return name
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise HubUnreachableError(
            f"{flag} {name}: not a local path, and the hub ({parts.hostname}) cannot be reached ({type(error).__name__}: "
            f"{error}); pass a local folder, or set HF_HUB_OFFLINE=1 to use a copy already in the local cache"
        ) from None
    return name
