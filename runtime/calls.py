"""How calls are recorded: a call's input as `{"args", "kwargs"}`, and an exception as `{type, message, traceback}`."""

from __future__ import annotations

import os
import traceback
from typing import Any

from .errors import StepFailedError
from .serialization import deserialize, serialize

#: Frames from wf's own runtime are left out of the tracebacks users see.
RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def error_info(exc: BaseException) -> dict[str, Any]:
    """{type, message, traceback} of an exception, the traceback trimmed to the user's frames."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(RUNTIME_DIR) and "/asyncio/" not in f.filename
    ]
    tb = "".join(traceback.format_list(frames))
    tb += "".join(traceback.format_exception_only(type(exc), exc))
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "traceback": tb}
    if isinstance(exc, StepFailedError):
        info["step_error"] = {"type": exc.error_type, "message": exc.error_message,
                              "traceback": exc.error_traceback}
    return info


def split_input(value: Any) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) of a recorded call input (see `serialize_call_input`)."""
    data = deserialize(value) if value is not None else {}
    if not isinstance(data, dict):
        return [data], {}
    return list(data.get("args") or []), dict(data.get("kwargs") or {})


def serialize_call_input(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], where: str) -> Any:
    """The serialized `{"args": [...], "kwargs": {...}}` a run or step records as its input."""
    return serialize({"args": list(args), "kwargs": kwargs}, where=where)
