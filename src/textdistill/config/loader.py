"""Loading configs: YAML files + ``key.sub=value`` overrides -> typed dataclasses, every problem at once.

Precedence: dataclass defaults < YAML file < command-line overrides. Values of overrides are parsed as YAML
scalars (``train.lr=3e-5`` is a float, ``data.labels=[neg,pos]`` a list). Unknown keys, wrong types and
malformed overrides are collected into one :class:`~textdistill.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from textdistill.errors import ConfigError, clip, shorten

T = TypeVar("T")

MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings, counted with YAML aliases expanded) a config may hold. Real
configs hold a few hundred; the limit stops alias bombs (``&a [*b, *b, ...]``) that a few lines of YAML can
grow into billions of values."""

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8
_repr.maxlevel = 3


def _show(value: Any) -> str:
    """A bounded repr for messages (a value may be huge or deeply nested)."""
    return _repr.repr(value)


def _too_many_values(value: Any, limit: int = MAX_VALUES) -> bool:
    """True when ``value`` holds more than ``limit`` values, aliases expanded (stops early; no recursion)."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return False


def _safe_load(text: str) -> Any:
    """``yaml.safe_load``, with every failure as one exception type.

    PyYAML reports bad input with YAMLError but also with ValueError (``2001-02-30``, ``!!int abc``, integers
    longer than Python's 4300-digit limit), KeyError (``!!bool maybe``), IndexError, AttributeError and
    RecursionError (deep nesting): all are input problems here.

    Raises:
        yaml.YAMLError: the input is not valid YAML (other exception types are wrapped in a YAMLError).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply") from None
    except (ValueError, KeyError, IndexError, AttributeError, TypeError, OverflowError) as e:
        raise yaml.YAMLError(f"a value cannot be read ({type(e).__name__}: {_show(str(e))})") from None
    if _too_many_values(data):
        raise yaml.YAMLError(f"the document holds more than {MAX_VALUES} values (YAML aliases expanded)")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (``yaml.safe_load``: no object construction).

    Raises:
        ConfigError: the file is missing or unreadable, not UTF-8, not valid YAML, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a YAML file")
    try:
        data = _safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of keys (e.g. 'train: {{lr: 5e-5}}'), "
            f"got a {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {shorten(text)} has no '='; write key.sub=value, e.g. train.lr=3e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"override {shorten(text)} has an empty key; write key.sub=value, e.g. train.lr=3e-5"
        )
    try:
        value = _safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: the text itself (a string field accepts it, others report the type)
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a nested mapping (lists indexed by integers: objective.0.weight=2)."""
    problems: list[str] = []
    for text in overrides:
        try:
            path, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        _set_path(data, path, value, f"override {shorten(text)}", problems)
    if problems:
        raise ConfigError(problems)
    return data


def apply_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"dotted.key": value}`` in a nested mapping, values taken as they are (not parsed as YAML).

    For values that are already typed, such as file paths from command-line flags or keyword arguments: as a
    ``key=value`` override, a path like ``runs/yes``, ``~``, ``[exp]/out`` or ``a #1`` would be read as YAML.
    """
    problems: list[str] = []
    for key, value in values.items():
        _set_path(data, key.split("."), value, f"{key}={_show(value)}", problems)
    if problems:
        raise ConfigError(problems)
    return data


def _set_path(data: dict[str, Any], path: list[str], value: Any, what: str, problems: list[str]) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            idx = _list_index(part, node, ".".join(path[: i + 1]), problems)
            if idx is None:
                return
            node = node[idx]
        elif isinstance(node, dict):
            if node.get(part) is None:  # missing or null (e.g. layer_map): start a mapping
                node[part] = {}
            node = node[part]
        else:
            # A scalar where the key needs a mapping: say so instead of silently replacing the value.
            problems.append(
                f"{what}: {'.'.join(path[:i])} is {_show(node)}, not a mapping, so it has no key {part!r}"
            )
            return
    last = path[-1]
    if isinstance(node, list):
        idx = _list_index(last, node, ".".join(path), problems)
        if idx is not None:
            node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        problems.append(
            f"{what}: {'.'.join(path[:-1])} is {_show(node)}, not a mapping, so it has no key {last!r}"
        )


def _list_index(part: str, node: list, key: str, problems: list[str]) -> int | None:
    try:
        idx = int(part)
    except ValueError:
        problems.append(
            f"{key}: {part!r} is not a list index (the list has {len(node)} items: 0..{len(node) - 1})"
        )
        return None
    if not -len(node) <= idx < len(node):
        problems.append(f"{key}: index {idx} is out of range (the list has {len(node)} items)")
        return None
    return idx


