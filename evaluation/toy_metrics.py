"""Metrics of the toy world (``pipelines/build_toy_world.py``) that mean something offline: pure functions on arrays.

Pose alignment
    A generated figure is the set of pixels that differ from a background colour by more
    than a tolerance (:func:`figure_mask`); it is compared by IoU with the silhouette drawn
    from the input pose (:func:`pose_iou`). The background colour is either the frame's own
    (:func:`border_colour`, the median colour of its one-pixel border: a toy figure touches
    little of it), which measures the pose alone, as a pose detector's AP does whatever the
    colours; or the colour named in the prompt, which also fails a figure drawn on a wrong
    background (a colour error that prompt fidelity counts too). The control is the same
    score against the pose of another video (:func:`shuffled_control`): a model that follows
    its pose scores well above it, a model that ignores pose scores about the same.

    The tolerance is half the smallest distance between two palette colours
    (:func:`palette_tolerance`; 127.5 RGB levels for the RGB-cube palette). It is the largest
    tolerance for which no pixel can be within it of both the background and any other
    named colour, so a pixel of any named figure colour is never taken for background,
    while every deviation smaller than half the gap (JPEG and H.264 errors in flat regions
    are a few levels; an imperfect generator's colour noise) still counts as background.
    Pixels mixed at the figure's edges by 4:2:0 chroma or blur fall on whichever side they
    are closer to: the decision boundary is the midpoint between the two colours.

Prompt fidelity
    :func:`colour_fidelity`: the named colour (nearest palette colour within the tolerance)
    dominating the background and the figure, compared with the caption's. Without a mask
    the background is the dominant named colour of the frame and the figure the dominant
    named colour of the rest, so it needs no pose and serves models without pose control.

Frame consistency
    :func:`consecutive_cosines`: cosine of consecutive frames as vectors in [-1, 1] (the
    model's pixel range, so colours are signed and a colour change lowers the cosine);
    :func:`background_stability`: drift of the background's colour over the frames and the
    temporal spread of static background pixels; :func:`boundary_consistency`: the same
    measures at the boundaries of the windows of a long video against inside them.

Scores are plain floats; the registry metrics built on them will read masks, palettes
and poses from the toy evaluation spec.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

MAX_RGB_DISTANCE = float(np.sqrt(3) * 255)
"""Distance between black and white: the largest distance of two RGB colours."""


def colour_distance(pixels: np.ndarray, rgb) -> np.ndarray:
    """Euclidean RGB distance of every pixel of ``(..., 3)`` ``pixels`` to ``rgb``: shape ``(...)`` float32."""
    difference = np.asarray(pixels, dtype=np.float32) - np.asarray(rgb, dtype=np.float32)
    return np.sqrt((difference**2).sum(axis=-1))


def palette_tolerance(palette: Mapping[str, Sequence[int]]) -> float:
    """Half the smallest distance between two colours of ``palette`` (see the module docstring)."""
    if len(palette) < 2:
        raise ValueError("a palette needs at least two colours")
    colours = np.asarray(list(palette.values()), dtype=np.float64)
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(colours, 2)) / 2


def figure_mask(image: np.ndarray, background_rgb, tolerance: float) -> np.ndarray:
    """``(..., H, W)`` bool: pixels farther than ``tolerance`` from the background colour."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    return colour_distance(image, background_rgb) > tolerance


