"""wf's value format: exact round trips with explicit tags, clear errors, nothing executed from data."""

from __future__ import annotations

import enum
import math
import pathlib
import socket
import subprocess
import sys
import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wf.runtime.errors import RetryableError, SerializationError, TooEarlyError
from wf.runtime.serialization import (
    TAG,
    StandInError,
    deserialize,
    dumps,
    loads,
    register_type,
    serialize,
)

# --- classes used as values (module level, so they resolve by module:qualname) ---


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclass
class Point:
    x: int
    y: float = 0.0


@dataclass(frozen=True)
class Order:
    order_id: str
    items: tuple[str, ...]
    placed: datetime
    point: Point | None = None
    total: Decimal = Decimal("0")
    note: str = field(default="", init=False)


class Pair(NamedTuple):
    left: Any
    right: Any


Legacy = namedtuple("Legacy", "a b")


class PaymentDeclined(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NeedsTwoArgs(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


try:  # pydantic is optional for wf: its tests run where it is installed
    import pydantic
    import pydantic.v1
except ImportError:  # pragma: no cover
    pydantic = None  # type: ignore[assignment]
needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")

if pydantic is not None:

    class Customer(pydantic.BaseModel):
        name: str
        since: date
        tags: set[str] = set()
        avatar: bytes = b""

    class LegacyCustomer(pydantic.v1.BaseModel):
        name: str
        visits: int


def rt(value: Any) -> Any:
    """Round trip through serialize, JSON bytes, deserialize."""
    data = serialize(value)
    return deserialize(orjson.loads(orjson.dumps(data)))


def same(a: Any, b: Any) -> bool:
    """Strict equality: same types all the way down, NaN equal to NaN, -0.0 distinct from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (datetime, time)):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and a.isoformat() == b.isoformat() and (
            a.tzname() == b.tzname()
        )
    return a == b


# --- JSON values stay untouched ---


def test_plain_json_is_stored_as_is() -> None:
    value = {"a": [1, 2.5, "x", None, True, False], "b": {"c": []}, "n": -(2**63), "m": 2**64 - 1}
    assert serialize(value) == value
    assert orjson.loads(dumps(value)) == value
    assert same(loads(dumps(value)), value)


def test_serialize_returns_a_copy_not_the_callers_objects() -> None:
    value = {"items": [1, 2]}
    data = serialize(value)
    value["items"].append(3)
    assert data == {"items": [1, 2]}
    back = deserialize(data)
    back["items"].append(4)
    assert data == {"items": [1, 2]}


# --- each supported type round-trips exactly ---

EXACT_VALUES = {
    "bytes with null bytes": b"\x00abc\x00\xff",
    "empty bytes": b"",
    "bytearray": bytearray(b"\x00\x01"),
    "tuple": (1, "a", (2, 3), []),
    "empty tuple": (),
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({1.5, "b"}),
    "naive datetime": datetime(2024, 2, 29, 13, 45, 1, 123456),
    "utc datetime": datetime(2024, 1, 1, tzinfo=UTC),
    "offset datetime": datetime(2024, 1, 1, 8, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    "named offset": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5), "EST")),
    "zoneinfo datetime": datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
    "ambiguous wall time, fold=1": datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
    "date": date(1, 1, 1),
    "time": time(23, 59, 59, 999999),
    "aware time": time(8, 0, tzinfo=timezone(timedelta(hours=2))),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "decimal": Decimal("1.10"),
    "decimal exponent": Decimal("-1E+30"),
    "decimal nan": Decimal("NaN"),
    "decimal inf": Decimal("-Infinity"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "posix path": pathlib.Path("/srv/data/file.txt"),
    "pure windows path": pathlib.PureWindowsPath(r"C:\Users\me"),
    "pure posix path": pathlib.PurePosixPath("relative/x"),
    "enum": Color.RED,
    "enum with tuple value": Color.GREEN,
    "int enum": Level.HIGH,
    "str enum": Mode.FAST,
    "flag combination": Perm.R | Perm.W,
    "dataclass": Point(1, 2.5),
    "frozen nested dataclass": Order("o-1", ("a", "b"), datetime(2024, 1, 1, tzinfo=UTC), Point(3), Decimal("9.99")),
    "namedtuple": Pair(1, b"x"),
    "collections namedtuple": Legacy([1], {"k": "v"}),
    "dict with int keys": {1: "a", 2: "b"},
    "dict with tuple and enum keys": {(1, 2): "t", Color.RED: "c", None: 0, 1.5: "f"},
    "user dict holding the tag key": {TAG: "bytes", "v": "AAAA"},
    "nested tag key": [{"x": {TAG: None}}],
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "-0.0": -0.0,
    "big int": 2**64,
    "big negative int": -(2**63) - 1,
    "huge int": 10**100,
    "mixed": {"when": date(2024, 1, 1), "who": [uuid.UUID(int=1), (b"\x00", {frozenset({1})})]},
}


@pytest.mark.parametrize("value", list(EXACT_VALUES.values()), ids=list(EXACT_VALUES))
def test_value_round_trips_exactly(value: Any) -> None:
    back = rt(value)
    assert same(back, value), (back, value)
    assert same(loads(dumps(value)), value)


def test_frozen_dataclass_keeps_fields_set_outside_init() -> None:
    order = Order("o-2", (), datetime(2024, 1, 1, tzinfo=UTC))
    object.__setattr__(order, "note", "gift")
    back = rt(order)
    assert back == order and back.note == "gift"


def test_tags_are_explicit_and_strings_are_never_guessed() -> None:
    looks_like_a_date = "2024-01-01T00:00:00+00:00"
    looks_like_a_uuid = "12345678-1234-5678-1234-567812345678"
    assert rt([looks_like_a_date, looks_like_a_uuid, "AAAA"]) == [looks_like_a_date, looks_like_a_uuid, "AAAA"]
    assert serialize(b"\x00") == {TAG: "bytes", "v": "AA=="}
    assert serialize((1,)) == {TAG: "tuple", "v": [1]}


def test_sets_serialize_in_a_reproducible_order() -> None:
    a = set(range(100, 0, -1)) | {"x", "y"}
    b = set(sorted(a, key=str))
    assert orjson.dumps(serialize(a)) == orjson.dumps(serialize(b))


# --- exceptions ---


def test_builtin_exception_round_trips_with_its_args() -> None:
    back = rt(KeyError("missing"))
    assert type(back) is KeyError and back.args == ("missing",)


def test_custom_exception_keeps_its_attributes_and_traceback() -> None:
    try:
        raise PaymentDeclined("card declined", code=51)
    except PaymentDeclined as exc:
        caught = exc
    back = rt(caught)
    assert type(back) is PaymentDeclined
    assert str(back) == "card declined" and back.code == 51
    assert "raise PaymentDeclined" in back.__wf_traceback__


def test_explicit_wf_traceback_is_kept() -> None:
    exc = ValueError("bad")
    exc.__wf_traceback__ = "Traceback: somewhere"  # type: ignore[attr-defined]
    assert rt(exc).__wf_traceback__ == "Traceback: somewhere"


def test_exception_whose_constructor_takes_other_args_is_still_rebuilt() -> None:
    retry_at = datetime(2030, 1, 1, tzinfo=UTC)
    back = rt(TooEarlyError("wait", retry_at))
    assert type(back) is TooEarlyError and str(back) == "wait" and back.retry_after == retry_at
    back = rt(NeedsTwoArgs("a", "b"))
    assert type(back) is NeedsTwoArgs and str(back) == "a/b"
    back = rt(RetryableError("later", retry_after="5s"))
    assert type(back) is RetryableError and back.retry_after == "5s"


def test_exception_cause_is_kept() -> None:
    try:
        try:
            raise OSError("disk")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as exc:
        back = rt(exc)
    assert type(back) is RuntimeError and type(back.__cause__) is OSError and str(back.__cause__) == "disk"


def test_exception_of_an_unknown_class_becomes_a_stand_in_with_its_name_and_message() -> None:
    class LocalError(Exception):
        pass

    data = serialize(LocalError("only here"))
    back = deserialize(data)
    assert isinstance(back, StandInError)
    assert back.type_name.endswith("LocalError") and str(back) == "only here"
    data = {TAG: "error", "cls": "some_module_never_imported:Boom", "message": "far away", "args": ["far away"]}
    back = deserialize(data)
    assert isinstance(back, StandInError)
    assert (back.module, back.type_name, str(back)) == ("some_module_never_imported", "Boom", "far away")
    assert "some_module_never_imported" not in sys.modules
    # Serialized again, it still names the original class.
    assert serialize(back)["cls"] == "some_module_never_imported:Boom"


def test_exception_with_unserializable_args_is_still_recorded() -> None:
    sock = socket.socket()
    try:
        back = rt(ValueError("no connection", sock))
    finally:
        sock.close()
    assert type(back) is ValueError
    assert back.args[0] == "no connection" and "socket" in back.args[1]


# --- pydantic ---


@needs_pydantic
def test_pydantic_v2_model_round_trips() -> None:
    customer = Customer(name="Ada", since=date(2020, 5, 1), tags={"vip"}, avatar=b"\x00\x01")
    back = rt(customer)
    assert type(back) is Customer and back == customer


@needs_pydantic
def test_pydantic_v1_model_round_trips() -> None:
    back = rt(LegacyCustomer(name="Bob", visits=3))
    assert type(back) is LegacyCustomer and back == LegacyCustomer(name="Bob", visits=3)


# --- register_type ---


def test_register_type_makes_a_local_class_resolvable_under_a_stable_name() -> None:
    @dataclass
    class Local:
        n: int

    with pytest.raises(SerializationError, match=r"defined inside a function.*register_type"):
        serialize(Local(1))
    register_type(Local, name="tests.Local")
    data = serialize(Local(2))
    assert data["cls"] == "tests.Local"
    assert rt(Local(3)) == Local(3)


def test_register_type_works_as_a_decorator() -> None:
    @register_type(name="tests.Shade")
    class Shade(enum.Enum):
        DARK = 1

    assert rt(Shade.DARK) is Shade.DARK


def test_register_type_refuses_unsupported_classes() -> None:
    with pytest.raises(TypeError, match="not a dataclass, enum, exception"):
        register_type(socket.socket)


# --- errors: what and where ---


def test_unserializable_value_is_named_with_its_place() -> None:
    sock = socket.socket()
    try:
        with pytest.raises(SerializationError, match=r"type 'socket' at args\[1\]\['conn'\]"):
            serialize([1, {"conn": sock}], where="args")
        with pytest.raises(SerializationError, match=r"type 'socket' in the return value of step s at \[0\]"):
            serialize([sock], where="the return value of step s")
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("value", "place"),
    [
        (object(), "at value"),
        ((1, object()), r"at value\[1\]"),
        ({"a": [1, 2, object()]}, r"at value\['a'\]\[2\]"),
        (Pair(1, object()), r"at value\[1\]"),
        (Point(object()), r"at value\.x"),  # type: ignore[arg-type]
        ({1: object()}, r"at value\[1\]"),
        ({object(): 1}, r"at value\[<a key>\]"),
        ({"s": {lambda: 0}}, r"at value\['s'\]<item of set>"),
    ],
)
def test_error_message_names_the_type_and_its_path(value: Any, place: str) -> None:
    with pytest.raises(SerializationError, match=rf"cannot serialize a value of type '[^']+' {place} "):
        serialize(value)


def test_a_reference_cycle_is_a_clear_error_not_a_recursion_error() -> None:
    a: list[Any] = [1]
    a.append({"back": a})
    with pytest.raises(SerializationError, match=r"reference cycle \(args\[1\]\['back'\] is args, a list\)"):
        serialize(a, where="args")


def test_too_deep_nesting_is_a_clear_error() -> None:
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested too deeply"):
        serialize(deep)


def test_a_lone_surrogate_is_refused_by_dumps() -> None:
    with pytest.raises(SerializationError, match="cannot encode"):
        dumps("\ud800")


# --- deserializing hostile or broken data ---


def test_unknown_tag_is_refused() -> None:
    with pytest.raises(SerializationError, match="unknown type tag 'pickle'"):
        deserialize({TAG: "pickle", "v": "gASV..."})


@pytest.mark.parametrize(
    "data",
    [
        {TAG: "bytes", "v": "not base64!"},
        {TAG: "bytes"},
        {TAG: "datetime", "v": "yesterday"},
        {TAG: "timedelta", "v": [1]},
        {TAG: "float", "v": "1.5"},
        {TAG: "int", "v": 12},
        {TAG: "dict", "v": [[[1], 2]]},
        {TAG: "path", "cls": "os:system", "v": "/"},
        {TAG: "decimal", "v": "twelve"},
    ],
)
def test_malformed_tagged_value_is_a_serialization_error(data: Any) -> None:
    with pytest.raises(SerializationError, match="cannot deserialize"):
        deserialize(data)


def test_a_class_is_never_imported_because_data_names_it() -> None:
    assert "antigravity" not in sys.modules
    with pytest.raises(SerializationError, match=r"class 'antigravity:Foo'.*not imported|no such class"):
        deserialize({TAG: "dataclass", "cls": "antigravity:Foo", "v": {}})
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    ("tag", "cls"),
    [("dataclass", "subprocess:Popen"), ("enum", "subprocess:Popen"), ("pydantic", "subprocess:Popen"),
     ("namedtuple", "builtins:tuple")],
)
def test_a_class_of_the_wrong_kind_is_refused(tag: str, cls: str) -> None:
    with pytest.raises(SerializationError, match=f"that class is not an? {tag}"):
        deserialize({TAG: tag, "cls": cls, "v": {"args": ["touch", "/tmp/pwned"]}})


def test_an_error_naming_a_non_exception_class_never_calls_it(tmp_path: Any) -> None:
    target = tmp_path / "pwned"
    back = deserialize({TAG: "error", "cls": "subprocess:Popen", "message": "x", "args": [["touch", str(target)]]})
    assert isinstance(back, StandInError)
    assert not target.exists()
    assert subprocess.Popen is not None  # the module was imported by this test file, not by the data


def test_dataclass_data_with_unknown_fields_is_refused() -> None:
    data = serialize(Point(1))
    data["v"]["z"] = 3
    with pytest.raises(SerializationError, match=r"no field.*z"):
        deserialize(data)


def test_loads_of_invalid_json_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="not valid JSON"):
        loads(b"{nope")


def test_loads_sees_a_tag_key_written_with_an_escape() -> None:
    assert loads(b'{"\\u0024wf": "bytes", "v": "AA=="}') == b"\x00"


# --- properties ---

_tz = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60)),
    st.timezones(),
)
_hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.dates(),
    st.uuids(),
    st.sampled_from([Color.RED, Level.LOW, Mode.FAST, Perm.R | Perm.W]),
    st.decimals(allow_nan=False).filter(lambda d: not d.is_snan()),
)
_leaves = st.one_of(
    _hashable_leaves,
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=_tz),
    st.times(timezones=_tz),
    st.timedeltas(),
    st.decimals(allow_nan=True),
    st.builds(pathlib.PurePosixPath, st.text(max_size=10)),
    st.builds(Point, st.integers(), st.floats(allow_nan=False)),
    st.binary(max_size=20).map(bytearray),
)
_hashables = st.recursive(_hashable_leaves, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
                          max_leaves=6)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5) | st.just(TAG), inner, max_size=4),
        st.dictionaries(_hashables, inner, max_size=3),
        st.tuples(inner, inner),
        st.sets(_hashables, max_size=3),
        st.builds(Pair, inner, inner),
        st.builds(Order, st.text(max_size=5), st.tuples(st.text(max_size=3)), st.datetimes(timezones=_tz),
                  st.none() | st.builds(Point, st.integers())),
    )


values = st.recursive(_leaves, _containers, max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_any_supported_value_round_trips_exactly(value: Any) -> None:
    assert same(rt(value), value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_serialized_form_is_plain_json_that_survives_encoding(value: Any) -> None:
    data = serialize(value)
    assert orjson.loads(orjson.dumps(data)) == data
    assert same(loads(dumps(value)), value)


_plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5).filter(lambda k: k != TAG), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_plain_json)
def test_plain_json_serializes_to_itself(value: Any) -> None:
    assert serialize(value) == value
    assert same(deserialize(value), value)
