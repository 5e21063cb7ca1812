"""What every metric is: per-video ``update`` into a JSON state, ``compute`` over many states.

A metric's :meth:`Metric.update` turns one :class:`~evaluation.sample.VideoSample`
into a JSON-serialisable *state* holding ``values`` (figure name -> number for
that video) plus whatever :meth:`Metric.compute` needs to pool videos. States
are cached on disk per video, so a stopped run resumes where it was, and the
bootstrap resamples states, not videos. A video a metric cannot score gets a
state ``{"skipped": reason}`` and is reported, not dropped silently.

Models are shared through :class:`MetricContext`: it loads the CLIP backbone and
the pose estimator once, on first use, and keeps the CLIP image embeddings of the
current video so ``clip`` and ``frame_consistency`` embed each frame once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import contextmanager
from typing import ClassVar, Sequence

import numpy as np

from evaluation.config import EvalConfig
from evaluation.sample import SampleError, VideoSample


class MetricContext:
    """Models and features shared by the metrics of one run, and where their time goes."""

    def __init__(self, config: EvalConfig):
        self.config = config
        self.timings: dict[str, float] = defaultdict(float)
        """Seconds per section: ``forward/<model>`` for model forward passes, anything else is bookkeeping."""
        self._clip = None
        self._estimator = None
        self._image_cache: tuple[str, np.ndarray] | None = None

    @contextmanager
    def timed(self, section: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[section] += time.perf_counter() - start

    @property
    def clip(self):
        """The CLIP backbone (loaded on first use)."""
        if self._clip is None:
            from evaluation.metrics.clip_backbone import ClipBackbone

            with self.timed("load/clip"):
                try:
                    self._clip = ClipBackbone(self.config, self)
                except (OSError, ValueError) as error:
                    raise ValueError(
                        f"could not load the CLIP backbone {self.config.clip_model!r} (a local folder with a saved "
                        f"CLIPModel + CLIPProcessor, or a hub id already in the local cache when offline): {error}"
                    ) from error
        return self._clip

    @property
    def clip_loaded(self) -> bool:
        return self._clip is not None

    @property
    def estimator(self):
        """The pose estimator of ``config.pose`` (loaded on first use)."""
        if self._estimator is None:
            from pose_extraction.backends import build_estimator

            with self.timed("load/pose"):
                self._estimator = build_estimator(self.config.pose)
        return self._estimator

    def close(self) -> None:
        """Free the models. The MediaPipe graph must be closed explicitly: left open beside torch, the
        interpreter hangs at exit."""
        estimator, self._estimator, self._clip, self._image_cache = self._estimator, None, None, None
        if estimator is not None and hasattr(estimator, "close"):
            estimator.close()

    def __enter__(self) -> "MetricContext":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def image_embeddings(self, sample: VideoSample) -> np.ndarray:
        """L2-normalised CLIP image embeddings ``(T, D)`` float32 of the sample's frames, computed once per video."""
        if self._image_cache is None or self._image_cache[0] != sample.key:
            self._image_cache = (sample.key, self.clip.image_embeddings(sample.frames))
        return self._image_cache[1]


class Metric(ABC):
    """A registered metric. Subclasses set the class attributes and implement :meth:`update`."""

    name: ClassVar[str]
    """Registry name (what ``--metrics`` takes)."""
    figures: ClassVar[tuple[str, ...]]
    """Numbers it reports, first one is the headline (e.g. ``pose_ap``, ``pose_ap50``, ``pose_ap75``)."""
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    """One sentence shown in the report."""

    def __init__(self, context: MetricContext):
        self.context = context
        self.config = context.config

    def settings(self) -> dict:
        """What the numbers depend on besides the video (backbone, thresholds); recorded and part of the cache key."""
        return {}

    def cache_inputs(self) -> dict:
        """What else the cached states depend on, part of the cache key but not recorded (e.g. weight-file hashes)."""
        return {}

    def prepare(self) -> None:
        """Load what :meth:`update` needs (called before the first video that needs scoring; cheap afterwards)."""

    @abstractmethod
    def update(self, sample: VideoSample) -> dict:
        """Score one video: a JSON-serialisable state with ``values`` (figure -> float), or raise SampleError."""

    def compute(self, states: Sequence[dict]) -> dict[str, float | None]:
        """Pool scored videos into one number per figure (default: the mean over videos)."""
        return {figure: _mean([s["values"][figure] for s in states]) for figure in self.figures}

    def bootstrap(self, states: Sequence[dict], resamples: np.ndarray) -> dict[str, np.ndarray]:
        """``compute`` on each row of ``resamples`` (``(B, n)`` indices into ``states``): figure -> ``(B,)``."""
        out = {}
        for figure in self.figures:
            values = np.array([np.nan if s["values"][figure] is None else s["values"][figure] for s in states])
            out[figure] = np.nanmean(values[resamples], axis=1) if len(values) else np.zeros(0)
        return out

    def safe_update(self, sample: VideoSample) -> dict:
        """:meth:`update`, with a video the metric cannot score turned into a ``skipped`` state."""
        try:
            return self.update(sample)
        except SampleError as error:
            return {"skipped": str(error)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
