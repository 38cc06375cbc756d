"""The local World's boundary: an OSError never leaves it raw.

Every public coroutine method of the World's parts is wrapped (`storage_boundary`) so that an
OSError of the file system (a full or read-only disk, an I/O error, a permission refused, the
data directory gone) reaches the caller as `StorageUnavailableError` (503: retry later),
naming the operation and keeping the OSError as its cause. Errors the World raises on purpose
(`WorldError`s) and `TimeoutError` pass through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ..runtime.errors import StorageUnavailableError

C = TypeVar("C", bound=type)


def unavailable(what: str, exc: OSError) -> StorageUnavailableError:
    """The StorageUnavailableError for an OSError met while doing `what`."""
    detail = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    err = StorageUnavailableError(f"storage unavailable ({what}): {detail}{where}")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except TimeoutError:
            raise
        except OSError as exc:
            raise unavailable(name, exc) from exc

    return wrapper


def storage_boundary(cls: C) -> C:
    """Wrap the public coroutine methods defined on `cls` (see the module docstring)."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        setattr(cls, name, _wrap(f"{cls.__name__.removeprefix('Local').lower()}.{name}", member))
    return cls
