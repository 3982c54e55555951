"""A :class:`ViGOSConfig` from a YAML file and command-line overrides, each value read as YAML reads it."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vigos.errors import ConfigError


def _config_fields() -> dict[str, Any]:
    from vigos.training.config import ViGOSConfig

    hints = typing.get_type_hints(ViGOSConfig)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(ViGOSConfig) if f.init}


def _unknown_key(key: Any, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `vigos train --help-options` to list the options."
    return ConfigError(f"unknown option {key!r} in {where}.{hint}")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no tag builds a Python object) with YAML 1.2's plain scalars.

    YAML 1.1, PyYAML's default, reads ``no``/``off``/``yes``/``on`` as booleans
    (``save_strategy: no`` became False), ``1e-5`` as text (it wants ``1.0e-5``),
    ``010`` as octal 8 and ``2024-01-01`` as a date. A config file and a
    command-line value are both read with this loader, so the same text means
    the same thing in both places.
    """


_ConfigLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NULL_WORDS = ("none", "null")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: where in the text and what YAML found wrong there."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}{f' ({context})' if context else ''}".split())


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option: value mapping of a YAML config file; a :class:`ConfigError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} not found")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory; name a YAML file in it (e.g. configs/tiny.yaml)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {error.strerror or error}") from None
    try:
        loaded = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(error)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
    return loaded


def _kinds(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _takes_text(kind: Any) -> bool:
    return any(isinstance(k, type) and issubclass(k, str) for k in _kinds(kind))


def _describe(kind: Any) -> str:
    names = []
    for k in _kinds(kind):
        origin = typing.get_origin(k)
        if k is type(None):
            name = "null"
        elif k is bool:
            name = "true or false"
        elif isinstance(k, type) and issubclass(k, str):
            name = "text"
        elif origin is list:
            name = "a list"
        elif k is dict or origin is dict:
            name = "a mapping"
        elif origin is typing.Literal:
            name = " or ".join(repr(a) for a in typing.get_args(k))
        else:
            name = getattr(k, "__name__", str(k))
        if name not in names:
            names.append(name)
    return " or ".join(names)


def _as_is(value: Any, kind: Any) -> bool:
    """Whether ``value`` already has type ``kind`` (one alternative of an option's type)."""
    origin = typing.get_origin(kind)
    if kind is typing.Any:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value)
    if kind is dict or origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(kind))
    return isinstance(kind, type) and isinstance(value, kind)


def _converted(value: Any, kind: Any) -> Any:
    """``value`` turned into type ``kind``; ValueError where it does not read as one."""
    origin = typing.get_origin(kind)
    if isinstance(value, bool) and kind in (int, float):
        raise ValueError
    if kind is bool:
        word = str(value).strip().lower()
        if word not in _TRUE_WORDS + _FALSE_WORDS:
            raise ValueError
        return word in _TRUE_WORDS
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            return int(value)
        return int(str(value).strip())
    if kind is float:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    if isinstance(kind, type) and issubclass(kind, str) and isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if origin is list and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if origin is list and _as_is(value, kind):
        return [str(item) for item in value] if typing.get_args(kind) == (str,) else value
    raise ValueError


def convert_value(key: str, value: Any, kind: Any, where: str) -> Any:
    """A value as YAML read it, checked against option ``key``'s type ``kind`` and converted to it.

    The one rule for a config file and the command line: null (and the words
    none/null where the option takes no text) is None; numbers may be written
    as text (``1e-5``); booleans as true/false/yes/no/on/off/1/0; a list as a
    YAML list or as comma-separated text (``report_to: tensorboard,wandb``).
    """
    kinds = _kinds(kind)
    takes_none = type(None) in kinds
    if value is None or (
        isinstance(value, str) and value.strip().lower() in _NULL_WORDS and takes_none and not _takes_text(kind)
    ):
        if takes_none:
            return None
        raise ConfigError(f"option {key!r} in {where}: needs {_describe(kind)}, not null")
    lists = [k for k in kinds if typing.get_origin(k) is list]
    if lists and isinstance(value, str) and "," in value:
        return _converted(value, lists[0])
    for k in kinds:  # the value's own type first: 2 stays an int where int or text is taken
        if _as_is(value, k):
            return _converted(value, k) if k in lists else value
    for k in kinds:
        if k is type(None):
            continue
        try:
            return _converted(value, k)
        except (ValueError, TypeError):
            continue
    hint = "; put the text in quotes" if _takes_text(kind) and isinstance(value, (dict, list)) else ""
    raise ConfigError(f"option {key!r} in {where}: cannot read {value!r} as {_describe(kind)}{hint}")


def _command_line_value(key: str, raw: str, kind: Any) -> Any:
    """A command-line value, read as the same text in the config file would be."""
    try:
        value = yaml.load(raw, Loader=_ConfigLoader)
    except yaml.YAMLError as error:
        if _takes_text(kind):
            return raw  # see below
        raise ConfigError(f"option {key!r} in the command line: cannot read {raw!r}: {_yaml_problem(error)}") from None
    try:
        return convert_value(key, value, kind, "the command line")
    except ConfigError:
        # The shell already delimits the value: where the option takes text, text that YAML cannot
        # read or reads as something else ("Q: {question}" is a mapping to YAML) is meant as itself.
        if _takes_text(kind):
            return raw
        raise


def parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs into a dict of raw strings."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: overrides take the form --key value")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            index += 1
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
            value = tokens[index + 1]
            index += 2
        else:
            raise ConfigError(f"option --{key} needs a value")
        overrides[key.replace("-", "_")] = value
    return overrides


def load_config(path: str | Path | None, overrides: dict[str, str] | None = None):
    """Build a :class:`ViGOSConfig` from a YAML file and command-line overrides (raw text, read as YAML)."""
    from vigos.training.config import ViGOSConfig

    fields = _config_fields()
    values: dict[str, Any] = {}
    if path is not None:
        for key, value in read_config_file(path).items():
            if key not in fields:
                raise _unknown_key(key, list(fields), str(path))
            values[key] = convert_value(key, value, fields[key], str(path))
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise _unknown_key(key, list(fields), "the command line")
        values[key] = _command_line_value(key, raw, fields[key])
    try:
        return ViGOSConfig(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid configuration: {error}") from None
