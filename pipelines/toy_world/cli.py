"""The toy-world command line, generated from :class:`ToyWorldConfig` (help = the field docstrings), with presets."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import get_args, get_origin

from pipelines.hdvila.cli import field_docs
from pipelines.toy_world.config import PRESETS, ToyWorldConfig


def _none_or(kind):
    def convert(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    convert.__name__ = kind.__name__
    return convert


def _argument(hint) -> dict:
    """argparse keywords for a field's type: scalars, ``X | None``, ``tuple[X, ...]`` and ``tuple[X, X]``."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if type(None) in get_args(hint) and len(args) == 1:
        return {"type": _none_or(args[0]), "metavar": args[0].__name__.upper() + "|none"}
    if get_origin(hint) is tuple:
        items = get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return {"type": items[0], "nargs": "+"}
        return {"type": items[0], "nargs": len(items)}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no command-line form for {hint}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.build_toy_world",
        description="Draw a toy world of posed humanoid figures: LAION-Pose shards (stage 1), clip shards (stage 2) "
        "and a held-out evaluation set.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help=f"named defaults: {PRESETS}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    hints, docs = typing.get_type_hints(ToyWorldConfig), field_docs(ToyWorldConfig)
    for field in dataclasses.fields(ToyWorldConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        parser.add_argument(flag, dest=field.name, default=None, help=f"{docs.get(field.name, '')} (default: {default})",
                            required=field.name == "output", **_argument(hints[field.name]))  # fmt: skip
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[ToyWorldConfig, argparse.Namespace]:
    """A validated :class:`ToyWorldConfig` from the command line (argparse exits with a message on bad values)."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    values = dict(PRESETS[namespace.preset])
    for field in dataclasses.fields(ToyWorldConfig):
        value = getattr(namespace, field.name)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    try:
        config = ToyWorldConfig(**values)
    except ValueError as error:
        parser.error(str(error))
    return config, namespace
