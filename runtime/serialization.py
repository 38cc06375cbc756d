"""wf's value format: Python values <-> JSON-compatible data with explicit type tags.

Plain JSON (str, int, float, bool, None, lists, dicts with str keys) is stored as is.
Every other supported value becomes a tagged object `{"$wf": <tag>, ...}`:

| tag          | value                                  | fields                                  |
|--------------|----------------------------------------|-----------------------------------------|
| `int`        | int outside orjson's 64-bit range      | `v`: decimal string                     |
| `float`      | NaN, inf, -inf                         | `v`: "nan" / "inf" / "-inf"             |
| `dict`       | dict with a non-str key or a `$wf` key | `v`: [[key, value], ...]                |
| `tuple`      | tuple                                  | `v`: [items]                            |
| `namedtuple` | namedtuple instance                    | `cls`, `v`: [items]                     |
| `set`        | set / frozenset (`frozenset`)          | `v`: [items] (sorted by their JSON)     |
| `bytes`      | bytes / bytearray (`bytearray`)        | `v`: base64                             |
| `datetime`   | datetime, `date`, `time`               | `v`: ISO string; `tz`: zone key; `fold` |
| `timedelta`  | timedelta                              | `v`: [days, seconds, microseconds]      |
| `decimal`    | Decimal                                | `v`: str(d)                             |
| `uuid`       | UUID                                   | `v`: canonical string                   |
| `path`       | pathlib path                           | `cls`: pathlib class name, `v`: str     |
| `enum`       | Enum member                            | `cls`, `v`: the member's value          |
| `dataclass`  | dataclass instance                     | `cls`, `v`: {field: value}              |
| `pydantic`   | pydantic v2 (or v1) model              | `cls`, `v`: the model's python dump     |
| `error`      | exception                              | `cls`, `message`, `args`, `attrs`, `traceback`, `cause` |

`cls` is `"module:qualname"`, or the name given to `register_type`. Nothing is ever
unpickled, evaluated or imported because data says so: a class is resolved only from
`register_type` or from modules already in `sys.modules`, and it must be of the kind its
tag says (a dataclass for `dataclass`, ...). An exception whose class cannot be found or
rebuilt comes back as a `StandInError` keeping the original type's name and message.

Known limits: subclasses of str/int/float/dict/list (other than enums and namedtuples)
come back as the base type; tzinfo objects other than `timezone` and `ZoneInfo` come back
as a fixed-offset `timezone`; a str holding a lone surrogate is refused by `dumps`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import math
import pathlib
import sys
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

import orjson

from .errors import SerializationError

__all__ = ["TAG", "StandInError", "deserialize", "dumps", "loads", "register_type", "serialize"]

#: The key that marks a tagged object.
TAG = "$wf"
_TAG_BYTES = b'"$wf"'

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

T = TypeVar("T", bound=type)

_HINT = (
    "wf stores JSON types, bytes, tuple, set, datetime, date, time, timedelta, Decimal, UUID, paths, "
    "enums, dataclasses, exceptions and pydantic models"
)


class StandInError(Exception):
    """An exception that could not be rebuilt as its own class in this process.

    `str()` is the original message; `type_name` and `module` name the original class;
    `original_args`, `attrs` and `traceback` keep what was recorded. Serializing it again
    writes the original class's name, so it round-trips to the real class wherever that
    class can be found.
    """

    def __init__(
        self,
        type_name: str,
        module: str,
        message: str,
        original_args: tuple[Any, ...] = (),
        attrs: dict[str, Any] | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.module = module
        self.message = message
        self.original_args = original_args
        self.attrs = dict(attrs or {})
        self.traceback = traceback
        self.__wf_traceback__ = traceback

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"StandInError({self.module}.{self.type_name}: {self.message!r})"


# --- the class registry ---

_registered: dict[str, type] = {}
_registered_names: dict[type, str] = {}


def register_type(cls: T | None = None, *, name: str | None = None) -> Any:
    """Register a dataclass, enum, exception, namedtuple or pydantic class for (de)serialization.

    Use as `@register_type`, `@register_type(name="shop.Order")` or `register_type(Order)`.
    A registered class resolves by its name even when its module is not imported yet, or
    when it is defined inside a function; `name` keeps stored data valid across renames.
    """

    def register(klass: T) -> T:
        if not isinstance(klass, type) or not (
            dataclasses.is_dataclass(klass)
            or issubclass(klass, (Enum, BaseException))
            or _is_namedtuple_class(klass)
            or _pydantic_kind(klass) is not None
        ):
            raise TypeError(
                f"register_type: {klass!r} is not a dataclass, enum, exception, namedtuple or pydantic model class"
            )
        key = name or f"{klass.__module__}:{klass.__qualname__}"
        existing = _registered.get(key)
        if existing is not None and existing is not klass:
            # A reloaded module defines the class again: the newest definition wins.
            _registered_names.pop(existing, None)
        _registered[key] = klass
        _registered_names[klass] = key
        return klass

    if cls is None:
        return register
    return register(cls)


def _is_namedtuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _pydantic_kind(cls: type) -> str | None:
    """"v2" or "v1" if `cls` is a pydantic model class (pydantic is never imported here)."""
    for module_name, kind in (("pydantic", None), ("pydantic.v1", "v1")):
        module = sys.modules.get(module_name)
        base = getattr(module, "BaseModel", None) if module is not None else None
        if isinstance(base, type) and issubclass(cls, base):
            if kind is None:
                kind = "v2" if hasattr(base, "model_validate") else "v1"
            return kind
    return None


def _class_ref(cls: type, *, strict: bool = True) -> str:
    ref = _registered_names.get(cls)
    if ref is not None:
        return ref
    if strict and "<locals>" in cls.__qualname__:
        raise _Unserializable(
            cls.__qualname__,
            "its class is defined inside a function, so no other process can find it; move it to module "
            f"level or register it with register_type({cls.__name__}, name=...)",
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(ref: Any) -> type | None:
    """The class named `ref`, from the registry or an already imported module; None if not found."""
    if not isinstance(ref, str):
        return None
    cls = _registered.get(ref)
    if cls is not None:
        return cls
    module_name, sep, qualname = ref.partition(":")
    if not sep or "<locals>" in qualname:
        return None
    obj: Any = sys.modules.get(module_name)  # never import: data must not choose what runs
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _resolve_kind(ref: Any, kind: str, check: Callable[[type], bool]) -> type:
    cls = _resolve(ref)
    if cls is None:
        raise SerializationError(
            f"cannot deserialize {_a(kind)} of class {ref!r}: no such class is imported in this process "
            "(import its module first, or register it with register_type)"
        )
    if not check(cls):
        raise SerializationError(f"cannot deserialize {_a(kind)} of class {ref!r}: that class is not {_a(kind)}")
    return cls


# --- serialize ---


class _Unserializable(Exception):
    """Raised inside the walk; carries the failing value's type and its path, built while unwinding."""

    def __init__(self, type_name: str, reason: str | None = None) -> None:
        super().__init__()
        self.type_name = type_name
        self.reason = reason
        self.path: list[str] = []


