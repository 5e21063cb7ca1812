"""The settings of an evaluation run (:class:`EvalConfig`) and the command line that builds them (:class:`CommandConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pose_extraction.backends import PoseConfig, PoseFlags

DEFAULT_METRICS = ("clip", "pose_ap", "frame_consistency")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """How generated videos are scored and reported, but for the pose estimator (:class:`EvalConfig` adds it)."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Metric names from :mod:`evaluation.metrics` (any subset, in this order in tables)."""
    clip_model: str = "openai/clip-vit-base-patch32"
    """CLIP backbone for ``clip`` and ``frame_consistency``: a hub id or a local folder (``CLIPModel``/``CLIPProcessor``)."""
    device: str = "auto"
    """Torch device for model forward passes; ``auto`` picks ``cuda`` when there is one, else ``cpu``."""
    dtype: str = "auto"
    """Forward-pass dtype of CLIP: ``auto`` is float16 on CUDA and float32 on CPU."""
    clip_batch_size: int = 32
    """Frames per CLIP image forward pass."""
    pose_frames_per_call: int = 16
    """Frames handed to the pose estimator per call by ``pose_ap``."""
    pose_gt_threshold: float = 0.3
    """Input keypoints with a score above this are ground truth (the skeleton renderer draws the same ones)."""
    pose_area_scale: float = 1.0
    """Ground-truth object area for OKS = this x the area of the tight box around the visible input keypoints."""
    fvd_i3d: str | None = None
    """``fvd`` only: local path of a TorchScript I3D (``torch.jit.load``). FVD cannot be computed without it."""
    fvd_i3d_kwargs: dict = field(default_factory=dict)
    """``fvd`` only: keyword arguments of the I3D call that the export expects (e.g. ``return_features``)."""
    fvd_reference: str | None = None
    """``fvd`` only: folder of real reference videos (``*.mp4``) whose I3D features form the target distribution."""
    fvd_frames: int = 16
    """``fvd`` only: the first N frames of every video go into I3D (shorter videos are skipped)."""
    fvd_size: int = 224
    """``fvd`` only: frames are resized to this square size for I3D."""
    bootstrap: int = 1000
    """Bootstrap resamples over videos for confidence intervals (0 turns them off)."""
    confidence: float = 0.95
    """Two-sided coverage of the bootstrap percentile intervals."""
    seed: int = 0
    """Seed of the bootstrap resampling (fixed, so intervals are reproducible)."""
    resume: bool = True
    """Reuse per-video metric states cached in ``OUT/states`` by an earlier, interrupted run with the same settings."""
    report: bool = True
    """Write ``report.html`` (with media previews) beside ``results.json``."""
    preview_side: int = 256
    """Longer side in pixels of the GIF and poster previews in the report."""
    preview_frames: int = 16
    """At most this many frames in each GIF preview."""
    max_videos: int | None = None
    """Evaluate only the first N videos (sorted by name); None evaluates all."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("at least one metric is needed")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics listed twice: {self.metrics}")
        if not self.clip_model:
            raise ValueError("clip_model must be a hub id or a local folder")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.clip_batch_size < 1:
            raise ValueError("clip_batch_size must be at least 1")
        if self.pose_frames_per_call < 1:
            raise ValueError("pose_frames_per_call must be at least 1")
        if not 0.0 <= self.pose_gt_threshold < 1.0:
            raise ValueError("pose_gt_threshold must be in [0, 1)")
        if self.pose_area_scale <= 0:
            raise ValueError("pose_area_scale must be positive")
        if self.fvd_frames < 1 or self.fvd_size < 8:
            raise ValueError("fvd_frames must be >= 1 and fvd_size >= 8")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be >= 0")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0, 1)")
        if self.preview_side < 16 or self.preview_frames < 1:
            raise ValueError("preview_side must be >= 16 and preview_frames >= 1")
        if self.max_videos is not None and self.max_videos < 1:
            raise ValueError("max_videos must be at least 1")

    def to_json(self) -> dict:
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        return data


@dataclass(frozen=True, kw_only=True)
class EvalConfig(ScoringConfig):
    """How generated videos are scored and reported."""

    pose: PoseConfig = field(default_factory=PoseConfig)
    """The pose estimator ``pose_ap`` runs on generated frames (backend and its options: checkpoints, device)."""


MODES = ("--videos DIR", "--spec FILE", "--compare RUN [RUN ...]", "--list-metrics")


@dataclass(frozen=True, kw_only=True)
class CommandConfig(ScoringConfig):
    """What ``python -m evaluation.run`` takes: exactly one mode (``--videos``, ``--spec``, ``--compare``,
    ``--list-metrics``), the scoring settings and the pose estimator as flags."""

    videos: Path | None = None
    """Mode: score this folder of generated videos (``OUT.mp4`` + ``OUT.pose.mp4`` + ``OUT.json``)."""
    spec: Path | None = None
    """Mode: generate from this spec (JSON/JSONL of prompt + pose entries) with ``--model``, then score."""
    compare: tuple[Path, ...] = ()
    """Mode: compare these evaluation output folders (``--compare RUN_A RUN_B ...``)."""
    list_metrics: bool = False
    """Mode: print the registered metrics and exit."""
    out: Path | None = None
    """Output folder (results.json, report.html; compare.html with ``--compare``, default the current folder)."""
    model: Path | None = None
    """With ``--spec``: the model folder to generate with."""
    generate_options: dict = field(default_factory=dict)
    """With ``--spec``: generation fields (JSON) that override every item's, e.g. ``{"pose_guidance": true}``."""
    paper: bool = False
    """With ``--compare``: add the paper's Table 1 rows."""
    pose: PoseFlags = field(default_factory=PoseFlags)
    """The pose estimator ``pose_ap`` runs; its device is ``--device`` unless ``--pose.device`` is given."""
    pose_batch_size: int | None = None
    """Old name of two options at once: ``--pose-frames-per-call`` and, where the chosen backend has it, the
    person crops per forward pass (``--person-batch-size``). None: those two options as given."""
    quiet: bool = False
    """Warnings only."""

    def __post_init__(self) -> None:
        names = tuple(name.strip() for value in self.metrics for name in value.split(",") if name.strip())
        object.__setattr__(self, "metrics", names)  # the comma-separated spelling too: --metrics clip,pose_ap
        modes = (self.videos is not None, self.spec is not None, bool(self.compare), self.list_metrics)
        if sum(modes) != 1:
            raise ValueError(f"choose exactly one of {', '.join(MODES)}")
        super().__post_init__()

    def to_eval_config(self, metrics: tuple[str, ...] | None = None) -> EvalConfig:
        """The :class:`EvalConfig` of this command (a ValueError for a flag the chosen pose backend has no option for)."""
        shared = {"device": self.device}
        per_call = self.pose_frames_per_call
        if self.pose_batch_size is not None:
            shared["batch_size"] = per_call = self.pose_batch_size
        settings = {f.name: getattr(self, f.name) for f in fields(ScoringConfig)}
        settings.update(pose_frames_per_call=per_call, metrics=metrics or self.metrics)
        return EvalConfig(pose=self.pose.to_pose_config(shared=shared), **settings)


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` on ``device`` (``auto``: float16 on CUDA, float32 elsewhere)."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
