"""What the toy-world builder draws and writes: :class:`ToyWorldConfig`, its presets and its resolved JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

from pipelines.hdvila.config import X264_PRESETS
from pipelines.toy_world.captions import (
    DEFAULT_TEMPLATE, PALETTE, check_template, held_out_pairs, min_distance, palette_subset, training_pairs,
)  # fmt: skip
from pose_extraction.figure import FigureStyle

GENERATOR = "toy_world"
GENERATOR_VERSION = 1
"""Bump when the same config would draw different pixels, keypoints or captions."""
RUNTIME_FIELDS = ("output", "workers", "verbose")
"""Fields that do not change what is written: a resumed run may change them."""


@dataclass(frozen=True, kw_only=True)
class ToyWorldConfig:
    """One toy world: its look, its sizes, and how many samples of each kind to write."""

    output: str = ""
    """Output folder: ``images/`` (LAION-Pose shards), ``clips/`` (clip shards), ``eval/`` (held-out set), ``config.json``."""
    seed: int = 0
    """Seed of everything drawn: the same seed and settings write the same samples (whatever ``workers``)."""
    size: int = 64
    """Square image and video size in pixels (even, at least 16; the feasibility run used 32). decord 0.6.0 misreads
    H.264 frames 16, 24, 48 or 72 pixels wide (the clip reader's default decoder): prefer 32 or 64."""
    colours: tuple[str, ...] = tuple(PALETTE)
    """Named colours figures and backgrounds are drawn from (names of the palette: RGB cube corners)."""
    held_out: int | None = None
    """Colour pairs (figure, background) never used in training, only in the evaluation set; None: one per colour."""
    caption_template: str = DEFAULT_TEMPLATE
    """Caption of every sample, with ``{figure}`` and ``{background}`` replaced by colour names."""
    figure_height: tuple[float, float] = (0.55, 0.85)
    """Range of the figure's drawn height as a fraction of the image height (smaller when a wide pose must fit)."""
    limb_width: float = 0.3
    """Limb width as a fraction of the torso length."""
    head_radius: float = 0.4
    """Head radius as a fraction of the torso length."""
    images: int = 4096
    """Stage-1 images (LAION-Pose shards in ``images/``)."""
    images_per_shard: int = 1024
    """Images per LAION-Pose shard."""
    clips: int = 512
    """Stage-2 clips (clip shards in ``clips/``)."""
    clips_per_shard: int = 64
    """Clips per clip shard."""
    clip_frames: int = 32
    """Frames per clip (stage 2's default sample spans 29: 8 frames at stride 4)."""
    fps: float = 8.0
    """Frame rate of clips and evaluation videos."""
    motion_interval: int = 8
    """Frames between the key poses of a motion."""
    motion_step: float = 0.2
    """Largest change of each pose parameter between key poses, as a fraction of its range."""
    max_step: float = 0.08
    """No keypoint moves more than this fraction of the image size between consecutive frames."""
    eval_videos: int = 32
    """Held-out evaluation pose sequences of ``eval_frames`` frames (set ``short``)."""
    eval_frames: int = 8
    """Frames per short evaluation sequence."""
    eval_long_videos: int = 8
    """Held-out long pose sequences of ``eval_long_frames`` frames (set ``long``, for the window-boundary test)."""
    eval_long_frames: int = 32
    """Frames per long evaluation sequence."""
    jpeg_quality: int = 95
    """JPEG quality of stage-1 images (written without chroma subsampling, so colours stay exact away from edges)."""
    crf: int = 12
    """x264 constant rate factor of clips and evaluation videos (low keeps the named colours close)."""
    x264_preset: str = "veryfast"
    """x264 speed preset (veryfast: half the encoding time of medium for these flat frames, at the same size)."""
    workers: int = 1
    """Processes writing shards in parallel (1: in this process)."""
    verbose: bool = False
    """Debug logging (``-v``)."""

    def __post_init__(self) -> None:
        palette_subset(self.colours)
        check_template(self.caption_template)
        FigureStyle(limb_width=self.limb_width, head_radius=self.head_radius)
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size must be even and at least 16 (H.264 4:2:0), got {self.size}")
        if self.held_out is not None and not 0 <= self.held_out <= len(self.colours):
            raise ValueError(f"held_out must be between 0 and the number of colours ({len(self.colours)}), got {self.held_out}")
        low, high = self.figure_height
        if not 0.2 <= low <= high <= 1.0:
            raise ValueError(f"figure_height must satisfy 0.2 <= low <= high <= 1, got {self.figure_height}")
        counts = (self.images, self.clips, self.eval_videos, self.eval_long_videos)
        if min(counts) < 0:
            raise ValueError("images, clips, eval_videos and eval_long_videos must be non-negative")
        sizes = (self.images_per_shard, self.clips_per_shard, self.clip_frames, self.eval_frames, self.eval_long_frames)
        if min(sizes) < 1 or self.motion_interval < 1 or self.workers < 1:
            raise ValueError("shard sizes, frame counts, motion_interval and workers must be at least 1")
        if not 0 < self.fps <= 240 or not 0 <= self.motion_step <= 1 or not 0 < self.max_step <= 1:
            raise ValueError("need 0 < fps <= 240, 0 <= motion_step <= 1 and 0 < max_step <= 1")
        if not 1 <= self.jpeg_quality <= 100 or not 0 <= self.crf <= 51:
            raise ValueError("jpeg_quality must be in [1, 100] and crf in [0, 51]")
        if self.x264_preset not in X264_PRESETS:
            raise ValueError(f"x264_preset must be one of {X264_PRESETS}, got {self.x264_preset!r}")
        if len(self.train_pairs) == 0:
            raise ValueError("every colour pair is held out: nothing is left to train on")

    @cached_property
    def palette(self) -> dict[str, tuple[int, int, int]]:
        return palette_subset(self.colours)

    @cached_property
    def style(self) -> FigureStyle:
        return FigureStyle(limb_width=self.limb_width, head_radius=self.head_radius)

    @cached_property
    def held_out_pairs(self) -> list[tuple[str, str]]:
        count = len(self.colours) if self.held_out is None else self.held_out
        return held_out_pairs(self.colours, count, self.seed)

    @cached_property
    def train_pairs(self) -> list[tuple[str, str]]:
        return training_pairs(self.colours, self.held_out_pairs)

    @cached_property
    def mask_tolerance(self) -> float:
        """Half the smallest distance between two palette colours (see :mod:`evaluation.toy_metrics`)."""
        return min_distance(self.palette) / 2

    @cached_property
    def reference_fields(self) -> dict:
        """What the toy metrics need of this world besides a video's colour names (``palette``, ``figure_style``,
        ``mask_tolerance``): fields of the evaluation spec, and with :func:`datasets.toy_world.reference` the ``toy``
        entry of every record."""
        return {"palette": {k: list(v) for k, v in self.palette.items()}, "figure_style": self.style.to_dict(),
                "mask_tolerance": self.mask_tolerance}  # fmt: skip

    def to_dict(self) -> dict:
        """The resolved config, as saved in ``config.json`` beside every shard set."""
        return {
            **asdict(self), "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
            "palette": {k: list(v) for k, v in self.palette.items()},
            "held_out_pairs": [list(p) for p in self.held_out_pairs], "train_pairs": [list(p) for p in self.train_pairs],
        }  # fmt: skip

    def content_fields(self) -> dict:
        """What decides the written content (everything but :data:`RUNTIME_FIELDS`), for the resume check."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


PRESETS: dict[str, dict] = {
    "default": {},
    "feasibility32": {"size": 32},
    "smoke": {"images": 64, "images_per_shard": 32, "clips": 8, "clips_per_shard": 4, "eval_videos": 4, "eval_long_videos": 2},
}
"""Named defaults that explicit flags override: ``feasibility32`` is the issue's 32x32 world, ``smoke`` a seconds-long run."""
