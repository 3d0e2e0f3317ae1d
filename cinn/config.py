"""YAML recipes loaded into frozen dataclasses, strictly: a typo is an error naming the key."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from cinn.errors import UserError
from cinn.files import publish

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the recipe's schema."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The values a number (or each number of a tuple) may take; checked by ``from_dict``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False

    def check(self, value: float, key: str) -> None:
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ConfigError(f"'{key}' must be {self}, got {value!r}")

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


def bounded(default: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Any:  # fmt: skip
    """A dataclass field whose value (every item, for a tuple) must lie within the bounds."""
    bounds = Bounds(low, high, low_open, high_open)
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata={"bounds": bounds})
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def positive(default: Any) -> Any:
    """A field that must be > 0 (every item, for a tuple)."""
    return bounded(default, 0, low_open=True)


def at_least(default: Any, low: float) -> Any:
    """A field that must be >= ``low`` (every item, for a tuple)."""
    return bounded(default, low)


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Returns ``value`` converted to ``annotation`` or raises a ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return tuple(_check_type(item, item_type, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML reads 1e-4 (no dot) as a string
            value = float(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be of type {annotation.__name__}, got {value!r}")
    if annotation is float and not math.isfinite(value):  # NaN and inf are never a setting
        raise ConfigError(f"'{key}' must be a finite number, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Builds the dataclass ``cls`` from ``values``; unknown keys and wrong types raise ConfigError.

    A dataclass may define a classmethod ``prepare_values(values, prefix) -> values``; it runs first, on
    a copy, to rewrite keys that have moved since files were written with it, or to check values whose
    schema depends on another value, with errors naming the whole key (``prefix`` + key).
    """
    prepare = getattr(cls, "prepare_values", None)
    if prepare is not None:
        values = prepare(dict(values), prefix)
    hints = typing.get_type_hints(cls)
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    converted = {name: _check_type(value, hints[name], f"{prefix}{name}") for name, value in values.items()}
    for field in dataclasses.fields(cls):
        bounds = field.metadata.get("bounds")
        if bounds is not None and field.name in converted:
            value = converted[field.name]
            for index, item in enumerate(value) if isinstance(value, tuple) else [(None, value)]:
                bounds.check(item, f"{prefix}{field.name}" + (f"[{index}]" if index is not None else ""))
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid '{prefix.rstrip('.') or cls.__name__}': {error}") from error


def to_dict(config: Any) -> Any:
    """A dataclass (nested) as plain YAML-ready data: tuples become lists."""
    if dataclasses.is_dataclass(config):
        return {field.name: to_dict(getattr(config, field.name)) for field in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(item) for item in config]
    if isinstance(config, dict):
        return {key: to_dict(item) for key, item in config.items()}
    return config


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``section.key=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for override in overrides:
        path, separator, text = override.partition("=")
        if not separator or not path:
            raise ConfigError(f"override '{override}' must look like section.key=value")
        *parents, leaf = path.strip().split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{override}': '{part}' is not a section")
        node[leaf] = yaml.safe_load(text)
    return values


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Reads the YAML file ``path`` with ``overrides`` applied into the frozen dataclass ``cls``.

    A file may start from another: ``base: tuned.yaml`` (a path relative to the file) or ``base: default``
    (a shipped recipe, when no file of that name lies beside it) reads that file first, and this file's
    values replace the base's key by key, in nested sections too.
    """
    return from_dict(cls, apply_overrides(read_values(Path(path)), overrides or []))


def read_values(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The nested values of the config file ``path``, its ``base`` (and the base's base) merged in."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"config file '{path}': 'base' must be the path of another config file, got {base!r}")
    base_path, chain = base_file(path, base).resolve(), (*chain, path.resolve())
    if base_path in chain:
        raise ConfigError(f"config file '{path}': its base '{base}' leads back to itself")
    return merged(read_values(base_path, chain), values)


def base_file(path: Path, base: str) -> Path:
    """The file the config file ``path`` names as its ``base``: beside it, else a shipped recipe by name."""
    beside = path.parent / base
    if beside.is_file():
        return beside
    if (shipped := shipped_recipe(base)) is not None:
        return shipped
    raise ConfigError(
        f"config file '{path}': its base '{base}' is neither a file beside it nor a shipped recipe "
        f"({', '.join(shipped_recipes())})"
    )


def merged(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``values`` replacing it key by key; mappings merge, anything else is replaced."""
    result = dict(base)
    for key, value in values.items():
        both_mappings = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_mappings else value
    return result


def save_config(config: Any, path: str | Path) -> None:
    """Writes ``config`` as YAML that ``load_config`` reads back to an equal config, through a temporary
    file: another process (a second rank resuming the same run) never reads it half written."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    publish({Path(path): lambda temporary: temporary.write_text(text, encoding="utf-8")}, overwrite=True)


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: ``name_or_path`` if that file exists, else the shipped recipe of that name
    (``default``, ``debug``, ``imagenet``: ``cinn.recipes``, the repository's ``configs/``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (shipped := shipped_recipe(str(name_or_path))) is not None:
        return shipped
    raise ConfigError(f"config file '{name_or_path}' does not exist (shipped recipes: {', '.join(shipped_recipes())})")


def shipped_recipe(name: str) -> Path | None:
    """The shipped recipe a bare name stands for (``default`` or ``default.yaml``), or None."""
    if Path(name).name != name:
        return None
    return shipped_recipes().get(name.removesuffix(".yaml"))


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of every recipe shipped with the package."""
    folder = Path(str(importlib.resources.files("cinn.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}
