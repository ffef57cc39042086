"""What a training config may contain: known keys (with a did-you-mean for typos) and the type of every value.

The schema is the defaults themselves: a key is known when the defaults have it, and a value must have the type
of its default (an integer where the default is an integer, any number where it is a float, and so on). YAML
is read with one fix to PyYAML's YAML 1.1 rules: ``1e-3`` is the number 0.001, not the string ``'1e-3'``.
"""

from __future__ import annotations

import difflib
import re

import yaml


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponent floats without a dot (``1e-3``, ``5E4``) as numbers (YAML 1.2)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text safely (no object construction), with ``1e-3`` read as a number."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def unknown_keys(config: dict, defaults: dict, prefix: str = "") -> list[str]:
    """One message per key of ``config`` that ``defaults`` does not have, with the closest known key."""
    problems = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            known = [f"{prefix}{k}" for k in defaults]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else f"known keys here: {', '.join(known)}"
            problems.append(f"unknown config key `{name}` ({hint})")
        elif isinstance(defaults[key], dict) and isinstance(value, dict):
            problems += unknown_keys(value, defaults[key], f"{name}.")
    return problems


def check_types(config: dict, defaults: dict, prefix: str = "") -> list[str]:
    """One message per value whose type differs from its default's; ints are accepted (and made floats) where
    the default is a float. Keys whose default is null are checked by the caller."""
    problems = []
    for key, default in defaults.items():
        if key not in config:
            continue
        name, value = f"{prefix}{key}", config[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                problems.append(f"`{name}` must be a mapping, got {value!r} ({_kind(value)})")
            else:
                problems += check_types(value, default, f"{name}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(f"`{name}` must be true or false, got {value!r} ({_kind(value)})")
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"`{name}` must be an integer, got {value!r} ({_kind(value)})")
        elif isinstance(default, float):
            if isinstance(value, int) and not isinstance(value, bool):
                config[key] = float(value)
            elif not isinstance(value, float):
                problems.append(f"`{name}` must be a number, got {value!r} ({_kind(value)})")
        elif isinstance(default, str):
            if not isinstance(value, str):
                problems.append(f"`{name}` must be a string, got {value!r} ({_kind(value)})")
        elif isinstance(default, list):
            if not isinstance(value, list):
                problems.append(f"`{name}` must be a list, got {value!r} ({_kind(value)})")
    return problems


def check_optional(config: dict, dotted: str, kinds: tuple, allowed: str) -> list[str]:
    """``dotted`` (a key whose default is null) must be null or one of ``kinds``."""
    node = config
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.get(key, {})
    value = node.get(leaf)
    if value is None or isinstance(value, kinds) and not isinstance(value, bool):
        return []
    return [f"`{dotted}` must be {allowed}, got {value!r} ({_kind(value)})"]


def check_list(value, name: str, length: int | None, element, allowed: str) -> list[str]:
    """``value`` must be a list (of ``length`` items when given) whose items pass ``element``."""
    if isinstance(value, list) and (length is None or len(value) == length) and all(element(v) for v in value):
        return []
    return [f"`{name}` must be {allowed}, got {value!r}"]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
