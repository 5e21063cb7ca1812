"""The split of colour pairs into training and held-out ones.

The named colours and captions are defined in :mod:`datasets.toy_world` (evaluation reads
them too); they are re-exported here for the builder's modules.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datasets.toy_world import (  # noqa: F401 - re-exported for the builder's modules
    DEFAULT_TEMPLATE, PALETTE, check_template, make_caption, min_distance, palette_subset, parse_caption,
)  # fmt: skip


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
