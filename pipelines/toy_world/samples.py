"""One toy sample, drawn deterministically from ``(seed, kind, index)``: a posed figure or a moving one, with its caption.

Every sample has its own random generator seeded by the config seed, the kind of
sample and its index, so a sample does not depend on which process draws it, on
the shard size, or on the other samples. Training samples (``image``, ``clip``)
use the training colour pairs; evaluation samples (``short``, ``long``) cycle
through the held-out pairs and draw their poses from streams no training sample
uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.toy_world import reference
from pipelines.toy_world.captions import make_caption
from pipelines.toy_world.config import GENERATOR_VERSION, ToyWorldConfig
from pose_extraction.figure import paint, silhouettes
from pipelines.toy_world.poses import Proportions, fit_to_frame, keypoints_from_params, sample_motion, sample_params, with_scores

STREAMS = {"image": 1, "clip": 2, "short": 3, "long": 4}
"""Random stream of each kind of sample."""
KEY_PREFIX = {"image": "toyimg", "clip": "toyclip", "short": "toyeval", "long": "toylong"}


@dataclass(frozen=True)
class ToySample:
    """A drawn sample: one frame for ``image``, several for the others."""

    kind: str
    index: int
    key: str
    figure: str
    background: str
    caption: str
    keypoints: np.ndarray
    """``(T, 1, 17, 3)`` float32 pixel keypoints at score 1, rounded to 3 decimals (exactly what the json stores)."""
    masks: np.ndarray
    """``(T, H, W)`` bool silhouettes drawn from :attr:`keypoints`."""
    frames: np.ndarray
    """``(T, H, W, 3)`` uint8 RGB: the figure colour on the masks, the background colour elsewhere."""
    held_out_pair: bool
    motion_step: float | None = None
    """The key-pose step a motion used (None for a still image)."""


def sample_rng(config: ToyWorldConfig, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, STREAMS[kind], index])


def sample_key(kind: str, index: int) -> str:
    return f"{KEY_PREFIX[kind]}_{index:08d}"


def _colours(config: ToyWorldConfig, kind: str, index: int, rng: np.random.Generator) -> tuple[str, str, bool]:
    if kind in ("short", "long") and config.held_out_pairs:
        figure, background = config.held_out_pairs[index % len(config.held_out_pairs)]
        return figure, background, True
    figure, background = config.train_pairs[int(rng.integers(len(config.train_pairs)))]
    return figure, background, False


def draw_sample(config: ToyWorldConfig, kind: str, index: int) -> ToySample:
    """Sample ``index`` of ``kind`` (``image``, ``clip``, ``short`` or ``long``)."""
    if kind not in STREAMS:
        raise ValueError(f"unknown sample kind {kind!r}; known: {sorted(STREAMS)}")
    rng = sample_rng(config, kind, index)
    figure, background, held_out = _colours(config, kind, index, rng)
    height_fraction = float(rng.uniform(*config.figure_height))
    step = None
    if kind == "image":
        body = Proportions.sample(rng)
        units = keypoints_from_params(sample_params(rng), body, config.style)
        points = fit_to_frame(units, body, config.size, height_fraction, rng, config.style)[None]
    else:
        frames = {"clip": config.clip_frames, "short": config.eval_frames, "long": config.eval_long_frames}[kind]
        motion = sample_motion(
            rng, frames, size=config.size, height_fraction=height_fraction, interval=config.motion_interval,
            step=config.motion_step, max_step_px=config.max_step * config.size, style=config.style,
        )  # fmt: skip
        points, step = motion.points, motion.step
    keypoints = with_scores(points)
    masks = silhouettes(keypoints, config.size, config.size, config.style)
    palette = config.palette
    frames_rgb = np.stack([paint(mask, palette[figure], palette[background]) for mask in masks])
    return ToySample(
        kind=kind, index=index, key=sample_key(kind, index), figure=figure, background=background,
        caption=make_caption(figure, background, config.caption_template), keypoints=keypoints, masks=masks,
        frames=frames_rgb, held_out_pair=held_out, motion_step=step,
    )  # fmt: skip


def toy_extra(config: ToyWorldConfig, sample: ToySample) -> dict:
    """The ``toy`` entry carried in annotations and records: colours and how the figure is drawn."""
    return {
        "generator_version": GENERATOR_VERSION,
        **reference(config.reference_fields, sample.figure, sample.background),
        "held_out_pair": sample.held_out_pair,
    }
