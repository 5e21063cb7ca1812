"""The toy world's shared formats: its named colours, its captions and its held-out evaluation spec.

Written by ``pipelines/build_toy_world.py``, read by evaluation (:mod:`evaluation.metrics.toy`),
so both sides agree on one definition without evaluation importing the pipelines.

The palette is the eight corners of the RGB cube: every two of them are at least
255 apart (Euclidean, RGB levels), the largest minimum distance eight colours can
have, so a colour survives JPEG/H.264 coding and imperfect generations and is still
nearest to its own name. A figure and its background always have different colours.

The evaluation spec (``eval/spec.json``, :func:`read_spec`): ``schema``
``"toy_eval_spec"``, ``schema_version`` 1, ``size``, ``fps``, ``palette`` (name -> RGB),
``caption_template``, ``figure_style`` (:class:`pose_extraction.figure.FigureStyle` fields),
``mask_tolerance``, ``held_out_pairs``, ``config`` and ``entries``: one per sequence with
``key``, ``set`` (``short`` or ``long``), ``prompt``, ``figure``, ``background`` (names and
``*_rgb``), ``held_out_pair``, ``frames``, ``fps``, ``width``, ``height``, ``seed``, and
``pose`` / ``oracle`` (paths relative to the spec's folder).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
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

SPEC_NAME = "spec.json"
SPEC_KIND = "toy_eval_spec"
SPEC_VERSION = 1


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
    if len(palette) < 2:
        raise ValueError("a palette needs at least two colours")
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


def read_spec(root: str | Path) -> dict:
    """The ``spec.json`` of an evaluation set (folder or file); ValueError for another kind or version."""
    path = Path(root)
    path = path / SPEC_NAME if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the evaluation set is missing or incomplete")
    spec = json.loads(path.read_text())
    if spec.get("schema") != SPEC_KIND or spec.get("schema_version") != SPEC_VERSION:
        raise ValueError(f"{path} is not a toy evaluation spec of version {SPEC_VERSION}")
    return spec


def reference(spec: Mapping, figure: str, background: str) -> dict:
    """The ``toy`` reference of a video of ``spec``'s world showing ``figure`` on ``background``: what the toy metrics
    need besides the pose (colours, the figure style its silhouettes are drawn with, the mask tolerance). Generation
    keeps it in the video's record (``settings.toy``), as the world's oracle records do."""
    palette = spec["palette"]
    for name in (figure, background):
        if name not in palette:
            raise ValueError(f"colour {name!r} is not in the spec's palette {list(palette)}")
    return {
        "figure": figure, "background": background,
        "figure_rgb": list(palette[figure]), "background_rgb": list(palette[background]),
        "figure_style": dict(spec["figure_style"]), "mask_tolerance": spec["mask_tolerance"],
    }  # fmt: skip
