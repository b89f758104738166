"""
How configuration problems are named: every one prefixed with the file and
the key path (C{sealgw.yaml: upstreams.mimir.url: not an http(s) URL}), all
of them reported at once.

Structuring raises cattrs' exception groups, whose notes say which
attribute, index or key each inner problem belongs to; L{describe} walks
them back into key paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Union

from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    IterableValidationNote,
)

Step = Union[str, int]
"""One step of a key path: a key of a mapping or an index of a list."""


class ConfigError(Exception):
    """
    A configuration could not be used; C{problems} lists every reason, each
    already prefixed with the file and the key path.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Invalid(ValueError):
    """
    One problem with a value, raised by the structuring hooks and returned
    by the checks.

    @ivar at: where below the value being structured, when the problem
        belongs to one of its keys rather than to the value itself.
    """

    def __init__(self, message: str, at: Sequence[Step] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.at = tuple(at)


def kind(value: object) -> str:
    """
    What a YAML value is, in the words of a message: C{a string}, C{a list}.
    """
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


def key_path(steps: Iterable[Step]) -> str:
    """
    C{("listeners", 0, "tls")} as C{listeners[0].tls}.
    """
    path = ""
    for step in steps:
        if isinstance(step, int):
            path += f"[{step}]"
        else:
            path = f"{path}.{step}" if path else step
    return path


def unknown_keys(
    value: Mapping[object, object], known: Sequence[str], ignored: bool = False
) -> Iterator[Invalid]:
    """
    The keys of C{value} outside C{known}, in the file's order: C{unknown
    key (did you mean 'url'?)} when one is close.

    @param ignored: say that the key is ignored, for files where an unknown
        key is a warning.
    """
    for key in value:
        if not isinstance(key, str):
            yield Invalid(f"key {key!r} is not a string")
        elif key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            message = "unknown key, ignored" if ignored else "unknown key"
            yield Invalid(message + (f" (did you mean {hint[0]!r}?)" if hint else ""), [key])


def _step(error: BaseException) -> tuple[Step, ...]:
    # cattrs notes each inner exception with the attribute, index or key it
    # failed on, as it collects it.
    for note in getattr(error, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return (note.name,)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()


def describe(error: BaseException, at: tuple[Step, ...] = ()) -> Iterator[tuple[str, str]]:
    """
    Every problem in C{error} as (key path, message), in the order found.
    """
    if isinstance(error, BaseValidationError):
        for inner in error.exceptions:
            yield from describe(inner, at + _step(inner))
    elif isinstance(error, Invalid):
        yield key_path(at + error.at), error.message
    elif isinstance(error, KeyError):
        # A generated structuring function looked up a key without a
        # default, and it was not there.
        yield key_path(at), "required"
    else:
        yield key_path(at), str(error)


class Problems:
    """
    The problems and warnings found in one configuration source.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def _where(self, path: str) -> str:
        return f"{self.source}: {path}" if path else self.source

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{self._where(path)}: {message}")

    def warn(self, path: str, message: str) -> None:
        """
        Something accepted but not used, worth telling the operator once.
        """
        self.warnings.append(f"{self._where(path)}: {message}")

    def add_error(self, error: BaseException, at: tuple[Step, ...] = ()) -> None:
        for path, message in describe(error, at):
            self.add(path, message)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)
