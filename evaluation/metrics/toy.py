"""Toy-world metrics (``pose_iou``, ``prompt_fidelity``, ``background_stability``): meaningful offline, no backbone.

Videos generated for the toy world (``pipelines/build_toy_world.py``'s held-out set through
``training.generate``, or its oracle renderings) carry their prompt and input keypoints in
their record. The colours come from the record's ``settings.toy`` entry when the toy world
wrote it (oracle videos), otherwise from the prompt, parsed with the toy world's caption
template and palette (:mod:`datasets.toy_world`). The silhouette of the input pose is
redrawn from the keypoints by :mod:`pose_extraction.figure`; the arithmetic is
:mod:`evaluation.toy_metrics`.

``pose_iou`` finds the generated figure as the pixels away from the frame's own background
colour (the median of its border), so it measures the pose alone; ``pose_iou_named`` as the
pixels away from the background colour the prompt names, so a figure on a wrong background
fails it too (see :mod:`evaluation.toy_metrics`). Their ``_shuffled`` controls: each video's
generated figure against the pose of another video of the run (a seeded derangement over the
scored videos, trimmed to the shorter of the two), so they are computed when videos are
pooled; per-video rows leave them empty.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from datasets.toy_world import DEFAULT_TEMPLATE, PALETTE, min_distance, parse_caption
from evaluation import toy_metrics as tm
from evaluation.metrics.base import Metric
from evaluation.metrics.registry import register
from evaluation.sample import SampleError, VideoSample
from pose_extraction.figure import FigureStyle, silhouettes


@dataclass(frozen=True)
class ToyReference:
    """What a toy video should show: its colours (names and RGB), the mask tolerance and the figure style."""

    figure: str
    background: str
    figure_rgb: tuple[int, int, int]
    background_rgb: tuple[int, int, int]
    tolerance: float
    style: FigureStyle


def toy_reference(sample: VideoSample) -> ToyReference:
    """The sample's :class:`ToyReference` from its record's ``settings.toy``, else from its prompt; SampleError if neither."""
    toy = (sample.record.get("settings") or {}).get("toy")
    if isinstance(toy, dict) and toy.get("figure") in PALETTE and toy.get("background") in PALETTE:
        figure, background = toy["figure"], toy["background"]
        style = FigureStyle(**toy.get("figure_style", {}))
        tolerance = float(toy.get("mask_tolerance") or min_distance(PALETTE) / 2)
    else:
        try:
            figure, background = parse_caption(sample.prompt, list(PALETTE), DEFAULT_TEMPLATE)
        except ValueError as error:
            raise SampleError(f"not a toy-world video: {error}") from error
        style, tolerance = FigureStyle(), min_distance(PALETTE) / 2
    return ToyReference(figure, background, PALETTE[figure], PALETTE[background], tolerance, style)


def pose_silhouettes(keypoints: Sequence, height: int, width: int, style: FigureStyle) -> np.ndarray:
    """``(T, H, W)`` bool silhouettes of per-frame ``(P, 17, 3)`` keypoints."""
    return silhouettes([np.asarray(k, dtype=np.float32) for k in keypoints], height, width, style)


def _input_silhouettes(sample: VideoSample, reference: ToyReference) -> np.ndarray:
    keypoints = sample.keypoints
    if keypoints is None:
        raise SampleError("the record has no input keypoints to draw the pose silhouette from")
    if len(keypoints) != len(sample.frames):
        raise SampleError(f"{len(keypoints)} pose frames for {len(sample.frames)} video frames")
    _, height, width, _ = sample.frames.shape
    return pose_silhouettes(keypoints, height, width, reference.style)


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.reshape(-1)).tobytes()).decode("ascii")


def _unpack(text: str, shape: Sequence[int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=int(np.prod(shape)))
    return bits.reshape(shape).astype(bool)


@register
class PoseIoU(Metric):
    name = "pose_iou"
    figures = ("pose_iou", "pose_iou_shuffled", "pose_iou_named", "pose_iou_named_shuffled")
    description = (
        "IoU of the generated figure (pixels away from the frame's own background colour) with the input pose's "
        "silhouette; named: pixels away from the prompt's background colour; shuffled: against another video's pose "
        "(control)."
    )
    MASKS = {"pose_iou": "figure_masks", "pose_iou_named": "named_masks"}
    """Each IoU figure and the state field of its generated figure masks."""

    def settings(self) -> dict:
        return {"control_seed": self.config.seed, "background": {"pose_iou": "border median", "pose_iou_named": "prompt"}}

    def update(self, sample: VideoSample) -> dict:
        reference = toy_reference(sample)
        masks = _input_silhouettes(sample, reference)
        with self.context.timed("pixels/pose_iou"):
            own = tm.figure_mask(sample.frames, tm.border_colour(sample.frames)[:, None, None, :], reference.tolerance)
            named = tm.figure_mask(sample.frames, reference.background_rgb, reference.tolerance)
            ious = [tm.mask_iou(g, s) for g, s in zip(own, masks)]
            named_ious = [tm.mask_iou(g, s) for g, s in zip(named, masks)]
        return {
            "values": {"pose_iou": float(np.mean(ious)), "pose_iou_shuffled": None,
                       "pose_iou_named": float(np.mean(named_ious)), "pose_iou_named_shuffled": None},
            "per_frame": np.round(ious, 4).tolist(),
            "figure_masks": _pack(own),
            "named_masks": _pack(named),
            "shape": list(own.shape),
            "keypoints": [np.asarray(k).round(3).tolist() for k in sample.keypoints],
            "style": reference.style.to_dict(),
        }  # fmt: skip

    def shuffled(self, states: Sequence[dict]) -> dict[str, list[float | None]]:
        """Per-video control IoUs, by figure: video ``i``'s figure masks against the pose of its derangement partner
        (the partner's silhouettes drawn once for both masks)."""
        if len(states) < 2:
            return {figure: [None] * len(states) for figure in self.MASKS}
        partners = tm.derangement(len(states), self.config.seed)
        values = {figure: [] for figure in self.MASKS}
        for state, j in zip(states, partners):
            other = states[j]
            count, height, width = state["shape"]
            frames = min(count, len(other["keypoints"]))
            scale = np.array([width / other["shape"][2], height / other["shape"][1], 1.0], dtype=np.float32)
            keypoints = [np.asarray(k, dtype=np.float32) * scale for k in other["keypoints"][:frames]]
            control = pose_silhouettes(keypoints, height, width, FigureStyle(**state["style"]))
            for figure, field in self.MASKS.items():
                masks = _unpack(state[field], state["shape"])[:frames]
                values[figure].append(float(np.mean([tm.mask_iou(g, c) for g, c in zip(masks, control)])))
        return values

    def compute(self, states: Sequence[dict]) -> dict[str, float | None]:
        out, shuffled = {}, self.shuffled(states)
        for figure in self.MASKS:
            control = [v for v in shuffled[figure] if v is not None]
            out[figure] = float(np.mean([s["values"][figure] for s in states]))
            out[f"{figure}_shuffled"] = float(np.mean(control)) if control else None
        return out

    def bootstrap(self, states: Sequence[dict], resamples: np.ndarray) -> dict[str, np.ndarray]:
        out, shuffled = {}, self.shuffled(states)
        for figure in self.MASKS:
            iou = np.array([s["values"][figure] for s in states], dtype=np.float64)
            control = np.array([np.nan if v is None else v for v in shuffled[figure]], dtype=np.float64)
            out[figure], out[f"{figure}_shuffled"] = iou[resamples].mean(axis=1), np.nanmean(control[resamples], axis=1)
        return out


@register
class PromptFidelity(Metric):
    name = "prompt_fidelity"
    figures = ("prompt_fidelity", "figure_colour_ok", "background_colour_ok")
    description = (
        "Share of frames whose dominant named colours (background, then the rest) are the prompt's background and "
        "figure colours; needs no pose, so models without pose control are comparable."
    )

    def update(self, sample: VideoSample) -> dict:
        reference = toy_reference(sample)
        with self.context.timed("pixels/prompt_fidelity"):
            checks = [
                tm.colour_fidelity(frame, reference.figure, reference.background, PALETTE, tolerance=reference.tolerance)
                for frame in sample.frames
            ]
        return {
            "values": {
                "prompt_fidelity": float(np.mean([c["both_ok"] for c in checks])),
                "figure_colour_ok": float(np.mean([c["figure_ok"] for c in checks])),
                "background_colour_ok": float(np.mean([c["background_ok"] for c in checks])),
            },
            "found": [[c["figure_found"], c["background_found"]] for c in checks],
        }


@register
class BackgroundStability(Metric):
    name = "background_stability"
    figures = ("background_stability", "background_colour_drift", "background_pixel_std", "frame_cosine")
    description = (
        "1 - mean drift of the background colour (outside the input pose's silhouette) over the frames / the largest "
        "RGB distance; also the drift and temporal pixel std in RGB levels and the consecutive-frame pixel cosine."
    )

    def update(self, sample: VideoSample) -> dict:
        if len(sample.frames) < 2:
            raise SampleError("background stability needs at least 2 frames")
        reference = toy_reference(sample)
        background = None
        if sample.keypoints is not None:
            masks = _input_silhouettes(sample, reference)
            background = np.stack([tm.static_background(m[None], margin=1) for m in masks])
            if not background.any(axis=(1, 2)).all():
                background = None  # a figure covering a whole frame: fall back to the frame median
        with self.context.timed("pixels/background_stability"):
            stability = tm.background_stability(sample.frames, background)
            cosine = tm.frame_consistency(sample.frames)
        return {
            "values": {
                "background_stability": stability["stability"],
                "background_colour_drift": stability["colour_drift"],
                "background_pixel_std": stability["pixel_std"],
                "frame_cosine": cosine,
            },
            "max_colour_drift": stability["max_colour_drift"],
        }
