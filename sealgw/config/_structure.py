"""
The cattrs converter that turns parsed YAML into the model.

cattrs generates the structuring of each section from the attrs class and
collects every failing attribute, index and key into exception groups.
sealgw adds hooks for its scalars (strict: a boolean is not a string, nor
a string a number), for the rules of L{sealgw.config._rules}, for secrets,
and one around every section that refuses unknown keys and runs the
section's checks.  That hook, not cattrs' C{forbid_extra_keys}, refuses
the keys: cattrs reports them as one unordered set, and the messages want
them in the file's order, each with its "did you mean", and leave out the
fields the file does not write (an upstream's name is its key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar, get_args, get_origin

import attr
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, mapping_structure_factory, override

from sealgw.config._checks import CHECKS
from sealgw.config._model import FileUpstreamConfig, HTTPUpstreamConfig, UpstreamConfig
from sealgw.config._problems import Invalid, Problems, Step, kind, unknown_keys
from sealgw.config._rules import (
    SOURCE,
    SourceFile,
    boolean,
    number,
    rule_of,
    text,
    whole_number,
)
from sealgw.config._secret import Secret, SecretSource

T = TypeVar("T")
Hook = Callable[[Any, Any], Any]

FAILED: Any = object()
"""What L{Reading.structure} returns for a value it could not structure."""

_reading: ContextVar[SourceFile] = ContextVar("sealgw.config file being read")


@attr.frozen
class Keyed:
    """
    A section with the key it is filed under, for the field that takes it
    (an upstream's C{name} is its key in C{upstreams}).
    """

    key: str
    body: object


class Reading:
    """
    One file being read: its problems, and the file the converter's hooks
    take relative paths and the origin of secrets from.
    """

    def __init__(self, file: SourceFile) -> None:
        self.file = file
        self.problems = Problems(file.source)

    def structure(self, value: object, type_: Any, at: tuple[Step, ...] = ()) -> Any:
        """
        C{value} as C{type_}, or L{FAILED} with its problems added, named
        from the key path C{at}.
        """
        token = _reading.set(self.file)
        try:
            return _CONVERTER.structure(value, type_)
        except (Invalid, ClassValidationError, IterableValidationError) as e:
            self.problems.add_error(e, at)
            return FAILED
        finally:
            _reading.reset(token)


def structure(value: object, type_: type[T], file: SourceFile, at: tuple[Step, ...] = ()) -> T:
    """
    C{value} as C{type_}, with the rules and messages of the configuration,
    for the other YAML files sealgw reads (the token file).

    @raise ConfigError: naming every problem by file and key path.
    """
    reading = Reading(file)
    result = reading.structure(value, type_, at)
    reading.problems.raise_if_any()
    return result  # type: ignore[no-any-return]


def _converter() -> cattrs.Converter:
    """
    The converter, built once: its hooks are generated on first use of
    each type and kept.
    """
    converter = cattrs.Converter(detailed_validation=True)
    converter.register_structure_hook(str, lambda value, _: text(value))
    converter.register_structure_hook(int, lambda value, _: whole_number(value))
    converter.register_structure_hook(float, lambda value, _: number(value))
    converter.register_structure_hook(bool, lambda value, _: boolean(value))
    converter.register_structure_hook_factory(_has_rule, lambda t: _rule_hook(t))
    converter.register_structure_hook_factory(_is_tuple, lambda t: _tuple_hook(t, converter))
    converter.register_structure_hook_factory(_is_mapping, lambda t: _mapping_hook(t, converter))
    converter.register_structure_hook_factory(attr.has, lambda t: _section_hook(t, converter))
    converter.register_structure_hook_func(
        lambda t: t == frozenset[str], lambda value, _: _names(value, converter)
    )
    converter.register_structure_hook(Secret, lambda value, _: _secret(value, converter))
    converter.register_structure_hook_func(
        lambda t: t == Mapping[str, UpstreamConfig],
        lambda value, _: _upstreams(value, converter),
    )
    return converter


def _has_rule(t: Any) -> bool:
    return get_origin(t) is Annotated and rule_of(t.__metadata__) is not None


def _rule_hook(t: Any) -> Hook:
    rule = rule_of(t.__metadata__)
    assert rule is not None
    return lambda value, _: rule.structure(value, _reading.get())


def _is_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_text(t: Any) -> bool:
    return t is str or (get_origin(t) is Annotated and get_args(t)[0] is str)


def _tuple_hook(t: Any, converter: cattrs.Converter) -> Hook:
    base = homogenous_tuple_structure_factory(t, converter)
    # A list of strings may be written as one string: audience: my-api.
    one_string = _is_text(get_args(t)[0])

    def structure(value: object, _: object) -> tuple[Any, ...]:
        if one_string and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise Invalid(f"expected a list, got {kind(value)}")
        return base(value, t)

    return structure


def _is_mapping(t: Any) -> bool:
    return get_origin(t) in (Mapping, dict)


def _mapping_hook(t: Any, converter: cattrs.Converter) -> Hook:
    base = mapping_structure_factory(t, converter)

    def structure(value: object, _: object) -> dict[Any, Any]:
        if not isinstance(value, Mapping):
            raise Invalid(f"expected a mapping, got {kind(value)}")
        return base(value, t)

    return structure


def _names(value: object, converter: cattrs.Converter) -> frozenset[str]:
    # seal-proxy writes label-actions.remove as a mapping: only its keys
    # matter.
    if isinstance(value, Mapping):
        value = list(value)
    return frozenset(converter.structure(value, tuple[str, ...]))


def _passthrough(value: object, _: object) -> object:
    return value


def _section_hook(cls: Any, converter: cattrs.Converter) -> Hook:
    """
    Structure a mapping into C{cls} with the function cattrs generates for
    it, refusing keys C{cls} has no field for, and then check it.
    """
    attr.resolve_types(cls)
    fields = attr.fields(cls)
    own = [f.name for f in fields if SOURCE not in f.metadata]
    from_key = [f.name for f in fields if f.metadata.get(SOURCE) == "key"]
    inline = {
        f.name: (f.type, [g.name for g in attr.fields(f.type)])
        for f in fields
        if f.metadata.get(SOURCE) == "inline"
    }
    known = own + [key for _, keys in inline.values() for key in keys]
    overrides: dict[str, Any] = {name: override(struct_hook=_passthrough) for name in inline}
    generated = make_dict_structure_fn(cls, converter, **overrides)
    check = CHECKS.get(cls)

    def structure(value: object, _: object) -> Any:
        key = None
        if isinstance(value, Keyed):
            key, value = value.key, value.body
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise Invalid(f"expected a mapping, got {kind(value)}")
        errors: list[Exception] = list(unknown_keys(value, known))
        # A key written with no value is a key not written.
        given = {k: v for k, v in value.items() if k in own and v is not None}
        failed: set[str] = set()
        for name, (type_, keys) in inline.items():
            part = {k: value[k] for k in keys if value.get(k) is not None}
            try:
                given[name] = converter.structure(part, type_)
            except ClassValidationError as e:
                errors.extend(e.exceptions)
                given[name] = None
                failed.add(name)
        for name in from_key:
            given[name] = key
        try:
            result = generated(given, cls)
        except ClassValidationError as e:
            errors.extend(e.exceptions)
            failed.update(_attributes(e))
            # Once more without the broken fields, for a check that reads
            # none of them.
            try:
                result = generated({k: v for k, v in given.items() if k not in failed}, cls)
            except ClassValidationError:
                result = None
        if check is not None and result is not None and not check.reads & failed:
            errors.extend(check(result))
        if errors:
            raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
        return result

    return structure


def _attributes(error: ClassValidationError) -> Iterator[str]:
    for inner in error.exceptions:
        for note in getattr(inner, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                yield note.name


def _secret(value: object, converter: cattrs.Converter) -> Secret:
    if isinstance(value, str):
        if not value:
            raise Invalid("must not be empty")
        return Secret(value, _reading.get().source)
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a string or a mapping with file or env, got {kind(value)}")
    return converter.structure(value, SecretSource).read()


_UPSTREAM_TYPES = {"http": HTTPUpstreamConfig, "file": FileUpstreamConfig}


def _upstreams(value: object, converter: cattrs.Converter) -> dict[str, UpstreamConfig]:
    """
    C{upstreams}: each named by its key, its C{type} choosing the class.
    """
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping, got {kind(value)}")
    upstreams: dict[str, UpstreamConfig] = {}
    errors: list[Exception] = []
    for name, body in value.items():
        name = str(name)
        try:
            upstreams[name] = _upstream(name, body, converter)
        except (Invalid, ClassValidationError) as e:
            e.__notes__ = [IterableValidationNote(f"upstream {name!r}", name, UpstreamConfig)]
            errors.append(e)
    if errors:
        raise IterableValidationError("While structuring upstreams", errors, dict)
    return upstreams


def _upstream(name: str, body: object, converter: cattrs.Converter) -> UpstreamConfig:
    errors: list[Exception] = []
    type_ = None
    if isinstance(body, Mapping):
        body = dict(body)
        type_ = body.pop("type", None)
    if type_ is None:
        type_ = "http"
    elif type_ not in tuple(_UPSTREAM_TYPES):
        choices = ", ".join(map(repr, _UPSTREAM_TYPES))
        errors.append(Invalid(f"{type_!r} is not one of {choices}", at=["type"]))
        type_ = "http"
    cls = _UPSTREAM_TYPES[type_]
    try:
        upstream: UpstreamConfig = converter.structure(Keyed(name, body), cls)
    except ClassValidationError as e:
        errors.extend(e.exceptions)
    if errors:
        raise ClassValidationError(f"While structuring upstream {name!r}", errors, cls)
    return upstream


_CONVERTER = _converter()