def serialize(value: object, where: str = "value") -> Any:
    """`value` as JSON-compatible data with type tags. SerializationError names what failed and where.

    `where` labels the root in error messages: `serialize(x, where="args")` reports
    "cannot serialize a value of type 'socket' at args[1]['conn']".
    """
    try:
        return _ser(value)
    except _Unserializable as exc:
        path = "".join(reversed(exc.path))
        location = f"at {where}{path}" if " " not in where else (f"in {where} at {path}" if path else f"in {where}")
        reason = exc.reason or _HINT
        raise SerializationError(f"cannot serialize a value of type {exc.type_name!r} {location} ({reason})") from None
    except RecursionError:
        raise SerializationError(_depth_problem(value, where)) from None


def _ser(v: Any) -> Any:
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        return v if _INT_MIN <= v <= _INT_MAX else {TAG: "int", "v": str(v)}
    if t is float:
        return v if math.isfinite(v) else {TAG: "float", "v": "nan" if v != v else ("inf" if v > 0 else "-inf")}
    if t is list:
        try:
            return [x if type(x) is str else _ser(x) for x in v]
        except _Unserializable as exc:
            _locate_in_sequence(v, exc)
            raise
    if t is dict:
        return _ser_dict(v)
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder(v)
    return _ser_other(v)


def _locate_in_sequence(items: Any, exc: _Unserializable) -> None:
    """Add the index of the first item that fails to `exc.path` (slow path, errors only)."""
    for i, x in enumerate(items):
        try:
            _ser(x)
        except _Unserializable:
            exc.path.append(f"[{i}]")
            return


