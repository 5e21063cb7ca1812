"""The settings of an evaluation run (what ``python -m evaluation.run`` builds from its flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pose_extraction.backends import PoseConfig

DEFAULT_METRICS = ("clip", "pose_ap", "frame_consistency")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How generated videos are scored and reported."""

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
    pose: PoseConfig = field(default_factory=PoseConfig)
    """The pose estimator ``pose_ap`` runs on generated frames (backend and its options: checkpoints, device)."""
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


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` on ``device`` (``auto``: float16 on CUDA, float32 elsewhere)."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
