"""The command line of the HD-VILA builder, generated from the config dataclasses (help = the field docstrings).

Every field of :class:`SourceConfig`, :class:`CutConfig` and the top level of
:class:`HdvilaConfig` is a ``--flag-name``; ``--ray-address``,
``--ray-num-cpus`` and ``--ray-temp-dir`` set the :class:`RayConfig`; every field
of :class:`CaptionConfig` is a ``--caption-<field>`` (``--caption-enabled`` turns
captioning on). A named ``--profile`` sets defaults that explicit flags override.
``recaption`` as the first argument captions an existing clip folder
(:class:`RecaptionConfig`, :func:`parse_recaption_config`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Literal, get_args, get_origin

from pipelines.hdvila.config import CaptionConfig, CutConfig, HdvilaConfig, RecaptionConfig, SourceConfig
from pipelines.ray_runtime import RayConfig

PROFILES: dict[str, dict] = {
    "default": {},
    "train512": {"size": 512, "crf": 18},
    "train512-8fps": {"size": 512, "fps": 8.0, "crf": 18},
    "fast-copy": {"mode": "copy"},
}
"""Named defaults: ``train512`` keeps the source rate at 512x512 (the readers sample frames with a stride), ``fast-copy``
stream-copies."""

_RAY_FIELDS = ("address", "num_cpus", "temp_dir")
_COMPOSED = ("source", "cut", "ray", "caption")


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _parser_for(hint):
    """``(type, choices, nargs-less optional?)`` for a field's type hint."""
    args = [a for a in get_args(hint) if a is not type(None)]
    optional = type(None) in get_args(hint)
    base = args[0] if optional and len(args) == 1 else hint
    if get_origin(base) is Literal:
        return str, list(get_args(base)), optional
    if base in (int, float, str):
        return base, None, optional
    raise TypeError(f"no command-line form for {hint}")


def _none_or(kind):
    def convert(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    convert.__name__ = kind.__name__
    return convert


def _add_fields(group, cls, skip=(), prefix="") -> None:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name in _COMPOSED:
            continue
        flag = "--" + (prefix + field.name).replace("_", "-")
        dest = prefix + field.name
        hint = hints[field.name]
        help_text = docs.get(field.name, "").replace("%", "%%")  # argparse formats help with %
        if hint is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind, choices, optional = _parser_for(hint)
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if optional:
            help_text += " ('none' for None)"
        group.add_argument(
            flag, dest=dest, type=_none_or(kind) if optional else kind, choices=choices, default=None,
            required=required and not prefix, help=help_text,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_hdvila_clips.py",
        description="Cut HD-VILA spans into WebDataset clip shards (mp4 + txt + json), a parquet index and stats.json, on Ray.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default", help=f"named defaults: {PROFILES}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_fields(parser.add_argument_group("inputs and planning"), SourceConfig)
    _add_fields(parser.add_argument_group("cutting and encoding"), CutConfig)
    _add_fields(parser.add_argument_group("captioning (off unless --caption-enabled)"), CaptionConfig, prefix="caption_")
    _add_fields(parser.add_argument_group("job"), HdvilaConfig)
    _add_ray(parser)
    return parser


def _add_ray(parser: argparse.ArgumentParser) -> None:
    ray_group = parser.add_argument_group("ray")
    _add_fields(ray_group, RayConfig, skip=tuple(f.name for f in dataclasses.fields(RayConfig) if f.name not in _RAY_FIELDS), prefix="ray_")


def _values(namespace: argparse.Namespace, cls, prefix: str = "", defaults: dict | None = None) -> dict:
    values = dict(defaults or {})
    for field in dataclasses.fields(cls):
        value = getattr(namespace, prefix + field.name, None)
        if value is not None:
            values[field.name] = value
    return {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(cls)}}


def parse_config(argv: list[str] | None = None) -> tuple[HdvilaConfig, argparse.Namespace]:
    """Parse the command line into a validated :class:`HdvilaConfig` (argparse exits with a message on bad values)."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        config = HdvilaConfig(
            source=SourceConfig(**_values(namespace, SourceConfig)),
            cut=CutConfig(**_values(namespace, CutConfig, defaults=PROFILES[namespace.profile])),
            caption=CaptionConfig(**_values(namespace, CaptionConfig, prefix="caption_")),
            ray=RayConfig(**_values(namespace, RayConfig, prefix="ray_")),
            **_values(namespace, HdvilaConfig),
        )
    except ValueError as error:
        parser.error(str(error))
    return config, namespace


def build_recaption_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_hdvila_clips.py recaption",
        description="Caption an existing clip folder (never written) into new clip shards or caption parquet tables, on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_fields(parser.add_argument_group("job"), RecaptionConfig)
    _add_fields(parser.add_argument_group("captioning"), CaptionConfig, skip=("enabled",), prefix="caption_")
    _add_ray(parser)
    return parser


def parse_recaption_config(argv: list[str] | None = None) -> tuple[RecaptionConfig, argparse.Namespace]:
    """Parse ``recaption``'s arguments into a validated :class:`RecaptionConfig`."""
    parser = build_recaption_parser()
    namespace = parser.parse_args(argv)
    try:
        config = RecaptionConfig(
            caption=CaptionConfig(**{**_values(namespace, CaptionConfig, prefix="caption_"), "enabled": True}),
            ray=RayConfig(**_values(namespace, RayConfig, prefix="ray_")),
            **_values(namespace, RecaptionConfig),
        )
    except ValueError as error:
        parser.error(str(error))
    return config, namespace
