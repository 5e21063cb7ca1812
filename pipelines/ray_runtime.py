"""Start or join the Ray cluster a pipeline runs on.

API (stable; shared by the LAION-Pose and HD-VILA builders)::

    from pipelines.ray_runtime import RayConfig, ray_session

    with ray_session(RayConfig(address=None, num_cpus=2)) as session:
        session.started_local     # True when this call started a local Ray
        session.resources         # {"CPU": 2.0, "GPU": 0.0, ...} of the whole cluster
        session.num_gpus          # cluster GPUs (0.0 without)
        ...                       # ray.remote work

Where the session comes from (``RayConfig.address``):

- ``None`` (default): the cluster ``ray job submit`` runs us in (it sets
  ``RAY_ADDRESS``), or else a new local Ray owned by this process. A cluster
  that merely happens to run on the machine is **not** joined silently.
- ``"local"``: always a new local Ray owned by this process.
- ``"auto"``: the cluster already running on this machine (error if none).
- ``"HOST:PORT"`` or ``"ray://HOST:10001"``: that cluster.

If Ray is already initialised in this process (a test or notebook called
``ray.init``), that session is used as is and left running on exit. A local
Ray started here is shut down on exit; a joined cluster is only disconnected.
``num_cpus``/``num_gpus``/``temp_dir``/``object_store_memory`` only apply to
a local start. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

_log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """Which Ray cluster to run on."""

    address: str | None = None
    """``None``: ``RAY_ADDRESS`` (set by ``ray job submit``) else a new local Ray; ``local``; ``auto``; or ``HOST:PORT`` / ``ray://HOST:PORT``."""
    num_cpus: int | None = None
    """CPUs of a local Ray (None: all of the machine's)."""
    num_gpus: int | None = None
    """GPUs of a local Ray (None: those Ray detects)."""
    object_store_memory: int | None = None
    """Object store bytes of a local Ray (None: Ray's default)."""
    temp_dir: str | None = None
    """Session/log folder of a local Ray (None: Ray's default under /tmp/ray)."""
    include_dashboard: bool = False
    """Start the dashboard with a local Ray."""
    namespace: str | None = None
    """Ray namespace of the driver."""
    runtime_env: dict = field(default_factory=dict)
    """Ray runtime environment for the job's workers (env vars, working_dir, ...); empty for none."""

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise ValueError("ray address must be None or a non-empty string")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError("num_cpus must be at least 1")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError("num_gpus must be non-negative")
        if self.object_store_memory is not None and self.object_store_memory < 75 * 1024**2:
            raise ValueError("object_store_memory must be at least 75 MiB")


@dataclass(frozen=True)
class RaySession:
    """What :func:`ray_session` connected to."""

    started_local: bool
    """True when this process started (and will stop) the Ray it runs on."""
    reused: bool
    """True when Ray was already initialised in this process before the session."""
    address: str
    """The GCS address of the cluster."""
    resources: dict
    """Total resources of the cluster (``CPU``, ``GPU``, memory, custom ones)."""

    @property
    def num_cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def num_gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))


def resolve_address(config: RayConfig, environ=None) -> str | None:
    """The address handed to ``ray.init``: ``local`` means start a new local Ray; None lets Ray read ``RAY_ADDRESS``."""
    environ = os.environ if environ is None else environ
    if config.address is not None:
        return config.address
    return None if environ.get(ADDRESS_ENV) else "local"


def _init(config: RayConfig) -> tuple[bool, bool]:
    """Initialise Ray per ``config``; returns ``(started_local, reused)``."""
    import ray

    if ray.is_initialized():
        _log.info("using the Ray session already initialised in this process")
        return False, True
    address = resolve_address(config)
    kwargs: dict = {"namespace": config.namespace, "log_to_driver": True}
    if config.runtime_env:
        kwargs["runtime_env"] = dict(config.runtime_env)
    if address == "local":
        kwargs.update(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            object_store_memory=config.object_store_memory,
            include_dashboard=config.include_dashboard,
        )
        if config.temp_dir:
            kwargs["_temp_dir"] = os.path.abspath(config.temp_dir)
        _log.info("starting a local Ray (num_cpus=%s, num_gpus=%s)", config.num_cpus, config.num_gpus)
    else:
        _log.info("connecting to the Ray cluster at %s", address or os.environ.get(ADDRESS_ENV))
    ray.init(address=address, **kwargs)
    return address == "local", False


@contextmanager
def ray_session(config: RayConfig | None = None) -> Iterator[RaySession]:
    """Initialise Ray per ``config`` for the ``with`` block (see the module docstring)."""
    import ray

    config = config or RayConfig()
    started_local, reused = _init(config)
    try:
        context = ray.get_runtime_context()
        address = getattr(context, "gcs_address", "") or ""
        session = RaySession(started_local, reused, address, dict(ray.cluster_resources()))
        _log.info(
            "Ray %s: %.0f CPU, %.0f GPU", "local" if started_local else "cluster", session.num_cpus, session.num_gpus
        )
        yield session
    finally:
        if not reused:
            ray.shutdown()