def _ser_dict(v: dict[Any, Any]) -> Any:
    out = {}
    key = None
    try:
        for key, x in v.items():
            if type(key) is not str:
                break
            tx = type(x)
            # Inline the commonest leaves: one function call less per value.
            out[key] = x if tx is str or (tx is int and _INT_MIN <= x <= _INT_MAX) or tx is bool else _ser(x)
        else:
            if TAG not in out:
                return out
        # A non-str key, or a user's own "$wf" key: store item pairs.
        pairs = []
        for key, x in v.items():
            try:
                k = _ser(key)
            except _Unserializable as exc:
                exc.path = ["[<a key>]"]
                raise
            pairs.append([k, _ser(x)])
        return {TAG: "dict", "v": pairs}
    except _Unserializable as exc:
        if exc.path != ["[<a key>]"]:
            exc.path.append(f"[{key!r}]")
        raise


def _ser_items(items: Any) -> list[Any]:
    out: list[Any] = []
    try:
        for x in items:
            out.append(_ser(x))
    except _Unserializable as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _ser_tuple(v: tuple[Any, ...]) -> Any:
    return {TAG: "tuple", "v": _ser_items(v)}


def _ser_set(v: set[Any] | frozenset[Any]) -> Any:
    items = []
    for x in v:
        try:
            items.append(_ser(x))
        except _Unserializable as exc:
            exc.path.append(f"<item of {type(v).__name__}>")
            raise
    items.sort(key=orjson.dumps)  # a set's order is arbitrary: store it in a reproducible one
    return {TAG: "set" if type(v) is set else "frozenset", "v": items}


def _ser_bytes(v: bytes | bytearray) -> Any:
    return {TAG: "bytes" if type(v) is bytes else "bytearray", "v": base64.b64encode(v).decode("ascii")}


def _tz_fields(tz: tzinfo | None, out: dict[str, Any]) -> dict[str, Any]:
    if tz is None or tz is UTC:
        return out
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
    if isinstance(key, str) and type(tz).__module__ == "zoneinfo":
        out["tz"] = key
    elif isinstance(tz, timezone):
        name = tz.tzname(None)
        offset = tz.utcoffset(None)
        if name != timezone(offset).tzname(None):
            out["tzname"] = name
    return out


def _ser_datetime(v: datetime) -> Any:
    out: dict[str, Any] = {TAG: "datetime", "v": v.isoformat()}
    if v.fold:
        out["fold"] = 1
    return _tz_fields(v.tzinfo, out)


def _ser_date(v: date) -> Any:
    return {TAG: "date", "v": v.isoformat()}


def _ser_time(v: time) -> Any:
    out: dict[str, Any] = {TAG: "time", "v": v.isoformat()}
    if v.fold:
        out["fold"] = 1
    return _tz_fields(v.tzinfo, out)


def _ser_timedelta(v: timedelta) -> Any:
    return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}


def _ser_decimal(v: Decimal) -> Any:
    return {TAG: "decimal", "v": str(v)}


def _ser_uuid(v: uuid.UUID) -> Any:
    return {TAG: "uuid", "v": str(v)}


_PATH_CLASSES: dict[str, type[pathlib.PurePath]] = {
    cls.__name__: cls
    for cls in (pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.Path,
                pathlib.PosixPath, pathlib.WindowsPath)
}


def _ser_path(v: pathlib.PurePath) -> Any:
    cls = type(v)
    while cls.__name__ not in _PATH_CLASSES or _PATH_CLASSES[cls.__name__] is not cls:
        cls = cls.__mro__[1]  # a user subclass: store its nearest pathlib class
    return {TAG: "path", "cls": cls.__name__, "v": str(v)}


def _ser_enum(v: Enum) -> Any:
    cls = type(v)
    try:
        value = _ser(v.value)
    except _Unserializable as exc:
        exc.path.append(".value")
        raise
    return {TAG: "enum", "cls": _class_ref(cls), "v": value}


def _ser_namedtuple(v: tuple[Any, ...]) -> Any:
    cls = type(v)
    return {TAG: "namedtuple", "cls": _class_ref(cls), "v": _ser_items(v)}


def _ser_dataclass(v: Any) -> Any:
    cls = type(v)
    ref = _class_ref(cls)
    fields = {}
    for f in dataclasses.fields(v):
        try:
            fields[f.name] = _ser(getattr(v, f.name))
        except _Unserializable as exc:
            exc.path.append(f".{f.name}")
            raise
    return {TAG: "dataclass", "cls": ref, "v": fields}


