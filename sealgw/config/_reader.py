"""
A small typed reader over parsed YAML that collects every problem, each
named by file and key path, instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, TypeVar
from urllib.parse import urlsplit

import attr

from sealgw.config._units import parse_duration, parse_size

T = TypeVar("T")


class ConfigError(Exception):
    """
    A configuration could not be used; C{problems} lists every reason, each
    already prefixed with the file and the key path.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@attr.frozen(repr=False)
class Secret:
    """
    A credential read from the configuration, a file or the environment.

    Its C{repr} never shows the value, so a secret that ends up in a log
    line or a traceback does not leak.
    """

    value: str
    origin: str

    def __repr__(self) -> str:
        return f"<Secret from {self.origin}>"

    __str__ = __repr__


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Reader:
    """
    Collects problems for one configuration source.
    """

    def __init__(
        self, source: str, base_dir: str = ".", *, lenient_keys: bool = False
    ) -> None:
        """
        @param lenient_keys: report unknown keys as warnings rather than
            problems, for formats whose own reader ignores them (seal-proxy's
            serde); sealgw's own format stays strict.
        """
        self.source = source
        self.base_dir = base_dir
        self.lenient_keys = lenient_keys
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def _where(self, path: str) -> str:
        return f"{self.source}: {path}" if path else self.source

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self._where(path)}: {message}")

    def warning(self, path: str, message: str) -> None:
        """
        Something accepted but not used, worth telling the operator once.
        """
        self.warnings.append(f"{self._where(path)}: {message}")

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def path(self, value: str) -> str:
        """
        A path from the config, relative ones taken from the config's folder.
        """
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def table(
        self, value: object, path: str, known: Optional[Iterable[str]]
    ) -> Table:
        """
        Wrap a mapping, reporting keys outside C{known} (any key is allowed
        when C{known} is L{None}: names of upstreams, groups and the like).
        A value that is not a mapping is reported and read as empty, so
        reading can go on.
        """
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            value = {}
        names = None if known is None else list(known)
        for key in value:
            if not isinstance(key, str):
                self.problem(path, f"key {key!r} is not a string")
            elif names is not None and key not in names:
                hint = difflib.get_close_matches(key, names, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                if self.lenient_keys:
                    self.warning(_join(path, key), f"unknown key, ignored{suffix}")
                else:
                    self.problem(_join(path, key), f"unknown key{suffix}")
        return Table(self, path, dict(value))


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# Table has methods named str, int and bool; its annotations use these.
_Str = str
_Int = int
_Bool = bool


@attr.define
class Table:
    """
    One mapping in the configuration, with typed getters.  Each getter
    reports a problem and returns the default when the value is unusable.
    """

    reader: Reader
    path: _Str
    values: dict[_Str, Any]

    def __contains__(self, key: _Str) -> _Bool:
        return key in self.values and self.values[key] is not None

    def keys(self) -> Iterator[_Str]:
        return iter(self.values)

    def at(self, key: _Str | int) -> _Str:
        return _join(self.path, key)

    def problem(self, key: _Str, message: _Str) -> None:
        self.reader.problem(self.at(key), message)

    def _get(
        self, key: _Str, default: Any, convert: Callable[[Any], Any]
    ) -> Any:
        if key not in self:
            if default is MISSING:
                self.problem(key, "required")
                return None
            return default
        try:
            return convert(self.values[key])
        except ValueError as e:
            self.problem(key, str(e))
            return None if default is MISSING else default

    def raw(self, key: _Str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def str(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> _Str:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError(f"expected a string, got {_kind(v)}")
            text = str(v)
            if not text:
                raise ValueError("must not be empty")
            return text

        return self._get(key, default, convert)

    def bool(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> _Bool:
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {_kind(v)}")
            return v

        return self._get(key, default, convert)

    def int(
        self, key: _Str, default: Any = MISSING, minimum: _Int | None = None
    ) -> Any:
        def convert(v: object) -> _Int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"expected a whole number, got {_kind(v)}")
            if minimum is not None and v < minimum:
                raise ValueError(f"must be at least {minimum}")
            return v

        return self._get(key, default, convert)

    def number(
        self, key: _Str, default: Any = MISSING, minimum: float | None = None
    ) -> Any:
        def convert(v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"expected a number, got {_kind(v)}")
            if minimum is not None and v < minimum:
                raise ValueError(f"must be at least {minimum}")
            return float(v)

        return self._get(key, default, convert)

    def duration(
        self, key: _Str, default: Any = MISSING, positive: _Bool = True
    ) -> Any:
        def convert(v: object) -> float:
            seconds = parse_duration(v)
            if positive and seconds <= 0:
                raise ValueError("must be longer than zero")
            return seconds

        return self._get(key, default, convert)

    def size(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> _Int:
            size = parse_size(v)
            if size <= 0:
                raise ValueError("must be larger than zero")
            return size

        return self._get(key, default, convert)

    def choice(self, key: _Str, choices: Iterable[_Str], default: Any = MISSING) -> Any:
        options = list(choices)

        def convert(v: object) -> _Str:
            if v not in options:
                raise ValueError(
                    f"{v!r} is not one of " + ", ".join(repr(o) for o in options)
                )
            return str(v)

        return self._get(key, default, convert)

    def url(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> _Str:
            if not isinstance(v, _Str):
                raise ValueError("not an http(s) URL")
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http(s) URL")
            try:
                _ = parts.port
            except ValueError:
                raise ValueError("not an http(s) URL (bad port)") from None
            return v

        return self._get(key, default, convert)

    def path_(self, key: _Str, default: Any = MISSING) -> Any:
        """
        A file system path, relative ones taken from the config's folder.
        """
        value = self.str(key, default)
        if value is None or value is default:
            return value
        return self.reader.path(value)

    def str_list(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> tuple[_Str, ...]:
            if isinstance(v, _Str):
                return (v,)
            if not isinstance(v, list) or not all(
                isinstance(i, _Str) and i for i in v
            ):
                raise ValueError("expected a list of strings")
            return tuple(v)

        return self._get(key, default, convert)

    def str_map(self, key: _Str, default: Any = MISSING) -> Any:
        def convert(v: object) -> dict[_Str, _Str]:
            if not isinstance(v, Mapping):
                raise ValueError(f"expected a mapping, got {_kind(v)}")
            out: dict[_Str, _Str] = {}
            for k, item in v.items():
                if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                    raise ValueError(f"{k}: expected a string, got {_kind(item)}")
                out[str(k)] = str(item)
            return out

        return self._get(key, default, convert)

    def table(self, key: _Str, known: Optional[Iterable[_Str]]) -> Table | None:
        """
        The sub-mapping at C{key}, or L{None} when it is absent.
        """
        if key not in self:
            return None
        return self.reader.table(self.values[key], self.at(key), known)

    def tables(self, key: _Str, known: Iterable[_Str]) -> list[Table]:
        """
        A list of mappings at C{key}; empty when absent.
        """
        if key not in self:
            return []
        value = self.values[key]
        if not isinstance(value, list):
            self.problem(key, f"expected a list, got {_kind(value)}")
            return []
        return [
            self.reader.table(item, _join(self.at(key), i), known)
            for i, item in enumerate(value)
        ]

    def named_tables(self, key: _Str, known: Iterable[_Str]) -> dict[_Str, Table]:
        """
        A mapping of names to mappings at C{key}; empty when absent.
        """
        if key not in self:
            return {}
        value = self.values[key]
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, got {_kind(value)}")
            return {}
        known = list(known)
        return {
            str(name): self.reader.table(item, _join(self.at(key), str(name)), known)
            for name, item in value.items()
        }

    def secret(self, key: _Str, default: Any = MISSING) -> Any:
        """
        A credential given inline, as C{{file: PATH}} or as C{{env: NAME}}.
        Files and variables are read once, here, at start-up or reload.
        """
        if key not in self:
            if default is MISSING:
                self.problem(key, "required")
                return None
            return default
        value = self.values[key]
        if isinstance(value, _Str):
            if not value:
                self.problem(key, "must not be empty")
                return None
            return Secret(value, f"{self.source_name()} {self.at(key)}")
        if not isinstance(value, Mapping):
            self.problem(
                key, f"expected a string or a mapping with file or env, got {_kind(value)}"
            )
            return None
        sub = self.table(key, ["file", "env"])
        assert sub is not None
        if ("file" in sub) == ("env" in sub):
            self.problem(key, "give exactly one of an inline string, file or env")
            return None
        if "file" in sub:
            path = sub.path_("file")
            if path is None:
                return None
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read().strip()
            except OSError as e:
                sub.problem("file", f"cannot read {path}: {e.strerror}")
                return None
            if not text:
                sub.problem("file", f"{path} is empty")
                return None
            return Secret(text, f"file {path}")
        name = sub.str("env")
        if name is None:
            return None
        text = os.environ.get(name, "")
        if not text:
            sub.problem("env", f"environment variable {name} is not set")
            return None
        return Secret(text, f"environment variable {name}")

    def source_name(self) -> _Str:
        return self.reader.source
