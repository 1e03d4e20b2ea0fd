"""Record classes for the guarded path, made the way `dataclasses` makes them, without it.

Every guarded job (waiting or running) is a Python process beside the compiles, in
the memory ltoguard guards, and importing `dataclasses` loads `inspect`, `ast`,
`dis` and `tokenize` into each (docs/benchmarks.md). `struct` covers what ltoguard's classes
use: fields from the class's annotations (a base's first), defaults, `field`'s
default factory, `frozen`, and the generated `__init__`, `__repr__`, `__eq__` and
`__hash__` (hashable only when frozen, as dataclasses does). `replace` and `asdict`
are the counterparts of dataclasses' (handing a real dataclass to them). mypy reads
`struct` as a dataclass (dataclass_transform). Not there, as nothing here uses them:
`__post_init__`, `InitVar`, ordering, `__match_args__`, keyword-only fields.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kw):
        return lambda f: f


class FrozenInstanceError(AttributeError):
    """An attempt to set or delete a field of a frozen struct."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], T]) -> T:
    """A field whose default is made anew for each instance (dataclasses.field's
    default_factory)."""
    return _Factory(default_factory)  # type: ignore[return-value]


_MISSING = object()


def _fields_of(cls: type) -> tuple[tuple[str, object], ...]:
    """(name, default or _MISSING or a _Factory) of each field, a base's first."""
    found: dict[str, object] = {}
    for base in reversed(cls.__mro__[1:]):
        for name, default in getattr(base, "__struct_fields__", ()):
            found[name] = default
    # The class's own annotations (from a base too on 3.9 when it has none: the
    # same names, so nothing changes); made on first access where that is lazy.
    own = cls.__dict__.get("__annotations__")
    for name, kind in (own if own is not None else getattr(cls, "__annotations__", {})).items():
        if isinstance(kind, str) and kind.split("[", 1)[0].rsplit(".", 1)[-1] == "ClassVar":
            continue
        found[name] = cls.__dict__.get(name, found.get(name, _MISSING))
    return tuple(found.items())


def _init(cls: type, fields: tuple[tuple[str, object], ...], frozen: bool) -> Callable[..., None]:
    """The __init__, generated as source (as dataclasses does) so that making an
    instance costs what a hand-written __init__ costs."""
    scope: dict[str, object] = {"_MISSING": _MISSING, "_set": object.__setattr__}
    params, body = [], []
    seen_default = False
    for i, (name, default) in enumerate(fields):
        if default is _MISSING:
            if seen_default:
                raise TypeError(f"{cls.__name__}: field {name} without a default follows one with")
            params.append(name)
            value = name
        elif isinstance(default, _Factory):
            seen_default = True
            scope[f"_f{i}"] = default.make
            params.append(f"{name}=_MISSING")
            value = f"_f{i}() if {name} is _MISSING else {name}"
        else:
            if isinstance(default, (list, dict, set)):
                raise ValueError(
                    f"{cls.__name__}.{name}: a mutable default; use field(default_factory=)"
                )
            seen_default = True
            scope[f"_d{i}"] = default
            params.append(f"{name}=_d{i}")
            value = name
        body.append(f"_set(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
    src = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    exec(src, scope)
    init: Callable[..., None] = scope["__init__"]  # type: ignore[assignment]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _make(cls: type[T], frozen: bool) -> type[T]:
    fields = _fields_of(cls)
    names = tuple(name for name, _ in fields)
    for name, default in fields:
        if isinstance(default, _Factory) and name in cls.__dict__:
            delattr(cls, name)  # as dataclasses does: no shared default on the class

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)

    def __hash__(self: object) -> int:
        return hash(tuple(getattr(self, n) for n in names))

    own = cls.__dict__
    made: dict[str, object] = {"__struct_fields__": fields, "__init__": _init(cls, fields, frozen)}
    # What the class defines itself is kept, as dataclasses keeps it.
    if "__repr__" not in own:
        made["__repr__"] = __repr__
    if "__eq__" not in own:
        made["__eq__"] = __eq__
    # As dataclasses decides: a __hash__ the class sets is kept (not the None that
    # defining __eq__ implies); else frozen structs hash their fields, others none.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if not explicit_hash:
        made["__hash__"] = __hash__ if frozen else None
    if frozen:
        made["__setattr__"] = _frozen_setattr
        made["__delattr__"] = _frozen_delattr
    for name, value in made.items():
        type.__setattr__(cls, name, value)
    return cls


@dataclass_transform(field_specifiers=(field,))
def struct(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """``@struct`` or ``@struct(frozen=True)`` on a class with annotated fields."""
    if cls is None:
        return lambda c: _make(c, frozen)
    return _make(cls, frozen)


def _replace(obj: T, /, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes`` (dataclasses.replace; a real dataclass is
    handed to it)."""
    fields = getattr(type(obj), "__struct_fields__", None)
    if fields is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    names = [n for n, _ in fields]
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    values = {n: changes[n] if n in changes else getattr(obj, n) for n in names}
    return type(obj)(**values)


def _asdict(obj: Any) -> dict[str, Any]:
    """A struct's fields as a dict (shallow, unlike dataclasses.asdict: ltoguard's
    structs hold no structs); a real dataclass is handed to dataclasses.asdict."""
    fields = getattr(type(obj), "__struct_fields__", None)
    if fields is None:
        import dataclasses

        return dataclasses.asdict(obj)
    return {n: getattr(obj, n) for n, _ in fields}


# mypy checks calls of these as it checks dataclasses' own (field names and types),
# and structs count as dataclasses for it.
if TYPE_CHECKING:
    from dataclasses import asdict as asdict
    from dataclasses import replace as replace
else:
    replace, asdict = _replace, _asdict
