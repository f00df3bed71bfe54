"""Strict TOML table reading shared by the settings and policy loaders."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from .exceptions import ConfigError

__all__ = ["TableReader", "read_toml"]


def read_toml(path: Path, error_class: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML file; unreadable or invalid -> ``error_class`` naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error_class(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise error_class(f"not valid TOML: {exc}", file=str(path)) from None


class TableReader:
    """Typed access to one TOML table that records which keys were read, so that ``finish``
    can refuse unknown keys (a typo must not silently fall back to a default)."""

    error_class: type[ConfigError] = ConfigError

    def __init__(self, data: Mapping[str, Any], where: str, file: str) -> None:
        self.data, self.where, self.file = data, where, file
        self.used: set[str] = set()

    def table(self, key: str) -> Self:
        v = self.get(key, dict, {})
        return type(self)(v, ".".join(x for x in (self.where, key) if x), self.file)

    def err(self, key: str | None, msg: str) -> ConfigError:
        full = ".".join(x for x in (self.where, key) if x)
        return self.error_class(msg, file=self.file, key=full or None)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.err(key, "missing")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            raise self.err(key, f"must be {what or _kind_name(kind)}, got {v!r}")
        if not isinstance(v, kind):
            raise self.err(key, f"must be {what or _kind_name(kind)}, got {v!r}")
        return v

    def int_range(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        v: int = self.get(key, int, default)
        if not lo <= v <= hi:
            raise self.err(key, f"must be between {lo} and {hi}, got {v}")
        return v

    def float_range(self, key: str, lo: float, hi: float, default: Any = ...) -> float:
        v: float = self.get(key, float, default)
        if not lo <= v <= hi:
            raise self.err(key, f"must be between {lo} and {hi}, got {v}")
        return v

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        v = self.get(key, list, default, what="a list of strings")
        if not all(isinstance(x, str) and x for x in v):
            raise self.err(key, f"must be a list of non-empty strings, got {v!r}")
        return tuple(v)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        v: str = self.get(key, str, default)
        if v not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.err(None, f"unknown key(s): {', '.join(extra)}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)