def _ser_pydantic(v: Any, kind: str) -> Any:
    cls = type(v)
    ref = _class_ref(cls)
    data = v.model_dump() if kind == "v2" else v.dict()
    try:
        dumped = _ser(data)
    except _Unserializable:
        # Find the field for the message.
        for name, x in data.items():
            try:
                _ser(x)
            except _Unserializable as exc:
                exc.path.append(f".{name}")
                raise
        raise
    return {TAG: "pydantic", "cls": ref, "v": dumped}


def _lenient(value: Any) -> Any:
    """An exception's detail, serialized if possible, else its repr (an error must always be recordable)."""
    try:
        return _ser(value)
    except (_Unserializable, RecursionError):
        try:
            return f"<unserializable {type(value).__qualname__}: {value!r}>"[:2000]
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the error itself
            return f"<unserializable {type(value).__qualname__}>"


def _ser_error(v: BaseException, depth: int = 0) -> Any:
    if isinstance(v, StandInError):
        out: dict[str, Any] = {
            TAG: "error",
            "cls": f"{v.module}:{v.type_name}",
            "message": v.message,
            "args": [_lenient(a) for a in v.original_args],
        }
        attrs = {k: _lenient(x) for k, x in v.attrs.items()}
        tb = v.traceback
    else:
        cls = type(v)
        try:
            message = str(v)
        except Exception:  # noqa: BLE001 - user __str__ may raise anything
            message = f"<{cls.__qualname__} with a broken __str__>"
        out = {
            TAG: "error",
            "cls": _class_ref(cls, strict=False),
            "message": message,
            "args": [_lenient(a) for a in v.args],
        }
        attrs = {
            k: _lenient(x) for k, x in getattr(v, "__dict__", {}).items() if k != "__wf_traceback__"
        }
        tb = getattr(v, "__wf_traceback__", None)
        if not isinstance(tb, str) and v.__traceback__ is not None:
            tb = "".join(traceback.format_exception(v))
    if attrs:
        out["attrs"] = attrs
    if isinstance(tb, str):
        out["traceback"] = tb
    cause = v.__cause__
    if cause is not None and depth < 20:
        out["cause"] = _ser_error(cause, depth + 1)
    return out


def _ser_other(v: Any) -> Any:
    """Everything that is not an exact JSON type: checked by isinstance, most specific first."""
    if isinstance(v, Enum):
        return _ser_enum(v)
    if isinstance(v, int):
        return _ser(int(v))
    if isinstance(v, float):
        return _ser(float(v))
    if isinstance(v, str):
        return str(v)
    if isinstance(v, dict):
        return _ser_dict(dict(v))
    if isinstance(v, list):
        return _ser(list(v))
    if isinstance(v, tuple):
        return _ser_namedtuple(v) if _is_namedtuple_class(type(v)) else _ser_tuple(v)
    if isinstance(v, (bytes, bytearray)):
        return _ser_bytes(bytes(v) if not isinstance(v, bytearray) else bytearray(v))
    if isinstance(v, (set, frozenset)):
        return _ser_set(set(v) if isinstance(v, set) else frozenset(v))
    if isinstance(v, datetime):
        return _ser_datetime(v)
    if isinstance(v, date):
        return _ser_date(v)
    if isinstance(v, time):
        return _ser_time(v)
    if isinstance(v, timedelta):
        return _ser_timedelta(v)
    if isinstance(v, Decimal):
        return _ser_decimal(v)
    if isinstance(v, uuid.UUID):
        return _ser_uuid(v)
    if isinstance(v, pathlib.PurePath):
        return _ser_path(v)
    if isinstance(v, BaseException):
        return _ser_error(v)
    cls = type(v)
    if dataclasses.is_dataclass(cls) and not isinstance(v, type):
        return _ser_dataclass(v)
    kind = _pydantic_kind(cls)
    if kind is not None:
        return _ser_pydantic(v, kind)
    raise _Unserializable(type(v).__qualname__)


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    tuple: _ser_tuple,
    bytes: _ser_bytes,
    bytearray: _ser_bytes,
    set: _ser_set,
    frozenset: _ser_set,
    datetime: _ser_datetime,
    date: _ser_date,
    time: _ser_time,
    timedelta: _ser_timedelta,
    Decimal: _ser_decimal,
    uuid.UUID: _ser_uuid,
    pathlib.PosixPath: _ser_path,
    pathlib.PurePosixPath: _ser_path,
}


