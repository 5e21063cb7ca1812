"""One command line for every entry point: a config dataclass, read by tyro, with config files and old spellings.

Every tool of the toolkit describes its options as a frozen config dataclass with a docstring under each field;
:func:`parse` turns the command line into that config:

1. ``--preset NAME`` (or the tool's own name for it, e.g. ``--profile``) picks the defaults, when the tool has
   named presets; a config file may name it too;
2. ``--config FILE.yaml`` (JSON works too: a config a run saved beside its outputs is a valid config file) sets
   any field, nested as the dataclasses nest (``optim: {lr: 1e-4}``); several files apply in order;
3. flags override both: ``--optim.lr 1e-4``, ``--model.pretrained PATH``.

Help (``--help``) lists every field with its default and its docstring. Spellings users already type keep working,
translated before tyro sees them: dashes or underscores, a field's bare name when no other field shares it
(``--lr`` for ``--optim.lr``), a nested field's path with dashes for dots (``--ray-address``), the alias in a field's ``metadata`` (``--data DIR`` for ``--data.root DIR``),
the renames a tool passes (``--ray-address``), ``--flag``, ``--no-flag`` and ``--flag true|false|yes|no|1|0`` for
booleans, ``none``/``null`` for optional fields, and a JSON object for ``dict`` fields. Errors (unknown flag, bad
value, a config's own check) end with tyro's message and exit status 2, before any work starts.

tyro is imported only inside :func:`parse`, so modules that define configs stay cheap to import on Ray workers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

Config = TypeVar("Config")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null")


CONFIG_HELP = (
    "\n\n--config FILE.yaml (repeatable): option values from a YAML or JSON file, nested as below (optim: {lr: 1e-4});"
    " a config.json a run saved is one. Flags override it."
)


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be read as a mapping of the config's fields."""


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One settable field: its dotted path, type hint and command-line alias."""

    path: str
    hint: Any
    alias: str | None

    @property
    def kind(self) -> str:
        """``bool``, ``optional``, ``dict``, ``sequence`` or ``value``: what the translation must know."""
        hint, origin = self.hint, typing.get_origin(self.hint)
        if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            return "dict" if inner and _is_dict(inner[0]) else "optional"
        if hint is bool:
            return "bool"
        if _is_dict(hint):
            return "dict"
        if origin in (tuple, list):
            return "sequence"
        return "value"


def _is_dict(hint) -> bool:
    return hint is dict or typing.get_origin(hint) is dict


@functools.cache
def leaves(cls) -> tuple[Leaf, ...]:
    """Every settable field of a (nested) config class, in declaration order."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            found += [dataclasses.replace(leaf, path=f"{f.name}.{leaf.path}") for leaf in leaves(hint)]
        else:
            found.append(Leaf(f.name, hint, f.metadata.get("alias")))
    return tuple(found)


def _canonical(flag: str) -> str:
    return flag.replace("-", "_")


@functools.cache
def _names(cls, renamed: tuple[tuple[str, str], ...]) -> dict[str, Leaf]:
    """Every accepted spelling (underscored, without ``--``) of every leaf."""
    table = {_canonical(leaf.path): leaf for leaf in leaves(cls)}
    by_path = dict(table)
    counts: dict[str, int] = {}
    for leaf in leaves(cls):
        counts[leaf.path.rsplit(".", 1)[-1]] = counts.get(leaf.path.rsplit(".", 1)[-1], 0) + 1
    groups = {f.name for f in dataclasses.fields(cls)}
    for leaf in leaves(cls):
        short = leaf.path.rsplit(".", 1)[-1]
        if "." in leaf.path and counts[short] == 1 and short not in groups:
            table.setdefault(short, leaf)
        if "." in leaf.path:  # the flat spelling of a nested field: --ray-address for --ray.address
            table.setdefault(_canonical(leaf.path.replace(".", "_")), leaf)
        if leaf.alias:
            table[_canonical(leaf.alias)] = leaf
    for old, new in renamed:
        table[_canonical(old.lstrip("-"))] = by_path[_canonical(new)]
    return table


def _values_after(argv: Sequence[str], start: int) -> int:
    """Index of the first token after ``start`` that is a flag (or the end)."""
    end = start
    while end < len(argv) and not (argv[end].startswith("--") or (argv[end].startswith("-") and argv[end][1:2].isalpha())):
        end += 1
    return end


