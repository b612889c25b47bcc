"""Recipe configs: a dataclass per recipe, filled from a YAML file and `--key value` overrides.

Unknown keys are errors (with close names), values are converted to the field's type, and the
resolved config is written next to every result so a run can be repeated exactly.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Type, TypeVar

from .errors import ConfigError

__all__ = ["load_config", "add_config_arguments", "config_from_args", "config_to_dict", "ConfigError", "parse_assignments",
           "method_learning_rates"]

C = TypeVar("C")


def _field_types(cls: type) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert `value` (from YAML or a command line string) to the field type `tp`."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or value is None:
            return None
    origin = typing.get_origin(base)
    try:
        if origin in (list, List, tuple, Sequence) or base in (list, tuple):
            (item_tp,) = typing.get_args(base)[:1] or (str,)
            if isinstance(value, (list, tuple)) and len(value) == 1 and str(value[0]).lower() in ("none", "[]"):
                value = []  # `--omegas none` (or `[]`) on the command line: an empty list
            if isinstance(value, str):
                value = [] if value.lower() in ("none", "[]") else [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, (list, tuple)):
                value = [value]
            out = [_coerce(name, item_tp, v) for v in value]
            return tuple(out) if origin is tuple else out
        if typing.get_origin(base) is typing.Literal:
            allowed = typing.get_args(base)
            if value not in allowed:
                raise ConfigError(f"config key {name!r} must be one of {list(allowed)}, got {value!r}")
            return value
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            out = int(value)
            # Every integer a recipe takes is a count, size, rank, seed or interval: none is negative.
            if out < 0:
                raise ConfigError(f"config key {name!r} must be >= 0, got {out}")
            return out
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is str:
            return str(value)
        if base is dict or typing.get_origin(base) is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r} expects {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def load_config(cls: Type[C], path: Optional[os.PathLike] = None, overrides: Optional[Dict[str, Any]] = None) -> C:
    """Build `cls` from defaults <- YAML file at `path` <- `overrides`; unknown keys raise ConfigError."""
    types = _field_types(cls)
    values: Dict[str, Any] = {}
    if path is not None:
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml comes with the [recipes] extra
            raise ConfigError("reading a YAML config needs pyyaml: pip install 'sinelr[recipes]'") from None
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key in values:
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r} for {cls.__name__}{hint}")
    return cls(**{k: _coerce(k, types[k], v) for k, v in values.items()})


def config_to_dict(config: Any) -> Dict[str, Any]:
    """A plain dict of the dataclass (for YAML/JSON), tuples as lists."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, positional: Optional[str] = None) -> None:
    """--config plus one --key option per dataclass field (help from the field's metadata).

    The field named `positional` becomes a positional argument (any number of values) instead of an
    option. Booleans read `--key` (true) or `--key true|false`; the default is shown unless the help text already says it.
    """
    parser.add_argument("--config", type=str, default=None, help="YAML file with config values")
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(_field_types(cls)[f.name])
        is_list = typing.get_origin(tp) in (list, tuple) or tp in (list, tuple)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        helptext = f.metadata.get("help", "")
        if default is not None and "(default" not in helptext.lower():
            shown = str(default).lower() if isinstance(default, bool) else repr(default)
            helptext = f"{helptext} (default: {shown})".strip()
        if f.name == positional:
            parser.add_argument(f.name, nargs="*", default=None, help=helptext or f.name)
            continue
        if tp is bool:  # `--key` alone means true; `--key true|false` also works
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, nargs="?",
                                const="true", metavar="{true,false}", help=helptext)
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=None,
            nargs="+" if is_list else None, metavar=f.name.upper(), help=helptext,
        )


def config_from_args(cls: Type[C], args: argparse.Namespace) -> C:
    """The config for a parsed command line: YAML from --config, then the explicit --key options."""
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return load_config(cls, getattr(args, "config", None), overrides)


def parse_assignments(name: str, items: Sequence[str], allowed: Sequence[str]) -> Dict[str, float]:
    """`["sine=0.01", "full=3e-3"]` -> {"sine": 0.01, "full": 0.003}; keys must be in `allowed`, values finite > 0."""
    import math

    out: Dict[str, float] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"{name} items must look like <one of {list(allowed)}>=<number>, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {key} must be a number, got {value!r}") from None
        if not (math.isfinite(number) and number > 0):
            raise ConfigError(f"{name}: {key} must be finite and > 0, got {value!r}")
        out[key] = number
    return out


def method_learning_rates(items: Sequence[str], methods: Sequence[str], base: Any) -> Dict[str, float]:
    """{method: lr}: the `method=value` items of a recipe's `method_lr`, and `base` for the other methods
    (one number for all, or a {method: lr} mapping of defaults)."""
    given = parse_assignments("method_lr", items, methods)
    default = base if isinstance(base, dict) else {m: float(base) for m in methods}
    return {m: given.get(m, default[m]) for m in methods}
