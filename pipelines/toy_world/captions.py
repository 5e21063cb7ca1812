"""Named colours, captions that name them, and the split of colour pairs into training and held-out ones.

The palette is the eight corners of the RGB cube: every two of them are at least
255 apart (Euclidean, RGB levels), the largest minimum distance eight colours can
have, so a colour survives JPEG/H.264 coding and imperfect generations and is still
nearest to its own name. A figure and its background always have different colours.
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping, Sequence

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
"""Colour name -> RGB. Names are single common words, so text encoders know them."""

DEFAULT_TEMPLATE = "a {figure} figure on a {background} background"
"""The caption of a sample; ``{figure}`` and ``{background}`` are colour names."""


def palette_subset(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """The named colours ``names`` (in that order); ValueError for an unknown or repeated name, or fewer than two."""
    unknown = [n for n in names if n not in PALETTE]
    if unknown:
        raise ValueError(f"unknown colour(s) {unknown}; known: {sorted(PALETTE)}")
    if len(set(names)) != len(names):
        raise ValueError(f"colours repeat: {list(names)}")
    if len(names) < 2:
        raise ValueError("need at least two colours (a figure and a different background)")
    return {name: PALETTE[name] for name in names}


def min_distance(palette: Mapping[str, Sequence[int]]) -> float:
    """The smallest Euclidean RGB distance between two colours of ``palette``."""
    colours = np.asarray(list(palette.values()), dtype=np.float64)
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(colours, 2))


def check_template(template: str) -> str:
    """``template`` unchanged when it names both colours exactly once; ValueError otherwise."""
    for slot in ("{figure}", "{background}"):
        if template.count(slot) != 1:
            raise ValueError(f"caption template must contain {slot} exactly once: {template!r}")
    try:
        template.format(figure="red", background="blue")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"caption template {template!r} has other fields: {error}") from error
    return template


def make_caption(figure: str, background: str, template: str = DEFAULT_TEMPLATE) -> str:
    return template.format(figure=figure, background=background)


def parse_caption(caption: str, names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> tuple[str, str]:
    """``(figure, background)`` colour names of a caption made by :func:`make_caption`; ValueError if it is not one."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    parts = re.escape(template).replace(re.escape("{figure}"), f"(?P<figure>{alternatives})")
    parts = parts.replace(re.escape("{background}"), f"(?P<background>{alternatives})")
    match = re.fullmatch(parts, caption.strip())
    if match is None:
        raise ValueError(f"caption {caption!r} does not follow {template!r} with colours {list(names)}")
    return match["figure"], match["background"]


def colour_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered ``(figure, background)`` pair of different colours."""
    return [(f, b) for f in names for b in names if f != b]


def held_out_pairs(names: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` pairs kept out of training: a seeded derangement, so no colour is held out twice in one role.

    Pair ``i`` is ``(names[i'], names[p(i')])`` for a permutation ``p`` without fixed points; with
    ``count <= len(names)`` every colour still appears in training as a figure and as a background
    (for at least three colours), and the held-out prompts combine colours seen in both roles.
    """
    n = len(names)
    if not 0 <= count <= n:
        raise ValueError(f"held-out pairs must be between 0 and the number of colours ({n}), got {count}")
    if count == 0:
        return []
    rng = np.random.default_rng([seed, 0xC0105])
    while True:
        permutation = rng.permutation(n)
        if not np.any(permutation == np.arange(n)):
            break
    order = rng.permutation(n)[:count]
    return [(names[i], names[permutation[i]]) for i in sorted(order)]


def training_pairs(names: Sequence[str], held_out: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ordered pairs of :func:`colour_pairs` that are not held out."""
    excluded = {tuple(p) for p in held_out}
    return [p for p in colour_pairs(names) if p not in excluded]