def translate(cls, argv: Sequence[str], renamed: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` in the canonical spelling tyro reads (``--dotted.path VALUE ...``); unknown flags pass as they are.
    A list option given twice (``--allow-host A --allow-host B``) is given once with all the values."""
    renamed = dict(renamed or {})
    short = {old: new for old, new in renamed.items() if not old.startswith("--")}
    table = _names(cls, tuple(sorted((old, new) for old, new in renamed.items() if old.startswith("--"))))
    out: list[str | list[str]] = []
    sequences: dict[str, list[str]] = {}  # a list option's values, held by reference inside ``out``
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in short:
            token = f"--{short[token]}"
        if not token.startswith("--") or token == "--":
            out.append(token)
            i += 1
            continue
        name, has_inline, inline = token[2:].partition("=")
        end = _values_after(argv, i + 1)
        values = [inline] if has_inline else list(argv[i + 1 : end])
        negated = name.startswith("no-") or name.startswith("no_")
        leaf = table.get(_canonical(name)) or (table.get(_canonical(name[3:])) if negated else None)
        if leaf is None:
            out += [token, *argv[i + 1 : end]]
        elif leaf.kind == "sequence" and leaf.path in sequences:
            sequences[leaf.path] += values
        else:
            values = _translate_values(leaf, values, negated=negated and _canonical(name) not in table)
            if leaf.kind == "sequence":
                sequences[leaf.path] = values
            out += [f"--{leaf.path}", values]
        i = end
    return [token for item in out for token in ([item] if isinstance(item, str) else item)]


def _translate_values(leaf: Leaf, values: list[str], *, negated: bool) -> list[str]:
    kind = leaf.kind
    if kind == "bool":
        if negated:
            return ["False", *values]
        if not values:
            return ["True"]
        word = values[0].strip().lower()
        head = "True" if word in _TRUE else "False" if word in _FALSE else values[0]
        return [head, *values[1:]]
    if kind in ("optional", "dict") and len(values) == 1 and values[0].strip().lower() in _NONE:
        return ["None"]
    return values


def _flatten(values: Mapping[str, Any], dict_fields: set[str], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted path, value)`` of a nested mapping; the value of a ``dict`` field stays whole."""
    items = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and _canonical(path) not in dict_fields:
            items += _flatten(value, dict_fields, f"{path}.")
        else:
            items.append((path, value))
    return items


def _as_tokens(value: Any) -> list[str]:
    if value is None:
        return ["None"]
    if isinstance(value, bool):
        return [str(value)]
    if isinstance(value, Mapping):
        return [json.dumps(dict(value))]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def read_config_file(path: str | Path) -> dict:
    """A YAML (or JSON) config file as a mapping; a saved config's ``kind`` key is dropped, and a builder's run record
    (``config.json`` beside its shards: ``schema_version`` with the command's settings under ``config``) gives those
    settings."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigFileError(f"cannot read config file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} must hold a mapping of option names to values, not {type(data).__name__}")
    data.pop("kind", None)
    if "schema_version" in data:  # a run record: the command's settings are one section of it
        if not isinstance(data.get("config"), dict):
            raise ConfigFileError(
                f"{path} records a run but not its command's settings (an older version wrote it): pass them as flags"
            )
        return data["config"]
    return data


def file_arguments(cls, data: Mapping[str, Any]) -> list[str]:
    """A config file's values as flags (so tyro checks their names and types as it checks the command line)."""
    dict_fields = {_canonical(leaf.path) for leaf in leaves(cls) if leaf.kind == "dict"}
    tokens: list[str] = []
    for path, value in _flatten(data, dict_fields):
        tokens += [f"--{path}", *_as_tokens(value)]
    return tokens


def _take(argv: list[str], flag: str) -> list[str]:
    """Remove every ``flag VALUE`` / ``flag=VALUE`` from ``argv`` (in place); their values in order."""
    found, kept, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token == flag and i + 1 < len(argv):
            found.append(argv[i + 1])
            i += 2
        elif token.startswith(flag + "="):
            found.append(token.partition("=")[2])
            i += 1
        else:
            kept.append(token)
            i += 1
    argv[:] = kept
    return found


def _json_rule(registry):
    """Bare ``dict`` fields take a JSON object on the command line (tyro has no form for untyped dicts)."""
    import tyro

    @registry.primitive_rule
    def json_object(type_info):
        hint = type_info.type
        if hint is not dict and typing.get_origin(hint) is not dict:
            return None
        if typing.get_origin(hint) is dict and typing.get_args(hint) != (str, typing.Any):
            return None

        def parse_json(args: list[str]) -> dict:
            value = json.loads(args[0])
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {args[0]!r}")
            return value

        return tyro.constructors.PrimitiveConstructorSpec(
            nargs=1, metavar="JSON", instance_from_str=parse_json,
            is_instance=lambda value: isinstance(value, dict), str_from_instance=lambda value: [json.dumps(value)],
        )


def _one_line(event) -> str | None:
    """One line for a tyro parse failure (None: a kind this version does not know; tyro then prints its own box)."""
    from tyro import _errors as errors

    def flag(argument) -> str:
        return "/".join(argument.lowered.name_or_flags)

    if isinstance(event, errors.InstantiationFailure):
        return event.message if event.argument is None else f"argument {flag(event.argument)}: {event.message}"
    if isinstance(event, errors.UnrecognizedArgs):
        return f"unrecognized arguments: {' '.join(event.tokens)} (--help lists every option)"
    if isinstance(event, errors.InvalidChoice):
        return f"argument {flag(event.argument)}: invalid choice {event.value!r} (choose from {', '.join(event.choices)})"
    if isinstance(event, errors.BadValue):
        return f"argument {flag(event.argument)}: {event.reason}"
    if isinstance(event, errors.MissingArgs):
        return "the following arguments are required: " + ", ".join(a.arg.lowered.name_or_flags[0] for a in event.missing_arguments)
    return None


class _Rejected(Exception):
    def __init__(self, message: str, instantiation: bool):
        super().__init__(message)
        self.instantiation = instantiation


def _hook(event) -> None:
    from tyro import _errors as errors

    message = _one_line(event)
    if message is not None:
        raise _Rejected(message, isinstance(event, errors.InstantiationFailure))


def parse(
    cls: type[Config],
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    description: str | None = None,
    defaults: Config | None = None,
    presets: Mapping[str, Mapping[str, Any]] | Callable[[str], Config] | None = None,
    preset_flag: str = "--preset",
    default_preset: str | None = None,
    renamed: Mapping[str, str] | None = None,
    config_error: type[Exception] | None = None,
) -> Config:
    """The config of a command line (see the module docstring). Its defaults are ``defaults`` (else the dataclass's
    own), or with ``presets`` the preset that ``preset_flag`` (or a config file's key of that name, else
    ``default_preset``) picks: ``presets`` maps names to values applied like a first config file, or is a function
    of the name returning a config. ``renamed`` maps old flags (``--ray-address``, ``-v``) to field paths.

    A bad command line prints ``PROG: error: ...`` (one line) and exits with status 2, before any work starts; with
    ``config_error``, a config's own check (its ``__post_init__``) raises that exception instead, for the caller to
    report."""
    import tyro

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        files = [read_config_file(path) for path in _take(args, "--config")]
        base = defaults
        if presets is not None:
            key = preset_flag.lstrip("-")
            named = [data.pop(key, None) for data in files] + _take(args, preset_flag)
            name = ([n for n in named if n] or [default_preset])[-1]
            if callable(presets):
                chosen = presets(name)
            elif name in presets:
                chosen = presets[name]
            else:
                raise ConfigFileError(f"unknown {key} {name!r}; valid: {', '.join(presets)}")
            if isinstance(chosen, Mapping):  # a preset of values applies like a first config file
                files.insert(0, dict(chosen))
            else:
                base = chosen
        tokens = [token for data in files for token in file_arguments(cls, data)]
    except ValueError as error:  # an unreadable config file, an unknown preset, a preset that refuses this tool
        if config_error is not None and isinstance(error, config_error):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    registry = tyro.constructors.ConstructorRegistry()
    _json_rule(registry)
    try:
        # tyro's parse-error hook is private API (tyro is pinned in constraints.txt); without it tyro prints its own box.
        with registry, tyro._errors.on_parse_error(_hook):
            return tyro.cli(
                cls, args=translate(cls, tokens, renamed) + translate(cls, args, renamed), default=base, prog=prog,
                description=(description or cls.__doc__ or "") + CONFIG_HELP, config=(tyro.conf.FlagConversionOff,),
            )
    except _Rejected as rejected:
        if rejected.instantiation and config_error is not None:
            raise config_error(str(rejected)) from None
        print(f"{prog}: error: {rejected}", file=sys.stderr)
        raise SystemExit(2) from None
