"""ltoguard/structs.py behaves as dataclasses does for what ltoguard's classes use."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from ltoguard.structs import FrozenInstanceError, asdict, field, replace, struct


@struct(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)


@struct
class Counter:
    name: str
    n: int = 0


@struct(frozen=True)
class Point3(Point):
    z: int = 0


@dataclasses.dataclass(frozen=True)
class DataPoint:
    x: int
    y: int = 2
    tags: list[str] = dataclasses.field(default_factory=list)


def test_init_defaults_and_factories() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, [])
    assert Point(1).tags is not p.tags  # made anew for each
    assert Point(1, 5, ["a"]) == Point(x=1, y=5, tags=["a"])
    assert not hasattr(Point, "tags")  # no shared default left on the class
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, nope=3)  # type: ignore[call-arg]


def test_it_reads_as_the_dataclass_does() -> None:
    mine, theirs = Point(1, 3, ["a"]), DataPoint(1, 3, ["a"])
    assert repr(mine) == repr(theirs).replace("DataPoint", "Point")
    assert hash(Point(1, 3, ())) == hash(DataPoint(1, 3, ())) == hash((1, 3, ()))  # type: ignore[arg-type]
    assert Point.__init__.__qualname__ == "Point.__init__"


def test_frozen_equality_and_hashing() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y
    assert Point(1, 2, ()) == Point(1, 2, ())  # type: ignore[arg-type]
    assert {Point(1, 2, ()), Point(1, 2, ())} == {Point(1, 2, ())}  # type: ignore[arg-type]
    assert Point(1) != Point(2)
    assert Point(1) != Point3(1)  # another class is never equal, as with dataclasses
    assert Point(1).__eq__(("x",)) is NotImplemented


def test_mutable_structs_are_unhashable_and_settable() -> None:
    c = Counter("a")
    c.n += 1
    assert c == Counter("a", 1) and repr(c) == "Counter(name='a', n=1)"
    with pytest.raises(TypeError):
        hash(c)


def test_a_subclass_adds_its_fields_after_its_bases() -> None:
    p = Point3(1, 2, [], 7)
    assert (p.x, p.y, p.z) == (1, 2, 7)
    assert repr(p) == "Point3(x=1, y=2, tags=[], z=7)"


def test_replace_and_asdict() -> None:
    p = Point(1, 3, ["a"])
    q = replace(p, y=4)
    assert q == Point(1, 4, ["a"]) and p.y == 3
    assert replace(Point3(1, z=5), x=2) == Point3(2, z=5)
    with pytest.raises(TypeError, match="no field 'w'"):
        replace(p, w=1)  # type: ignore[call-arg]
    assert asdict(p) == {"x": 1, "y": 3, "tags": ["a"]}


def test_a_field_without_default_after_one_with_is_refused() -> None:
    class Bad:
        x: int = 1
        y: int

    with pytest.raises(TypeError, match="field y without a default"):
        struct(Bad)


def test_what_a_class_defines_itself_is_kept() -> None:
    @struct(frozen=True)
    class Named:
        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

    assert repr(Named("a")) == "<a>" and hash(Named("a")) == hash(Named("a"))

    @struct(frozen=True)
    class OwnEq:  # its own __eq__: still hashed by its fields, as dataclasses does
        n: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and other.n % 2 == self.n % 2

    assert hash(OwnEq(3)) == hash((3,)) and OwnEq(1) == OwnEq(3)


def test_class_variables_are_not_fields_and_mutable_defaults_are_refused() -> None:
    @struct
    class WithClassVar:
        seen: ClassVar[int] = 0
        n: int = 1

    assert WithClassVar() == WithClassVar(1) and WithClassVar.seen == 0

    class Shared:
        items: list[int] = []

    with pytest.raises(ValueError, match="mutable default"):
        struct(Shared)


def test_a_real_dataclass_is_handed_to_dataclasses() -> None:
    d = DataPoint(1, 3, ["a"])
    assert replace(d, y=4) == DataPoint(1, 4, ["a"])
    assert asdict(d) == {"x": 1, "y": 3, "tags": ["a"]}