def from_dict(cls: type[T], data: Any, *, prefix: str | None = None, problems: list[str] | None = None) -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types; collect problems.

    Args:
        cls: the dataclass to build.
        data: its mapping (missing keys keep their defaults).
        prefix: how problems name the root: ``None`` -> the class name (``TrainConfig.lr``), ``""`` ->
            bare keys as a user writes them in YAML and overrides (``train.lr``), else ``prefix.lr``.
        problems: a list to append problems to instead of raising.

    Raises:
        ConfigError: listing every unknown key and wrongly typed value (when ``problems`` is None).
    """
    own = problems is None
    problems = [] if own else problems
    result = _convert(cls, data, cls.__name__ if prefix is None else prefix, problems)
    if own and problems:
        raise ConfigError(problems)
    return result


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, key, problems)
        for a in non_none:
            sub: list[str] = []
            out = _convert(a, value, key, sub)
            if not sub:
                return out
        problems.append(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            problems.append(
                f"{key or 'config'}: expected a mapping of {tp.__name__} fields, got {_show(value)}"
            )
            return tp()
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        kwargs = {}
        for k, v in value.items():
            sub_key = f"{key}.{k}" if key else str(k)
            if k not in fields:
                close = difflib.get_close_matches(str(k), list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{clip(sub_key)}: unknown key{hint} (valid keys: {', '.join(fields)})")
                continue
            kwargs[k] = _convert(hints[k], v, sub_key, problems)
        return tp(**kwargs)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_show(value)}")
            return []
        return [_convert(item_tp, v, f"{key}.{i}", problems) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            problems.append(f"{key}: expected a list of {len(args)} values, got {_show(value)}")
            return tuple()
        if args and args[-1] is not Ellipsis and len(value) != len(args):
            problems.append(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(value)
        item_types = (
            [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args) or [Any] * len(value)
        )
        return tuple(
            _convert(t, v, f"{key}.{i}", problems) for i, (t, v) in enumerate(zip(item_types, value))
        )
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_show(value)}")
            return {}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {_show(value)}")
        return False
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        problems.append(f"{key}: expected an integer, got {_show(value)}")
        return 0
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads '5e-5' (no dot) as a string
            except ValueError:
                pass
        problems.append(f"{key}: expected a number, got {_show(value)}")
        return 0.0
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{key}: expected a string, got {_show(value)}")
        return ""
    return value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def to_dict(obj: Any) -> Any:
    """A dataclass (tree) as plain dicts/lists, ready for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    """YAML text of a config (dataclass or mapping), keys in schema order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge of two mappings; ``update`` wins. Lists are replaced, not merged."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, cls: type[T] | None = None
) -> T:
    """Load a config: defaults < YAML at ``path`` < ``overrides``.

    Args:
        path: optional YAML file.
        overrides: ``key.sub=value`` strings.
        cls: the dataclass to build (default :class:`textdistill.config.schema.Config`).

    Raises:
        ConfigError: every problem found, at once.
    """
    return resolve_config(read_yaml(path) if path else {}, overrides, cls)


def resolve_config(
    data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    cls: type[T] | None = None,
    *,
    values: dict[str, Any] | None = None,
) -> T:
    """Build a config from a raw mapping (e.g. parsed YAML), typed values and ``key.sub=value`` overrides.

    Precedence: defaults < ``data`` < ``values`` < ``overrides``. The overrides apply on top of the defaults
    merged with ``data``, so an override can reach into a list the mapping does not mention
    (``objective.0.weight=2`` edits the default objective). Malformed overrides, unknown keys and wrong types
    are all collected into one error.

    Args:
        data: the mapping (not modified); None or {} for defaults only.
        overrides: ``key.sub=value`` strings (values parsed as YAML scalars), applied in order.
        cls: the dataclass to build (default :class:`textdistill.config.schema.Config`).
        values: ``{"dotted.key": value}`` set as given, not parsed (paths from flags or keyword arguments);
            None values are skipped.

    Raises:
        ConfigError: every problem found, at once.
    """
    import copy

    from textdistill.config.schema import Config

    cls = cls or Config  # type: ignore[assignment]
    merged = merge(to_dict(cls()), copy.deepcopy(data or {}))  # type: ignore[misc]
    problems: list[str] = []
    try:
        apply_values(merged, {k: v for k, v in (values or {}).items() if v is not None})
    except ConfigError as e:
        problems.extend(e.problems)
    try:
        apply_overrides(merged, list(overrides or []))
    except ConfigError as e:
        problems.extend(e.problems)  # keep going: the keys and types are checked too
    result = from_dict(cls, merged, prefix="", problems=problems)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(problems)
    return result
