"""The pose-backend registry: a backend's name -> its config dataclass and its estimator class.

Every backend lives in its own module holding a frozen keyword-only config
dataclass (a :class:`~pose_extraction.estimator.BackendConfig` subclass, a
docstring per field, checked in ``__post_init__``) and an estimator class built
from that config (the :class:`~pose_extraction.estimator.PoseEstimator`
interface). Adding a backend is that module plus one line in :data:`BACKENDS`;
every command line and the evaluation cache key pick it up from here.

A run names its backend and that backend's options in a :class:`PoseConfig`.
Backend modules import their heavy libraries (mediapipe, torch, mmpose) inside
the estimator only, so importing this registry loads no model library.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pose_extraction.estimator import BackendConfig, PoseEstimator
from pose_extraction.mediapipe_backend import MediaPipeConfig, MediaPipePoseEstimator
from pose_extraction.mmpose_backend import MMPoseConfig, MMPoseEstimator


@dataclass(frozen=True)
class Backend:
    """One registry entry."""

    config: type[BackendConfig]
    """The backend's own options (a frozen keyword-only dataclass)."""
    estimator: Callable[[Any], PoseEstimator]
    """Builds the estimator (loads the model) from an instance of ``config``."""


BACKENDS: dict[str, Backend] = {
    "mediapipe": Backend(MediaPipeConfig, MediaPipePoseEstimator),
    "mmpose": Backend(MMPoseConfig, MMPoseEstimator),
}
"""Every pose backend by name: what ``--pose-backend`` takes."""

DEFAULT_BACKEND = next(iter(BACKENDS))
"""The first registered backend (MediaPipe: bundled weights, no download) is the default."""


def backend(name: str) -> Backend:
    """The registry entry of ``name``; a ValueError listing the valid names otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"unknown pose backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def option_names(name: str) -> tuple[str, ...]:
    """The option (field) names of backend ``name``'s config, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(backend(name).config))


@dataclass(frozen=True, kw_only=True)
class PoseConfig:
    """Which pose backend to run, with that backend's own options."""

    backend: str = DEFAULT_BACKEND
    """A name from :data:`BACKENDS` (the default is the first registered)."""
    options: BackendConfig | None = None
    """The backend's config (the dataclass registered for it); None takes that config's defaults."""

    def __post_init__(self) -> None:
        config = backend(self.backend).config
        if self.options is None:
            object.__setattr__(self, "options", config())
        elif type(self.options) is not config:
            raise ValueError(
                f"the {self.backend} pose backend takes {config.__name__} options, got {type(self.options).__name__}"
            )

    @classmethod
    def of(cls, name: str = DEFAULT_BACKEND, **options) -> "PoseConfig":
        """Backend ``name`` with these options; one its config lacks is a ValueError naming it and the valid ones."""
        unknown = [key for key in options if key not in option_names(name)]
        if unknown:
            valid = ", ".join(option_names(name))
            raise ValueError(f"the {name} pose backend has no option {', '.join(unknown)}; its options: {valid}")
        return cls(backend=name, options=backend(name).config(**options))

    def settings(self) -> dict:
        """The backend name and every option, as plain values (what the results record and the cache key hold)."""
        return {"backend": self.backend, **dataclasses.asdict(self.options)}

    def file_fingerprints(self) -> dict[str, str]:
        """``option -> sha256`` of the content of every string option that names a local file (checkpoints, configs)."""
        prints = {}
        for name, value in dataclasses.asdict(self.options).items():
            if isinstance(value, str) and "://" not in value and Path(value).expanduser().is_file():
                prints[name] = _sha256(Path(value).expanduser())
        return prints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_estimator(config: PoseConfig) -> PoseEstimator:
    """Load the backend ``config`` names (its heavy libraries are imported only now)."""
    return backend(config.backend).estimator(config.options)


