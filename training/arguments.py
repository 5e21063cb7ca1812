"""A command line generated from a config dataclass: every field is a flag.

Each leaf field gets a dotted flag (``--optim.lr 1e-4``, ``--data.num-frames 8``),
a flat flag when its name is unique in the tree (``--lr 1e-4``,
``--max-steps 10``), and the alias named in its ``metadata`` (``--data``,
``--output``, ``--init``). Underscores and dashes are both accepted. Help
text is the field's docstring, read from the class source. ``--preset`` picks
the defaults; the other flags override them.

Values: ``--flag true|false`` (a bare ``--flag`` means true), numbers,
strings, ``none`` for optional fields, one or more values for tuples, and the
listed choices for ``Literal`` fields, a JSON object for ``dict`` fields.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from typing import Any, Callable

from training.config import PRESETS, ConfigError, TrainConfig
from training.presets import preset


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal written under each field in the class body (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    hint: Any
    default: Any
    doc: str
    alias: str | None


def _leaves(config, prefix: tuple[str, ...] = ()) -> list[_Leaf]:
    hints = typing.get_type_hints(type(config))
    docs = field_docs(type(config))
    leaves = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            leaves += _leaves(value, prefix + (f.name,))
        else:
            leaves.append(_Leaf(prefix + (f.name,), hints[f.name], value, docs.get(f.name, ""), f.metadata.get("alias")))
    return leaves


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _argument_kwargs(hint) -> dict:
    """argparse keyword arguments for one type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported config type {hint}")
        kwargs = _argument_kwargs(inner[0])
        kwargs["type"] = _optional(kwargs.get("type", str))
        kwargs.pop("choices", None)
        return kwargs
    if origin is typing.Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if origin is tuple:
        element = args[0]
        nargs = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        return {"type": _argument_kwargs(element)["type"], "nargs": nargs}
    if hint is bool:
        return {"type": _parse_bool, "nargs": "?", "const": True}
    if hint in (int, float, str):
        return {"type": hint}
    if hint is dict or origin is dict:
        return {"type": _json_object}
    raise TypeError(f"unsupported config type {hint}")


def _flag_names(leaf: _Leaf, unique: set[str]) -> list[str]:
    dotted = ".".join(leaf.path)
    names = ["--" + dotted.replace("_", "-"), "--" + dotted]
    name = leaf.path[-1]
    if len(leaf.path) > 1 and name in unique:
        names += ["--" + name.replace("_", "-"), "--" + name]
    if leaf.alias:
        names.append("--" + leaf.alias)
    return list(dict.fromkeys(names))


def build_parser(config: TrainConfig, *, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose flags are the leaves of ``config``; defaults shown are ``config``'s values."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    leaves = _leaves(config)
    counts: dict[str, int] = {}
    for leaf in leaves:
        counts[leaf.path[-1]] = counts.get(leaf.path[-1], 0) + 1
    top = {leaf.path[0] for leaf in leaves if len(leaf.path) == 1}
    aliases = {leaf.alias for leaf in leaves if leaf.alias}
    unique = {name for name, count in counts.items() if count == 1 and name not in top | aliases}
    for leaf in leaves:
        kwargs = _argument_kwargs(leaf.hint)
        if leaf.path == ("preset",):
            kwargs["choices"] = list(PRESETS)
        shown = " ".join(map(str, leaf.default)) if isinstance(leaf.default, tuple) else leaf.default
        if "choices" not in kwargs:
            kwargs["metavar"] = leaf.path[-1].upper()
        parser.add_argument(
            *_flag_names(leaf, unique), dest=".".join(leaf.path), help=f"{leaf.doc} (default: {shown!s})", **kwargs
        )
    return parser


def apply_overrides(config, overrides: dict[str, Any]):
    """``config`` with dotted-path overrides applied (``{"optim.lr": 1e-4}``); configs re-validate themselves."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in overrides.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = tuple(value) if isinstance(value, list) else value
    for head, values in nested.items():
        direct[head] = apply_overrides(getattr(config, head), values)
    return dataclasses.replace(config, **direct) if direct else config


def parse_config(argv: list[str] | None, *, stage: int, prog: str, description: str) -> TrainConfig:
    """The resolved config of a stage's command line: the ``--preset`` (default ``tiny``) plus every override.

    Raises :class:`ConfigError` for an unknown preset or an invalid value; argparse exits on malformed flags.
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--preset", default="tiny")
    known, _ = early.parse_known_args(argv)
    base = preset(stage, known.preset)
    parser = build_parser(base, prog=prog, description=description)
    namespace = vars(parser.parse_args(argv))
    namespace.pop("preset", None)
    try:
        return apply_overrides(base, namespace)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error
