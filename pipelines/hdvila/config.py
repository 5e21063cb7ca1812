"""Configuration of the HD-VILA clip builder: what to read, how to cut, where to run."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from pipelines.ray_runtime import RayConfig

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".flv", ".ts", ".mpg", ".mpeg")
"""Extensions of downloaded source videos, in order of preference when one video_id has several files."""


@dataclass(frozen=True, kw_only=True)
class CutConfig:
    """How each span becomes a clip."""

    mode: Literal["exact", "copy"] = "exact"
    """``exact``: decode and re-encode, frame-exact, resampled and resized. ``copy``: fast stream copy, cut at keyframes (the
    clip starts at the keyframe at or before the span's start and ends at the keyframe at or after its end; no resampling,
    resizing or scene check)."""
    fps: float | None = None
    """Frame rate of the clips (exact mode). None keeps the source's average rate."""
    size: int | None = None
    """Clips are resized to cover ``size`` x ``size`` and center-cropped to it (exact mode). None keeps the source size."""
    encoder: Literal["pyav", "ffmpeg"] = "pyav"
    """``pyav``: libx264 inside PyAV. ``ffmpeg``: the ffmpeg binary shipped by imageio-ffmpeg, fed raw frames."""
    crf: int = 20
    """x264 constant rate factor (0 lossless ... 51 worst)."""
    x264_preset: str = "fast"
    """x264 speed preset (ultrafast ... veryslow)."""
    keyframe_interval: float = 1.0
    """Seconds between keyframes of the encoded clips (random access for readers)."""
    threads: int = 1
    """Decoder and encoder threads per clip (match the CPUs each Ray task gets)."""
    scene_check: bool = False
    """Drop clips with a scene cut inside (exact mode): colour-histogram distance of consecutive frames above ``scene_threshold``."""
    scene_threshold: float = 0.5
    """Histogram distance (half the L1 distance of normalised HSV histograms, 0..1) that counts as a cut."""
    vfr_policy: Literal["keep", "reject"] = "keep"
    """Variable-frame-rate sources. ``keep``: exact mode resamples them to a constant rate, copy mode keeps their
    timestamps; the clip is flagged ``variable_frame_rate``. ``reject``: status ``variable_frame_rate``."""
    vfr_tolerance: float = 0.05
    """A frame interval differing from the median by more than this fraction (and more than one timestamp tick) makes
    the source variable-frame-rate."""
    end_tolerance_frames: float = 1.0
    """A span may end at most this many source frame intervals after the video's last frame (spans are rounded to ms)."""

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "copy"):
            raise ValueError(f"mode must be 'exact' or 'copy', got {self.mode!r}")
        if self.encoder not in ("pyav", "ffmpeg"):
            raise ValueError(f"encoder must be 'pyav' or 'ffmpeg', got {self.encoder!r}")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ValueError("fps must be in (0, 240]")
        if self.size is not None and not 16 <= self.size <= 8192:
            raise ValueError("size must be in [16, 8192]")
        if self.size is not None and self.size % 2:
            raise ValueError("size must be even (H.264 with 4:2:0 chroma)")
        if self.mode == "copy" and (self.fps is not None or self.size is not None or self.scene_check):
            raise ValueError("the stream-copy mode cannot resample (fps), resize (size) or check scenes: use mode 'exact'")
        if not 0 <= self.crf <= 51:
            raise ValueError("crf must be in [0, 51]")
        if self.x264_preset not in X264_PRESETS:
            raise ValueError(f"x264_preset must be one of {X264_PRESETS}, got {self.x264_preset!r}")
        if self.keyframe_interval <= 0 or self.threads < 1:
            raise ValueError("keyframe_interval must be positive and threads at least 1")
        if not 0 < self.scene_threshold <= 1:
            raise ValueError("scene_threshold must be in (0, 1]")
        if self.vfr_policy not in ("keep", "reject"):
            raise ValueError(f"vfr_policy must be 'keep' or 'reject', got {self.vfr_policy!r}")
        if self.vfr_tolerance <= 0 or self.end_tolerance_frames < 0:
            raise ValueError("vfr_tolerance must be positive and end_tolerance_frames non-negative")

    @property
    def fps_fraction(self) -> Fraction | None:
        """``fps`` as an exact fraction (29.97 -> 2997/100), or None."""
        return None if self.fps is None else Fraction(str(self.fps)).limit_denominator(1001)


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where the metadata, captions and videos come from, and which clips are planned."""

    metadata: str
    """HD-VILA metadata: a ``.jsonl`` (optionally ``.gz``) as published or a ``.parquet`` (nested ``clip`` column, or one row
    per clip with ``video_id``, ``clip_id``, ``span``); local or any fsspec URL."""
    videos: str | None = None
    """Folder (local or fsspec URL) of downloaded videos named ``<video_id>.<ext>``, searched recursively."""
    captions: str | None = None
    """Optional caption file (``.parquet``, ``.jsonl``, ``.csv`` or ``.tsv``) joined on ``caption_key``."""
    caption_column: str = "caption"
    """Column of the caption file holding the caption text."""
    caption_key: str = "clip_id"
    """Column of the caption file matching the metadata's ``clip_id``."""
    clips_per_shard: int = 200
    """Clips per shard (whole videos are never split, so a shard may hold a few more)."""
    min_seconds: float = 0.0
    """Spans shorter than this are dropped (``too_short``)."""
    max_seconds: float | None = None
    """Spans longer than this are dropped (``too_long``); None for no limit."""
    overlap_policy: Literal["reject", "keep"] = "reject"
    """A span overlapping an earlier kept span of the same video (in start order): ``reject`` it (status
    ``overlapping_span``; training would see the same frames twice) or ``keep`` it flagged ``overlapping_span``."""
    download: bool = False
    """Download videos missing from ``videos`` with yt-dlp (needs the network and ``pip install yt-dlp``)."""
    download_dir: str | None = None
    """Where downloads go (a local folder); None: ``videos`` when local."""
    download_format: str = "bestvideo[height<=720][ext=mp4]/best[height<=720]"
    """yt-dlp format selector."""

    def __post_init__(self) -> None:
        if not self.metadata:
            raise ValueError("metadata is required")
        if self.clips_per_shard < 1:
            raise ValueError("clips_per_shard must be at least 1")
        if self.min_seconds < 0 or (self.max_seconds is not None and self.max_seconds <= self.min_seconds):
            raise ValueError("need 0 <= min_seconds < max_seconds")
        if self.overlap_policy not in ("reject", "keep"):
            raise ValueError(f"overlap_policy must be 'reject' or 'keep', got {self.overlap_policy!r}")
        if self.videos is None and not self.download:
            raise ValueError("give a videos folder, or allow downloads")
        if self.download:
            if importlib.util.find_spec("yt_dlp") is None:
                raise ValueError("download needs yt-dlp, which is not installed: pip install yt-dlp")
            if self.download_dir is None and (self.videos is None or "://" in self.videos):
                raise ValueError("download needs a local download_dir (videos is not a local folder)")