def pose_config_from_flags(
    name: str, given: dict[str, tuple[tuple[str, ...], Any]], shared: dict[str, Any] | None = None
) -> PoseConfig:
    """The :class:`PoseConfig` a command line asks for.

    ``given``: each backend flag the user gave -> (the option names it may fill, the first one backend ``name``
    has wins; its value). A flag none of whose options backend ``name`` has is refused: a ValueError naming the
    flag and the backends it belongs to. ``shared``: options a tool sets for every backend that has them (a
    device shared with other models), skipped by the others.
    """
    names = option_names(name)
    options = {key: value for key, value in (shared or {}).items() if key in names}
    for flag, (candidates, value) in given.items():
        chosen = next((key for key in candidates if key in names), None)
        if chosen is None:
            owners = [other for other in BACKENDS if any(key in option_names(other) for key in candidates)]
            owner = " / ".join(owners) or "no"
            raise ValueError(f"{flag} is an option of the {owner} pose backend, not of {name} (the chosen --pose-backend)")
        options[chosen] = value
    return PoseConfig.of(name, **options)


# PoseFlags field -> the backend options it may fill (the first the chosen backend has wins).
_FLAG_OPTIONS: dict[str, tuple[str, ...]] = {
    "device": ("device",),
    "pose_config": ("pose_config",),
    "pose_checkpoint": ("pose_checkpoint",),
    "det_config": ("det_config",),
    "det_checkpoint": ("det_checkpoint",),
    "det_score_threshold": ("det_score_threshold",),
    "max_persons": ("max_persons", "det_max_persons"),
    "person_batch_size": ("batch_size",),
    "allow_random_weights": ("allow_random_weights",),
}


@dataclass(frozen=True, kw_only=True)
class PoseFlags:
    """The pose estimator, as every command line spells it (``--pose-backend``, ``--pose-checkpoint``, ...).

    Each option fills the chosen backend's option of that meaning; one the backend does not have is refused
    (:func:`pose_config_from_flags`). None (or False) leaves the backend's default."""

    backend: str = field(default=DEFAULT_BACKEND, metadata={"alias": "pose-backend"})
    """Pose backend (``--pose-backend``): mediapipe (bundled weights, CPU, no download) or mmpose (top-down, a
    person detector then a pose model; needs checkpoints)."""
    device: str | None = None
    """Torch device of the backend (mmpose: auto, cpu, cuda, cuda:1 ...); None: the backend's default."""
    pose_config: str | None = None
    """mmpose: pose model config (model-zoo name or path)."""
    pose_checkpoint: str | None = None
    """mmpose: pose model weights (local path or URL)."""
    det_config: str | None = None
    """mmpose: person detector (mmdet) config (model-zoo name or path)."""
    det_checkpoint: str | None = None
    """mmpose: person detector weights (local path or URL)."""
    det_score_threshold: float | None = None
    """mmpose: person boxes scoring at or below this are dropped."""
    max_persons: int | None = None
    """People per image at most (mediapipe: passes per image; mmpose: detector boxes kept)."""
    person_batch_size: int | None = None
    """mmpose: person crops per pose forward pass (the LAION-Pose builder's old ``--pose-batch-size``). Not the
    frames or images handed to the estimator per call: each tool has its own option for that."""
    allow_random_weights: bool = False
    """mmpose without checkpoints: random weights, for plumbing tests only."""
    extra: dict = field(default_factory=dict, metadata={"alias": "pose-extra"})
    """More options of the chosen backend as a JSON object (``--pose-extra``), e.g. mmpose's
    ``{"pose_cfg_options": {...}}``."""

    def to_pose_config(self, shared: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> PoseConfig:
        """The :class:`PoseConfig` these flags ask for. ``shared``: see :func:`pose_config_from_flags`; ``labels``:
        the spelling to name a refused field by (an old flag the user typed), default ``--field-name``."""
        labels = labels or {}
        given = {}
        for name, options in _FLAG_OPTIONS.items():
            value = getattr(self, name)
            if value is not None and value is not False:
                given[labels.get(name, "--" + name.replace("_", "-"))] = (options, value)
        if not isinstance(self.extra, dict):
            raise ValueError("--pose-extra takes a JSON object of backend options")
        given.update({f"--pose-extra {key}": ((key,), value) for key, value in self.extra.items()})
        return pose_config_from_flags(self.backend, given, shared)


def backends_help() -> str:
    """``--pose-backend``'s help: each backend's name and the first line of its config's docstring."""
    lines = {key: entry.config.__doc__.strip().splitlines()[0].rstrip(".") for key, entry in BACKENDS.items()}
    return "; ".join(f"{key}: {line}" for key, line in lines.items()).replace("%", "%%")
