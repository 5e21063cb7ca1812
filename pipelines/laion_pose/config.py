"""Configuration of the LAION-Pose builder: frozen dataclasses, one per concern, composed by :class:`JobConfig`."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.ray_runtime import RayConfig
from pose_extraction.backends import PoseConfig, PoseFlags
from pose_extraction.filtering import VisibilityConfig
from pose_extraction.skeleton import SkeletonStyle

PIL_MAX_IMAGE_PIXELS = 89_478_485
"""PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), the default pixel cap."""
MAX_IMAGE_BYTES = 32 * 1024**2
"""Default byte cap of one downloaded image: far above a LAION photo (a 20-megapixel JPEG is 5-10 MB)."""

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
"""The bundled sample: a LAION parquet whose images lie beside it, as relative ``file`` URLs."""
SAMPLE_PARQUET = SAMPLE_DIR / "laion_sample.parquet"
SAMPLE_OUTPUT = Path("outputs") / "laion_pose_sample"
"""Where the bundled sample is built when no ``--output`` is given."""

ResizeMode = Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"]


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """Where the LAION metadata is and how it is split into shards."""

    path: str
    """A parquet file, a glob of them or a folder holding them; any fsspec URL (local, s3://, gs://, ...)."""
    url_column: str = "URL"
    """Column holding the image URL."""
    caption_column: str = "TEXT"
    """Column holding the caption."""
    carry_columns: tuple[str, ...] | None = None
    """Columns copied into the index (similarity, aesthetic, punsafe, ...); None: every column but URL and caption."""
    shard_size: int = 1000
    """Input rows per shard. Keys are ``<shard><row in shard>``, so keep it fixed for a given output folder."""
    url_base: str | None = None
    """Base URL that relative URLs (no scheme) are joined to; None leaves them invalid (counted ``download_failed``)."""
    limit: int | None = None
    """Use only the first ``limit`` rows (in file order); None for all."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("input path is empty")
        if not self.url_column or not self.caption_column:
            raise ValueError("url_column and caption_column must be non-empty")
        if self.url_column == self.caption_column:
            raise ValueError("url_column and caption_column must differ")
        if not 1 <= self.shard_size <= 1_000_000:
            raise ValueError(f"shard_size must be in [1, 1e6], got {self.shard_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.carry_columns is not None:
            object.__setattr__(self, "carry_columns", tuple(self.carry_columns))

    @property
    def key_digits(self) -> int:
        """Digits of the row part of a key: enough for ``shard_size`` rows, at least 4."""
        return max(4, len(str(self.shard_size - 1)))


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    """How images are fetched (:mod:`.fetcher`) and stored (img2dataset's resizer)."""

    image_size: int = 512
    """Target size for the resize (see ``resize_mode``)."""
    resize_mode: ResizeMode = "keep_ratio"
    """img2dataset resize mode; ``keep_ratio`` makes the shorter side ``image_size``."""
    resize_only_if_bigger: bool = True
    """Only shrink: smaller images are stored at their size."""
    encode_quality: int = 95
    """JPEG quality of a re-encoded stored image."""
    keep_fitting_jpeg: bool = True
    """Store a complete, upright 8-bit RGB/gray JPEG that needs no resize as downloaded (no decode, no re-encode)."""
    min_image_size: int = 64
    """Images whose shorter side is below this are ``image_too_small``."""
    max_image_area: int = PIL_MAX_IMAGE_PIXELS
    """Images with more pixels are ``image_too_large`` (checked on the header, before decoding)."""
    timeout: float = 10.0
    """Seconds a connect or a read may wait for data before the fetch gives up."""
    image_deadline: float = 60.0
    """Seconds one image may take in all (lookups, redirects, retries, body), however the server drips its bytes."""
    max_image_bytes: int = MAX_IMAGE_BYTES
    """Bytes one downloaded image may have; a larger body (declared or read) is ``download_failed``, never read whole."""
    retries: int = 1
    """Extra attempts per URL after a failed fetch."""
    thread_count: int = 32
    """Concurrent fetches per shard."""
    allow_private_urls: bool = False
    """Allow ``file://`` and hosts resolving to private, loopback, link-local or reserved addresses."""
    allowed_file_roots: tuple[str, ...] = ()
    """Local folders whose ``file://`` URLs are allowed even without ``allow_private_urls``."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts (``name`` or ``name:port``) fetched even when they resolve to private addresses (an internal mirror)."""
    honour_robots_tag: bool = True
    """Skip images whose ``X-Robots-Tag`` says noai/noimageai/noindex/noimageindex (counted ``opted_out``);
    ``--ignore-robots-tag`` turns it off."""
    user_agent_token: str | None = None
    """Token added to the User-Agent and matched against ``X-Robots-Tag: <token>: ...`` directives."""
    dns_timeout: float = 5.0
    """Seconds allowed to resolve a host for the private-address check."""

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError("encode_quality must be in [1, 100]")
        if self.min_image_size < 0 or self.max_image_area < 1:
            raise ValueError("min_image_size must be >= 0 and max_image_area >= 1")
        if self.timeout <= 0 or self.dns_timeout <= 0 or self.image_deadline <= 0:
            raise ValueError("timeouts and the image deadline must be positive")
        if self.max_image_bytes < 1:
            raise ValueError("max_image_bytes must be at least 1")
        if self.retries < 0 or self.thread_count < 1:
            raise ValueError("retries must be >= 0 and thread_count >= 1")
        object.__setattr__(self, "allowed_file_roots", tuple(self.allowed_file_roots))
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))