def _depth_problem(value: Any, where: str) -> str:
    """Explain a RecursionError: find a reference cycle, or report the nesting as too deep."""
    root = where if " " not in where else "value"
    on_path: dict[int, str] = {}
    stack: list[tuple[Any, str, bool]] = [(value, root, False)]
    while stack:
        obj, path, leaving = stack.pop()
        if leaving:
            on_path.pop(id(obj), None)
            continue
        if isinstance(obj, dict):
            children = [(x, f"{path}[{k!r}]") for k, x in obj.items()]
        elif isinstance(obj, (list, tuple)):
            children = [(x, f"{path}[{i}]") for i, x in enumerate(obj)]
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            children = [(getattr(obj, f.name), f"{path}.{f.name}") for f in dataclasses.fields(obj)]
        else:
            continue
        if id(obj) in on_path:
            return (
                f"cannot serialize {where}: it contains a reference cycle "
                f"({path} is {on_path[id(obj)]}, a {type(obj).__qualname__})"
            )
        on_path[id(obj)] = path
        stack.append((obj, path, True))
        for child, child_path in reversed(children):
            stack.append((child, child_path, False))
    return f"cannot serialize {where}: it is nested too deeply (more than a few hundred levels)"


# --- deserialize ---


def deserialize(data: Any) -> object:
    """The value that `serialize` turned into `data`. SerializationError on malformed data."""
    try:
        return _de(data)
    except RecursionError:
        raise SerializationError("cannot deserialize: the data is nested too deeply") from None


def _de(d: Any) -> Any:
    t = type(d)
    if t is list:
        return [_de(x) if type(x) in _CONTAINERS else x for x in d]
    if t is dict:
        if TAG in d:
            return _de_tagged(d)
        return {k: _de(x) if type(x) in _CONTAINERS else x for k, x in d.items()}
    return d


_CONTAINERS = frozenset({list, dict})


def _de_tagged(d: dict[str, Any]) -> Any:
    tag = d[TAG]
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise SerializationError(f"cannot deserialize: unknown type tag {tag!r}")
    try:
        return decoder(d)
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, ArithmeticError) as exc:
        raise SerializationError(f"cannot deserialize a malformed {tag!r} value: {type(exc).__name__}: {exc}") from None


def _de_int(d: dict[str, Any]) -> int:
    v = d["v"]
    if not isinstance(v, str):
        raise TypeError("expected a decimal string")
    return int(v)


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _de_float(d: dict[str, Any]) -> float:
    return _FLOATS[d["v"]]


def _de_dict(d: dict[str, Any]) -> dict[Any, Any]:
    return {_de(k): _de(x) for k, x in d["v"]}


def _de_list(d: dict[str, Any]) -> list[Any]:
    v = d["v"]
    if type(v) is not list:
        raise TypeError("expected a list")
    return [_de(x) for x in v]


def _de_bytes(d: dict[str, Any]) -> bytes | bytearray:
    raw = base64.b64decode(d["v"], validate=True)
    return raw if d[TAG] == "bytes" else bytearray(raw)


def _tz_from(d: dict[str, Any], value: Any) -> Any:
    key = d.get("tz")
    if key is not None:
        import zoneinfo  # stdlib; reads tz database files, never code

        return value.replace(tzinfo=zoneinfo.ZoneInfo(key))
    name = d.get("tzname")
    if name is not None:
        return value.replace(tzinfo=timezone(value.utcoffset(), name))
    return value


def _de_datetime(d: dict[str, Any]) -> datetime:
    value = _tz_from(d, datetime.fromisoformat(d["v"]))
    return value.replace(fold=1) if d.get("fold") else value


def _de_time(d: dict[str, Any]) -> time:
    value = _tz_from(d, time.fromisoformat(d["v"]))
    return value.replace(fold=1) if d.get("fold") else value


def _de_timedelta(d: dict[str, Any]) -> timedelta:
    days, seconds, microseconds = d["v"]
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _de_path(d: dict[str, Any]) -> pathlib.PurePath:
    cls = _PATH_CLASSES[d["cls"]]
    try:
        return cls(d["v"])
    except NotImplementedError:  # a WindowsPath read on POSIX (or the reverse)
        pure = pathlib.PureWindowsPath if d["cls"] == "WindowsPath" else pathlib.PurePosixPath
        return pure(d["v"])


def _de_enum(d: dict[str, Any]) -> Enum:
    cls = _resolve_kind(d["cls"], "enum", lambda c: issubclass(c, Enum))
    return cls(_de(d["v"]))


