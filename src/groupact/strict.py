"""Typed dataclasses from YAML, strictly: bounded YAML reading (size, nodes after aliases, depth),
dicts to nested dataclasses with every key and type checked (a typo names the nearest valid key),
deep merges, and ``key.sub=value`` overrides. Nothing here knows groupact's schema
(:mod:`groupact.config` does)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal

import yaml

from groupact.errors import ConfigError, did_you_mean

# --- reading YAML, bounded ---------------------------------------------------------------------

#: a config or plan file is small; these bound what a hostile or broken one can cost
MAX_YAML_BYTES = 1_000_000
MAX_YAML_NODES = 100_000     # values after aliases are expanded ("billion laughs" is 10⁹)
MAX_YAML_DEPTH = 50


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's value in an error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


#: a name that becomes one folder or file name (plan datasets, methods and budgets, recipe and
#: run names): no separator, no leading dot, so it can never lead out of its folder
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def checked_name(name: Any, what: str) -> str:
    """``name`` when it is safe as one path component (:data:`SAFE_NAME`, no '..'); else a
    ConfigError naming ``what``. Called before the name is joined to any path."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{what} {shown(name)} is not a usable name: it becomes a folder name, "
                          "so use up to 64 letters, digits, '.', '_' and '-', starting with a "
                          "letter or digit, without '..'")
    return name


def _expanded_size(obj: Any, depth: int, memo: dict[int, int], where: str) -> int:
    """How many values ``obj`` holds once YAML aliases are expanded (shared nodes counted each
    time they are used, but computed once: linear in the file, however large the expansion)."""
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"{where} nests deeper than {MAX_YAML_DEPTH} levels; flatten it")
    if not isinstance(obj, (dict, list)):
        return 1
    key = id(obj)
    if key not in memo:
        children = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        total = 1
        for child in children:
            total += _expanded_size(child, depth + 1, memo, where)
            if total > MAX_YAML_NODES:
                break
        memo[key] = total
    return memo[key]


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` (no tags, no code) with bounded size, expansion and depth, so a file
    built to exhaust memory or the stack is refused in milliseconds with one line."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where} is {len(text):,} characters; a config or plan is at most "
                          f"{MAX_YAML_BYTES:,}: is it the right file?")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{where} nests deeper than {MAX_YAML_DEPTH} levels; flatten it") \
            from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{where} is not valid YAML{at}: {first[:120]}") from None
    if _expanded_size(data, 0, {}, where) > MAX_YAML_NODES:
        raise ConfigError(f"{where} expands to more than {MAX_YAML_NODES:,} values (YAML "
                          "aliases repeated many times); write the values out plainly")
    return data


# --- building from dicts, strictly ----------------------------------------------------------

def _field_types(cls) -> dict[str, Any]:
    """Field name → resolved type annotation (the module uses postponed annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def unknown_key(key: str, prefix: str, valid: list[str], what: str = "config key") -> ConfigError:
    """The error for a key that is not in ``valid``, naming the nearest valid one (or all)."""
    full = f"{prefix}{key}"
    near = did_you_mean(key, valid)
    hint = near.replace("mean '", f"mean '{prefix}", 1) if near else \
        f"; valid keys here: {', '.join(valid)}"
    return ConfigError(f"unknown {what} '{full}'{hint}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) a value against a field's type annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{where}' takes a list, e.g. [1, 2]; got {shown(value)}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and isinstance(value, str):
            return value
        raise ConfigError(f"config key '{where}' is one of {', '.join(map(str, choices))}; got "
                          f"{shown(value)}{did_you_mean(str(value), choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{where}' takes true or false; got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{where}' takes a whole number; got {shown(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text; it is a number
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"config key '{where}' takes a finite number; got "
                                  f"{shown(value)}")
            return number
        raise ConfigError(f"config key '{where}' takes a number; got {shown(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{where}' takes text; got {shown(value)}")
    return value


def from_dict(cls, data: dict[str, Any] | None, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict; unknown or ill-typed keys are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping; "
                          f"got {shown(data)}")
    fields = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key(str(key)[:60], prefix, sorted(fields))
        tp = fields[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{prefix}{key}' must be a mapping of keys; "
                                  f"got {shown(value)}")
            kwargs[key] = from_dict(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=5"`` → ``{"train": {"epochs": 5}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set takes key=value, e.g. --set train.epochs=5; got {shown(text)}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: bad key {shown(key)}; use dotted keys like train.epochs")
    try:
        value = load_yaml(raw, f"--set {key}") if raw.strip() else None
    except ConfigError:
        if len(raw) > MAX_YAML_BYTES or raw.count("[") + raw.count("{") > MAX_YAML_DEPTH:
            raise
        value = raw  # not YAML: the text itself (the key's type check decides)
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out