@dataclass(frozen=True, kw_only=True)
class PoseStageConfig:
    """The pose stage: which estimator, the keep rule and the skeleton drawing."""

    pose: PoseConfig = field(default_factory=PoseConfig)
    """The pose estimator (backend, device, checkpoints)."""
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
    """When an image is kept."""
    skeleton: SkeletonStyle = field(default_factory=SkeletonStyle)
    """How ``pose.png`` is drawn (its threshold is the keep rule's keypoint threshold unless set apart)."""
    images_per_call: int = 16
    """Images handed to the estimator per call."""

    def __post_init__(self) -> None:
        if self.images_per_call < 1:
            raise ValueError("images_per_call must be at least 1")


@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    """How much of the cluster the job uses."""

    pose_workers: int | None = None
    """Pose actors (one estimator each). None: one per GPU, or as many as the CPUs hold beside the downloads."""
    pose_cpus: float = 1.0
    """CPUs reserved per pose actor."""
    pose_gpus: float | None = None
    """GPUs per pose actor. None: 1 when the cluster has GPUs, else 0."""
    download_workers: int | None = None
    """Download actors (img2dataset imported once each). None: what the CPUs left by the pose workers hold, <= 2 per pose worker."""
    download_cpus: float = 0.5
    """CPUs reserved per download actor (mostly waiting on the network)."""
    prefetch_shards: int = 1
    """Shards downloaded ahead per pose worker, so the pose model never waits for the network."""
    queued_per_worker: int = 2
    """Shards handed to a pose worker at once (one running, the rest queued in the actor), so it never idles between shards."""
    max_retries: int = 2
    """Retries of a failed shard download and restarts of a crashed actor."""

    def __post_init__(self) -> None:
        if any(count is not None and count < 1 for count in (self.pose_workers, self.download_workers)):
            raise ValueError("pose_workers and download_workers must be at least 1")
        if self.pose_cpus <= 0 or self.download_cpus <= 0:
            raise ValueError("pose_cpus and download_cpus must be positive")
        if self.pose_gpus is not None and self.pose_gpus < 0:
            raise ValueError("pose_gpus must be non-negative")
        if self.queued_per_worker < 1:
            raise ValueError("queued_per_worker must be at least 1")
        if self.prefetch_shards < 0 or self.max_retries < 0:
            raise ValueError("prefetch_shards and max_retries must be non-negative")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything the LAION-Pose builder needs."""

    input: InputConfig
    """The LAION metadata."""
    output: str
    """Output folder (local or a shared filesystem every worker sees)."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """Fetching and storing images."""
    stage: PoseStageConfig = field(default_factory=PoseStageConfig)
    """Pose estimation, keep rule, skeleton."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Workers and their resources."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Which Ray cluster."""

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("output folder is empty")
        pose = self.stage.pose
        unset = pose.options.unset_weights()
        if unset is not None:
            raise ValueError(
                f"the {pose.backend} backend needs pose weights: pass a checkpoint path or URL "
                f"(--{unset.replace('_', '-')}); random weights are only for tests (--allow-random-weights)"
            )

    def to_dict(self) -> dict:
        """The resolved config as plain JSON values (what ``DIR/config.json`` holds)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def output_signature(self) -> dict:
        """The parts that decide the output's content; a resumed run must match them."""
        full = self.to_dict()
        signature = {name: full[name] for name in ("input", "download", "stage")}
        options = signature["stage"]["pose"]["options"]
        signature["stage"]["pose"]["options"] = {k: v for k, v in options.items() if k not in ("device", "batch_size")}
        return signature