def border_colour(images: np.ndarray) -> np.ndarray:
    """``(..., 3)`` float32: the per-channel median colour of the one-pixel border of each ``(..., H, W, 3)`` image."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.shape[-3] < 3 or pixels.shape[-2] < 3:
        raise ValueError(f"images of {pixels.shape[-3]}x{pixels.shape[-2]} pixels have no border apart from the inside")
    ring = [pixels[..., 0, :, :], pixels[..., -1, :, :], pixels[..., 1:-1, 0, :], pixels[..., 1:-1, -1, :]]
    return np.median(np.concatenate(ring, axis=-2), axis=-2)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def pose_iou(image: np.ndarray, silhouette: np.ndarray, background_rgb, tolerance: float) -> float:
    """IoU of the generated figure in ``image`` (``(H, W, 3)``) with the ``silhouette`` of the input pose."""
    return mask_iou(figure_mask(image, background_rgb, tolerance), silhouette)


def video_pose_iou(frames: np.ndarray, silhouettes: np.ndarray, background_rgb, tolerance: float) -> np.ndarray:
    """Per-frame :func:`pose_iou` of ``(T, H, W, 3)`` frames against ``(T, H, W)`` silhouettes: ``(T,)`` float64."""
    if len(frames) != len(silhouettes):
        raise ValueError(f"{len(frames)} frames but {len(silhouettes)} silhouettes")
    return np.array([pose_iou(f, s, background_rgb, tolerance) for f, s in zip(frames, silhouettes)], dtype=np.float64)


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` that moves every element (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"a shuffled control needs at least two videos, got {n}")
    rng = np.random.default_rng([seed, 0x5AFF1E])
    while True:
        permutation = rng.permutation(n)
        if not np.any(permutation == np.arange(n)):
            return permutation


def shuffled_control(items: Sequence, seed: int = 0) -> list:
    """``items`` re-paired so that item ``i`` gets another item's value: the control pose of video ``i``.

    Give the per-video pose sequences (or silhouettes); pair each generated video with the
    returned entry of its own index. Sequences of other lengths are the caller's to trim.
    """
    return [items[j] for j in derangement(len(items), seed)]


def named_colours(pixels: np.ndarray, palette: Mapping[str, Sequence[int]], tolerance: float) -> np.ndarray:
    """Index into ``palette`` of the colour each pixel is within ``tolerance`` of (-1: none); ``(...)`` int."""
    colours = np.asarray(list(palette.values()), dtype=np.float32)
    distances = np.stack([colour_distance(pixels, c) for c in colours], axis=-1)
    nearest = distances.argmin(axis=-1)
    return np.where(np.take_along_axis(distances, nearest[..., None], -1)[..., 0] <= tolerance, nearest, -1)


def dominant_colour(pixels: np.ndarray, palette: Mapping[str, Sequence[int]], tolerance: float) -> tuple[str | None, float]:
    """``(name, share)``: the named colour most pixels of ``(N, 3)`` ``pixels`` are within ``tolerance`` of, and the
    share of the pixels that have it; ``(None, 0.0)`` when no pixel is near a named colour."""
    indices = named_colours(np.asarray(pixels).reshape(-1, 3), palette, tolerance)
    named = indices[indices >= 0]
    if len(named) == 0:
        return None, 0.0
    counts = np.bincount(named, minlength=len(palette))
    best = int(counts.argmax())
    return list(palette)[best], float(counts[best] / len(indices))


def colour_fidelity(
    image: np.ndarray, figure: str, background: str, palette: Mapping[str, Sequence[int]], *,
    mask: np.ndarray | None = None, tolerance: float | None = None, min_figure_share: float = 0.01,
) -> dict:
    """Do the figure and background of ``image`` have the colours the caption names?

    With ``mask`` (the figure's pixels, e.g. the input pose's silhouette) the figure colour is the dominant
    named colour inside it and the background colour outside. Without, the background is the dominant named
    colour of the whole image (the figure covers a minority of it) and the figure the dominant named colour
    of the remaining pixels, provided at least ``min_figure_share`` of the image has it (else no figure).
    Returns ``figure_ok``, ``background_ok``, ``both_ok`` (bools) and the colours found.
    """
    for name in (figure, background):
        if name not in palette:
            raise ValueError(f"colour {name!r} is not in the palette {list(palette)}")
    tolerance = palette_tolerance(palette) if tolerance is None else tolerance
    pixels = np.asarray(image).reshape(-1, 3)
    if mask is not None:
        inside = np.asarray(mask, dtype=bool).reshape(-1)
        found_background, _ = dominant_colour(pixels[~inside], palette, tolerance)
        found_figure, _ = dominant_colour(pixels[inside], palette, tolerance)
    else:
        found_background, _ = dominant_colour(pixels, palette, tolerance)
        indices = named_colours(pixels, palette, tolerance)
        rest = indices[(indices >= 0) & (indices != list(palette).index(found_background))] if found_background else indices[:0]
        counts = np.bincount(rest, minlength=len(palette))
        enough = len(rest) > 0 and counts.max() >= min_figure_share * len(pixels)
        found_figure = list(palette)[int(counts.argmax())] if enough else None
    return {
        "figure_ok": found_figure == figure,
        "background_ok": found_background == background,
        "both_ok": found_figure == figure and found_background == background,
        "figure_found": found_figure,
        "background_found": found_background,
    }


# --- frame consistency --------------------------------------------------------------------------


def _signed(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, dtype=np.float64) / 127.5 - 1.0


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    return float(a @ b / (norm_a * norm_b))


def consecutive_cosines(frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each pair of consecutive ``(T, H, W, 3)`` frames as vectors in [-1, 1] (only the pixels of ``mask``,
    ``(H, W)``, when given): ``(T - 1,)``. Two all-mid-grey frames count as identical."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    vectors = _signed(frames[:, np.asarray(mask, dtype=bool)] if mask is not None else frames).reshape(len(frames), -1)
    return np.array([_cosine(a, b) for a, b in zip(vectors[:-1], vectors[1:])], dtype=np.float64)


def frame_consistency(frames: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean :func:`consecutive_cosines` (x100 gives the paper's scale); needs at least two frames."""
    if len(frames) < 2:
        raise ValueError("frame consistency needs at least two frames")
    return float(consecutive_cosines(frames, mask).mean())


