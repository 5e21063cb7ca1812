"""Metric names -> classes. ``--metrics`` picks any subset; an unknown name lists the valid ones."""

from __future__ import annotations

from typing import Sequence

METRICS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in METRICS and METRICS[cls.name] is not cls:
        raise ValueError(f"metric {cls.name!r} registered twice")
    METRICS[cls.name] = cls
    return cls


def metric_names() -> list[str]:
    _load_builtin()
    return sorted(METRICS)


def check_metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` unchanged when all are registered; otherwise a ValueError listing the valid ones."""
    valid = metric_names()
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; valid metrics: {', '.join(valid)}")
    return tuple(names)


def build_metrics(names: Sequence[str], context) -> list:
    """One instance per name, sharing ``context`` (models are loaded on first use, not here)."""
    return [METRICS[name](context) for name in check_metric_names(names)]


def _load_builtin() -> None:
    """Import the metric modules shipped here (each registers itself)."""
    from evaluation.metrics import clip_score, flicker, frame_consistency, fvd, pose_ap, toy, warping  # noqa: F401