@dataclass(frozen=True, kw_only=True)
class CommandConfig:
    """What ``python pipelines/build_laion_pose.py`` takes: :class:`JobConfig`'s parts, with the pose estimator as
    flags (:class:`~pose_extraction.backends.PoseFlags`) and the bundled sample as the default input."""

    input: InputConfig = field(default_factory=lambda: InputConfig(path=str(SAMPLE_PARQUET)))
    """The LAION metadata (``--input PATH`` sets its path); the default is the bundled sample, whose relative URLs
    resolve into its folder (allowed as a ``file://`` root for that folder only)."""
    output: str | None = None
    """Output folder (local or a shared filesystem every worker sees); required unless the input is the bundled
    sample, which goes to ``outputs/laion_pose_sample``."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """Fetching and storing images."""
    pose: PoseFlags = field(default_factory=PoseFlags)
    """The pose estimator: backend and its options."""
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
    """When an image is kept (its keypoint threshold is also the skeleton drawing's)."""
    images_per_call: int = 16
    """Images handed to the pose estimator per call (not the person crops per forward pass: ``--person-batch-size``)."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Workers and their resources."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Which Ray cluster."""
    log_level: str = "INFO"
    """Logging level (DEBUG, INFO, WARNING, ...)."""

    def to_job_config(self, labels: dict[str, str] | None = None) -> JobConfig:
        """The :class:`JobConfig` this command describes; ``labels`` name pose flags in errors (see ``PoseFlags``)."""
        inputs, download = self.input, self.download
        roots = tuple(_absolute(root) for root in download.allowed_file_roots)
        carry = self.input.carry_columns
        if carry is not None:  # the old spelling: one comma-separated value
            carry = tuple(name for value in carry for name in value.split(",") if name)
        inputs = dataclasses.replace(inputs, path=_absolute(inputs.path), carry_columns=carry)
        output = self.output
        if Path(inputs.path) == SAMPLE_PARQUET:
            if inputs.url_base is None:
                inputs = dataclasses.replace(inputs, url_base=SAMPLE_DIR.as_uri() + "/")
            roots += () if str(SAMPLE_DIR) in roots else (str(SAMPLE_DIR),)
            output = output or str(SAMPLE_OUTPUT)
        elif not output:
            raise ValueError("--output is required with --input")
        stage = PoseStageConfig(
            pose=self.pose.to_pose_config(labels=labels),
            visibility=self.visibility,
            skeleton=SkeletonStyle(threshold=self.visibility.keypoint_threshold),
            images_per_call=self.images_per_call,
        )
        return JobConfig(
            input=inputs, output=_absolute(output), download=dataclasses.replace(download, allowed_file_roots=roots),
            stage=stage, resources=self.resources, ray=self.ray,
        )


    def saved(self, job: JobConfig) -> dict:
        """This command as plain JSON values, with the paths ``job`` resolved (absolute; the sample's URL base and file
        root filled in): what ``config.json`` records, a ``--config`` file that reruns the same job from any folder."""
        resolved = dataclasses.replace(self, input=job.input, output=job.output, download=job.download)
        return json.loads(json.dumps(dataclasses.asdict(resolved), default=str))


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))