DEFAULT_CAPTION_MODEL = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
"""Apache-2.0, 0.5 B parameters, several frames in one prompt (docs/data.md says why it is the default)."""
DEFAULT_PROMPT = (
    "These are frames of one short video, in order. Describe in one sentence what is seen: who or what is in it, "
    "what they do and where. Do not mention frames or images."
)


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    """The captioning stage: a transformers image-to-text or image-text-to-text model run on frames of each kept clip.

    Any model id or local folder that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load works: captioners
    without a chat template (BLIP, GIT, VisionEncoderDecoder) caption the middle sampled frame; VLMs with a chat
    template (SmolVLM, Qwen2-VL, LLaVA, ...) see every sampled frame, in order, with ``prompt``.
    """

    enabled: bool = False
    """Caption every kept clip with ``model`` (and check the captions with the gate below)."""
    model: str = DEFAULT_CAPTION_MODEL
    """Captioning model: a hub id or a local folder (loaded with ``from_pretrained`` either way)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of ``model``; None for the default branch."""
    prompt: str = DEFAULT_PROMPT
    """Instruction given to chat VLMs with the frames (captioners without a chat template take no prompt)."""
    frames: int = 4
    """Frames sampled per clip: the centres of ``frames`` equal parts of the clip (4: at 12.5, 37.5, 62.5 and 87.5 %)."""
    max_new_tokens: int = 60
    """Longest generation in tokens."""
    reject_cut_off: bool = True
    """Reject a generation that reaches ``max_new_tokens`` without ending (``caption_too_long``: it stops mid-sentence)."""
    num_beams: int = 1
    """Beam search width (1: greedy decoding, the fastest)."""
    clips_per_call: int = 8
    """Clips captioned per model call (the batch size)."""
    device: str = "auto"
    """Torch device of the models: ``auto`` (the actor's GPU when Ray gave it one, else the CPU), ``cpu``, ``cuda``."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights' dtype: ``auto`` is bfloat16 on a GPU that supports it (else float16 on a GPU) and float32 on a CPU."""
    stored: Literal["model", "file"] = "model"
    """Which caption becomes the clip's ``txt`` when it has both a caption from the caption file and a generated one
    (both are kept in the annotation's ``captions``; training can choose either with ``caption_source``)."""
    on_reject: Literal["drop", "file"] = "drop"
    """When the gate rejects a generated caption: ``drop`` the clip (a row with the rejection's status), or keep it
    with its caption-file text when it has one (``file``; the rejected generation and why are recorded in the
    annotation's ``rejected_caption``; clips without file text are still dropped)."""
    clip_model: str | None = None
    """CLIP model (hub id or local folder) scoring each caption against the sampled frames (the LAION recipe); None: no
    similarity check. ``openai/clip-vit-base-patch32`` is the model LAION filtered with."""
    min_similarity: float = 0.28
    """Captions whose mean CLIP cosine similarity to the sampled frames is below this are rejected
    (``caption_mismatch``); 0.28 is LAION-5B's English threshold with ViT-B/32. Only with ``clip_model``."""
    max_words: int = 80
    """Captions longer than this many words are rejected (``caption_too_long``)."""
    max_repeats: int = 3
    """A word or phrase of up to 4 words repeated this many times in a row marks a degenerate generation
    (``caption_repetitive``)."""
    workers: int | None = None
    """Captioning actors (one model each). None: one per GPU of the cluster, else one."""
    cpus: float = 1.0
    """CPUs Ray reserves per captioning actor."""
    gpus: float | None = None
    """GPUs per captioning actor. None: 1 when the cluster has GPUs, else 0."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("caption model must be a hub id or a local folder")
        if not 1 <= self.frames <= 64:
            raise ValueError("caption frames must be in [1, 64]")
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.clips_per_call < 1:
            raise ValueError("caption max_new_tokens, num_beams and clips_per_call must be at least 1")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"caption dtype must be auto, float32, float16 or bfloat16, got {self.dtype!r}")
        if self.stored not in ("model", "file"):
            raise ValueError(f"caption stored must be 'model' or 'file', got {self.stored!r}")
        if self.on_reject not in ("drop", "file"):
            raise ValueError(f"caption on_reject must be 'drop' or 'file', got {self.on_reject!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError("caption min_similarity must be in [-1, 1] (a cosine similarity)")
        if self.max_words < 1 or self.max_repeats < 2:
            raise ValueError("caption max_words must be at least 1 and max_repeats at least 2")
        if self.workers is not None and self.workers < 1:
            raise ValueError("caption workers must be at least 1")
        if self.cpus <= 0 or (self.gpus is not None and self.gpus < 0):
            raise ValueError("caption cpus must be positive and gpus non-negative")

    @property
    def source_name(self) -> str:
        """How the clips record this model as their caption source: ``model:<id or folder>``."""
        return f"model:{self.model}"


@dataclass(frozen=True, kw_only=True)
class HdvilaConfig:
    """The whole HD-VILA clip job."""

    source: SourceConfig
    """Inputs and planning."""
    cut: CutConfig = field(default_factory=CutConfig)
    """Cutting and encoding."""
    output: str
    """Output folder of the clip shards (local)."""
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    """Captioning of the kept clips (off unless ``caption.enabled``)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray cluster to run on (default: a local Ray started by the job)."""
    cpus_per_task: float = 1.0
    """CPUs Ray reserves per shard task."""
    max_in_flight: int | None = None
    """Shard tasks submitted at once (None: twice the cluster's CPUs / cpus_per_task)."""
    max_shards: int | None = None
    """Process at most this many shards (a sample run); None for all."""
    verbose: bool = False
    """Debug logging (``-v``)."""
    ignore_config_mismatch: bool = False
    """Resume into an output whose ``config.json`` records other cutting/planning settings (otherwise an error: the
    shards would mix two configurations)."""

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("output is required")
        if self.cpus_per_task <= 0:
            raise ValueError("cpus_per_task must be positive")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.max_shards is not None and self.max_shards < 1:
            raise ValueError("max_shards must be at least 1")


@dataclass(frozen=True, kw_only=True)
class RecaptionConfig:
    """Caption an existing clip shard set without cutting again (``build_hdvila_clips.py recaption``)."""

    clips: str
    """The clip folder to caption (its complete shards are read, never written)."""
    output: str
    """Output folder (local; not ``clips``)."""
    write: Literal["shards", "parquet"] = "shards"
    """``shards``: a new clip shard set (the same clips and keys, with the new captions); ``parquet``: only caption
    tables (``NNNNN.parquet`` per shard and ``captions.parquet``, keyed by ``clip_id`` and ``key``), which the builder
    reads back with ``--captions OUTPUT/captions.parquet``."""
    caption: CaptionConfig = field(default_factory=lambda: CaptionConfig(enabled=True))
    """The captioning model and its gate."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray cluster to run on (default: a local Ray started by the job)."""
    cpus_per_task: float = 1.0
    """CPUs Ray reserves per shard-reading task (it decodes the sampled frames)."""
    max_shards: int | None = None
    """Caption at most this many shards (a sample run); None for all."""
    verbose: bool = False
    """Debug logging (``-v``)."""

    def __post_init__(self) -> None:
        if not self.clips or not self.output:
            raise ValueError("clips and output are required")
        if self.write not in ("shards", "parquet"):
            raise ValueError(f"write must be 'shards' or 'parquet', got {self.write!r}")
        if self.cpus_per_task <= 0:
            raise ValueError("cpus_per_task must be positive")
        if self.max_shards is not None and self.max_shards < 1:
            raise ValueError("max_shards must be at least 1")


PROFILES: dict[str, dict] = {
    "default": {},
    "train512": {"cut": {"size": 512, "crf": 18}},
    "train512-8fps": {"cut": {"size": 512, "fps": 8.0, "crf": 18}},
    "fast-copy": {"cut": {"mode": "copy"}},
}
"""Named defaults (``--profile``; explicit flags override them): ``train512`` keeps the source rate at 512x512 (the
readers sample frames with a stride), ``fast-copy`` stream-copies."""
