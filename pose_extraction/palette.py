"""Tell our skeleton frames from other skeletons and from photos, by their pixels.

:func:`classify_frames` answers ``"ours"`` (drawn by :mod:`pose_extraction.skeleton`: the release's MMPose-0.x
palette on black), ``"rainbow"`` (an OpenPose/ControlNet/DWPose-style skeleton: black background, limbs in an
18-colour rainbow) or ``"photo"`` (anything else: a video or photos of people, whose poses must be extracted).

The rule, on the pixels of (up to :data:`SAMPLED_FRAMES` evenly spaced) frames pooled together:

- a pixel is *near-black* when its largest channel is at most :data:`DARK_LEVEL` (40 of 255); the others are *drawn*;
- a drawn pixel is *vivid* when its chroma (largest minus smallest channel) is at least :data:`MIN_CHROMA` (40) and at
  least :data:`MIN_SATURATION` (0.6) of its largest channel (our colours: 0.8 and 1; skin, cloth, grey: less);
- a vivid pixel *has our colour* when its hue lies within :data:`HUE_TOLERANCE` (25 degrees) of the hue of one of
  our three colours: orange (255, 153, 51) 30 degrees, green (0, 255, 0) 120, blue (0, 128, 255) 210.

Skeleton-like frames have a near-black share of at least :data:`MIN_DARK_SHARE` (0.6) and a vivid share of the
drawn pixels of at least :data:`MIN_VIVID_SHARE` (0.4). Among them, ``ours`` when at least
:data:`MIN_PALETTE_SHARE` (0.75) of the vivid pixels have our colour and at least two of our three colours each hold
:data:`MIN_COLOUR_SHARE` (5%) of them (our figures have green left and blue right limbs beside the orange torso; an
orange-brown object on black has one colour) (all-black frames, which our renderer draws
when nobody is seen, count as ours); ``rainbow`` when not, and the vivid pixels spread over at least
:data:`MIN_RAINBOW_HUES` (6) of twelve 30-degree hue sectors, each holding at least 2% of them. Everything else is
``photo``.

Hue rather than RGB distance, because thin strokes blend with the black around them and H.264's 4:2:0 chroma
subsampling mixes a one-pixel line's colour with its neighbours: both keep the hue but move the RGB values (at 128
pixels, crf 16, 48% of our drawn pixels lay within RGB distance 60 of a palette colour, 91% within 25 degrees of its
hue). Two colours, not three, because such strokes lose orange's saturation first (orange kept 4% of the vivid pixels
of a 128-pixel mp4, green and blue 38% and 44%).

Figures on the tests' frames (near-black share / vivid share / palette share / our colours / hue sectors):
our skeletons 0.92-0.98 / 0.49-1.0 / 0.85-1.0 / 2-3 / 3-6 (64 to 512 pixels, drawn and through mp4; the lowest vivid
share is a 64-pixel video of one-pixel strokes at crf 16, 0.93 at 512 pixels); rainbow
skeletons 0.88-0.96 / 0.89-1.0 / 0.46-0.50 / 3 / 10-12; photos: astronaut 0.19 / 0.36, camera 0.27 / 0, grace_hopper
0.39 / 0.35, coffee 0.10 / 0.75; the same photos half-size on black 0.77-0.85 near-black, but vivid shares of 0.36,
0, 0.35 (and palette shares 0.76 with one of our colours, 1.0, 0.62), and the coffee cup (vivid 0.75, palette 0.96)
has one of our colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FrameKind = Literal["ours", "rainbow", "photo"]

DARK_LEVEL = 40
MIN_CHROMA = 40
MIN_SATURATION = 0.6
HUE_TOLERANCE = 25.0
OUR_HUES = (30.0, 120.0, 210.0)
MIN_DARK_SHARE = 0.6
MIN_VIVID_SHARE = 0.4
MIN_PALETTE_SHARE = 0.75
MIN_COLOUR_SHARE = 0.05
MIN_RAINBOW_HUES = 6
RAINBOW_SECTOR_SHARE = 0.02
SAMPLED_FRAMES = 16


@dataclass(frozen=True)
class FrameColours:
    """The figures the rule reads (see the module docstring) and the verdict."""

    kind: FrameKind
    dark_share: float
    """Near-black pixels / all pixels."""
    vivid_share: float
    """Vivid pixels / drawn pixels (1 when nothing is drawn)."""
    palette_share: float
    """Vivid pixels of our hues / vivid pixels (1 when none)."""
    our_colours: int
    """How many of our three hues hold at least 5% of the vivid pixels (3 when none)."""
    hue_sectors: int
    """30-degree hue sectors holding at least 2% of the vivid pixels."""

    def describe(self) -> str:
        return (
            f"{self.dark_share:.0%} near-black pixels, {self.palette_share:.0%} of the coloured ones in our palette's hues, "
            f"{self.hue_sectors} hue sectors"
        )


def hues(pixels: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of ``(N, 3)`` RGB pixels (any numeric dtype; grey pixels get 0)."""
    rgb = pixels.astype(np.float64)
    top, bottom = rgb.max(axis=1), rgb.min(axis=1)
    span = np.where(top > bottom, top - bottom, 1.0)
    r, g, b = rgb.T
    hue = np.where(top == r, ((g - b) / span) % 6, np.where(top == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue * 60.0


def _sample(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be (T, H, W, 3) or (H, W, 3) RGB, got shape {frames.shape}")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), SAMPLED_FRAMES)).round().astype(int))
    return frames[picks]


def measure_frames(frames) -> FrameColours:
    """The figures and verdict of the rule (module docstring) on ``(T, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB frames."""
    pixels = _sample(frames).reshape(-1, 3)
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8) if pixels.dtype.kind == "f" else pixels
    top = pixels.max(axis=1)
    drawn = pixels[top > DARK_LEVEL]
    dark_share = 1.0 - len(drawn) / len(pixels)
    chroma = drawn.max(axis=1).astype(np.int16) - drawn.min(axis=1)
    chromatic = drawn[(chroma >= MIN_CHROMA) & (chroma >= MIN_SATURATION * drawn.max(axis=1))]
    vivid_share = len(chromatic) / len(drawn) if len(drawn) else 1.0
    hue = hues(chromatic)
    nearest = np.abs((hue[:, None] - np.asarray(OUR_HUES)[None] + 180.0) % 360.0 - 180.0)
    ours = nearest <= HUE_TOLERANCE
    palette_share = float(ours.any(axis=1).mean()) if len(chromatic) else 1.0
    colours = int((ours.mean(axis=0) >= MIN_COLOUR_SHARE).sum()) if len(chromatic) else 3
    counts = np.bincount((hue // 30).astype(int) % 12, minlength=12)
    sectors = int((counts >= RAINBOW_SECTOR_SHARE * max(len(chromatic), 1)).sum()) if len(chromatic) else 0
    skeleton_like = dark_share >= MIN_DARK_SHARE and vivid_share >= MIN_VIVID_SHARE
    if skeleton_like and palette_share >= MIN_PALETTE_SHARE and colours >= 2:
        kind: FrameKind = "ours"
    elif skeleton_like and sectors >= MIN_RAINBOW_HUES:
        kind = "rainbow"
    else:
        kind = "photo"
    return FrameColours(kind, float(dark_share), float(vivid_share), palette_share, colours, sectors)


def classify_frames(frames) -> FrameKind:
    """``"ours"``, ``"rainbow"`` or ``"photo"`` for ``(T, H, W, 3)`` or ``(H, W, 3)`` RGB frames (rule: module docstring)."""
    return measure_frames(frames).kind