def _de_namedtuple(d: dict[str, Any]) -> tuple[Any, ...]:
    cls = _resolve_kind(d["cls"], "namedtuple", _is_namedtuple_class)
    return cls(*_de_list(d))


def _de_dataclass(d: dict[str, Any]) -> Any:
    cls = _resolve_kind(d["cls"], "dataclass", dataclasses.is_dataclass)
    values = {name: _de(x) for name, x in d["v"].items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SerializationError(
            f"cannot deserialize a dataclass of class {d['cls']!r}: it has no field(s) {', '.join(sorted(unknown))}"
        )
    init = {k: x for k, x in values.items() if fields[k].init}
    try:
        obj = cls(**init)
    except Exception as exc:
        raise SerializationError(f"cannot rebuild a {d['cls']!r} dataclass: {type(exc).__name__}: {exc}") from exc
    for k, x in values.items():
        if not fields[k].init:
            object.__setattr__(obj, k, x)
    return obj


def _de_pydantic(d: dict[str, Any]) -> Any:
    cls = _resolve_kind(d["cls"], "pydantic model", lambda c: _pydantic_kind(c) is not None)
    data = _de(d["v"])
    try:
        return cls.model_validate(data) if _pydantic_kind(cls) == "v2" else cls.parse_obj(data)  # type: ignore[attr-defined]
    except Exception as exc:
        raise SerializationError(f"cannot rebuild a {d['cls']!r} pydantic model: {exc}") from exc


def _de_error(d: dict[str, Any]) -> BaseException:
    ref = d["cls"]
    message = d.get("message", "")
    args = tuple(_de(a) for a in d.get("args", []))
    attrs = {k: _de(x) for k, x in d.get("attrs", {}).items()}
    tb = d.get("traceback")
    exc = _rebuild_error(_resolve(ref), args, attrs)
    if exc is None:
        module, _, qualname = str(ref).rpartition(":")
        exc = StandInError(qualname, module, str(message), args, attrs, tb if isinstance(tb, str) else None)
    elif isinstance(tb, str):
        exc.__wf_traceback__ = tb  # type: ignore[attr-defined]
    cause = d.get("cause")
    if cause is not None:
        exc.__cause__ = _de(cause)
    return exc


def _rebuild_error(cls: type | None, args: tuple[Any, ...], attrs: dict[str, Any]) -> BaseException | None:
    """The exception as its own class if that class is here and can be built; None otherwise."""
    if cls is None or not issubclass(cls, BaseException):
        return None
    exc: BaseException | None = None
    try:
        exc = cls(*args)
    except Exception:  # noqa: BLE001 - a constructor with another signature: build it without __init__
        try:
            exc = cls.__new__(cls, *args)
            exc.args = args
        except Exception:  # noqa: BLE001 - user classes may refuse any construction
            return None
    if type(exc) is not cls and not isinstance(exc, cls):
        return None
    for k, x in attrs.items():
        if k.startswith("__") and k != "__notes__":
            continue  # data never sets special attributes
        with contextlib.suppress(Exception):  # a read-only attribute: keep what the constructor made
            setattr(exc, k, x)
    return exc


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "int": _de_int,
    "float": _de_float,
    "dict": _de_dict,
    "tuple": lambda d: tuple(_de_list(d)),
    "namedtuple": _de_namedtuple,
    "set": lambda d: set(_de_list(d)),
    "frozenset": lambda d: frozenset(_de_list(d)),
    "bytes": _de_bytes,
    "bytearray": _de_bytes,
    "datetime": _de_datetime,
    "date": lambda d: date.fromisoformat(d["v"]),
    "time": _de_time,
    "timedelta": _de_timedelta,
    "decimal": lambda d: Decimal(d["v"]),
    "uuid": lambda d: uuid.UUID(d["v"]),
    "path": _de_path,
    "enum": _de_enum,
    "dataclass": _de_dataclass,
    "pydantic": _de_pydantic,
    "error": _de_error,
}


# --- bytes ---


def dumps(value: object, where: str = "value") -> bytes:
    """`value` serialized and encoded as JSON bytes."""
    data = serialize(value, where)
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise SerializationError(f"cannot encode {where} as JSON: {exc}") from None


def loads(data: bytes | str) -> object:
    """Inverse of `dumps`. SerializationError if `data` is not valid JSON or malformed."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"cannot deserialize: not valid JSON ({exc})") from None
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if _TAG_BYTES not in raw and b"\\u" not in raw:
        return parsed  # plain JSON (no tag key, even escaped): nothing to rebuild
    return deserialize(parsed)