def _background_masks(frames: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    shape = frames.shape[:3]
    if masks is None:
        return np.ones(shape, dtype=bool)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape == shape[1:]:
        return np.broadcast_to(masks, shape)
    if masks.shape != shape:
        raise ValueError(f"background masks must be (H, W) or (T, H, W) like the frames {shape}, got {masks.shape}")
    return masks


def background_colours(frames: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """``(T, 3)`` per-channel median colour of each frame's background pixels (``masks``: ``(H, W)`` shared or
    ``(T, H, W)``; None: the whole frame, whose median is the background's while the figure covers under half)."""
    frames = np.asarray(frames)
    masks = _background_masks(frames, masks)
    colours = np.zeros((len(frames), 3), dtype=np.float64)
    for index, (frame, mask) in enumerate(zip(frames, masks)):
        if not mask.any():
            raise ValueError(f"frame {index} has no background pixel in its mask")
        colours[index] = np.median(frame[mask], axis=0)
    return colours


def static_background(silhouettes: np.ndarray, margin: int = 1) -> np.ndarray:
    """``(H, W)`` bool: pixels outside every frame's silhouette grown by ``margin`` pixels (background in all frames)."""
    import cv2

    union = np.asarray(silhouettes, dtype=bool).any(axis=0).astype(np.uint8)
    if margin > 0:
        union = cv2.dilate(union, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return union == 0


def background_stability(frames: np.ndarray, masks: np.ndarray | None = None) -> dict:
    """How steady the background stays over ``(T, H, W, 3)`` frames.

    - ``colour_drift``: mean distance (RGB levels) of each frame's background colour
      (:func:`background_colours`) from the video's median background colour; ``max_colour_drift`` its maximum;
    - ``stability``: ``1 - colour_drift / MAX_RGB_DISTANCE`` (1.0: the background colour never changes);
    - ``pixel_std``: mean temporal standard deviation (RGB levels) of the pixels that are background in every
      frame (flicker and texture the median hides; 0.0 for a still background); None when there are none.
    """
    frames = np.asarray(frames)
    colours = background_colours(frames, masks)
    drift = np.linalg.norm(colours - np.median(colours, axis=0), axis=1)
    always = _background_masks(frames, masks).all(axis=0)
    pixel_std = float(frames[:, always].astype(np.float64).std(axis=0).mean()) if always.any() else None
    return {
        "stability": float(1.0 - drift.mean() / MAX_RGB_DISTANCE),
        "colour_drift": float(drift.mean()),
        "max_colour_drift": float(drift.max()),
        "pixel_std": pixel_std,
    }


def window_boundaries(num_frames: int, window: int, overlap: int = 0) -> list[int]:
    """Frames where a long video's content switches to a new window (frame ``b - 1`` came from the previous one).

    ``overlap > 0``: the noise-reuse layout of ``follow_your_pose.long_video.plan_windows`` (the first window's frames,
    then the ``window - overlap`` new frames of each later window); ``overlap == 0``: independent windows
    laid end to end.
    """
    if num_frames < 1 or window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need num_frames >= 1, window >= 1 and 0 <= overlap < window, got {num_frames}, {window}, {overlap}")
    if overlap == 0:
        return list(range(window, num_frames, window))
    return list(range(window, num_frames, window - overlap))


def boundary_consistency(frames: np.ndarray, boundaries: Sequence[int], masks: np.ndarray | None = None) -> dict:
    """Consecutive-frame consistency across window boundaries against inside windows.

    ``boundary_cosine`` / ``interior_cosine``: mean :func:`consecutive_cosines` of the pairs ``(b - 1, b)`` at
    the boundaries / of all other pairs; ``cosine_gap``: interior minus boundary (about 0 when boundaries are
    invisible); ``boundary_colour_jump`` / ``interior_colour_jump``: mean change (RGB levels) of the background
    colour between the frames of those pairs. Measures of an empty group are None.
    """
    frames = np.asarray(frames)
    boundaries = sorted(set(int(b) for b in boundaries))
    if any(not 1 <= b < len(frames) for b in boundaries):
        raise ValueError(f"boundaries must be in 1..{len(frames) - 1}, got {boundaries}")
    cosines = consecutive_cosines(frames)
    jumps = np.linalg.norm(np.diff(background_colours(frames, masks), axis=0), axis=1)
    at = np.zeros(len(cosines), dtype=bool)
    at[[b - 1 for b in boundaries]] = True

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if len(values) else None

    boundary, interior = mean(cosines[at]), mean(cosines[~at])
    return {
        "boundaries": len(boundaries),
        "boundary_cosine": boundary,
        "interior_cosine": interior,
        "cosine_gap": None if boundary is None or interior is None else interior - boundary,
        "boundary_colour_jump": mean(jumps[at]),
        "interior_colour_jump": mean(jumps[~at]),
    }
