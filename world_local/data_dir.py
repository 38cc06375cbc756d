"""The data directory of the local World: checking it is ours, creating it, naming its parts.

A data directory is recognised by `<data>/wf-data.json` = {"format": "wf-local", "version": 1}.
A missing or empty directory is initialised; anything else without that marker is refused
with DataDirError, so that wf never scatters files into a directory it does not own.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime.errors import CorruptDataError, DataDirError
from .files import read_json, write_json_atomic

FORMAT = "wf-local"
VERSION = 1
MARKER = "wf-data.json"


def default_data_dir() -> Path:
    """`WF_DATA_DIR`, or `./.wf`."""
    return Path(os.environ.get("WF_DATA_DIR") or ".wf")


def _is_ignorable(name: str) -> bool:
    # The temporary file of another process creating the marker right now.
    return name.startswith(f".{MARKER}.")


def open_data_dir(path: Path, *, fsync: bool, create: bool = True) -> Path:
    """Check (or create) the data directory at `path`; return its absolute path.

    Raises DataDirError when `path` is a file, unreadable, holds another format or
    version, or is a non-empty directory that is not a wf data directory; with
    `create=False`, also when it is not a wf data directory yet (nothing is made).
    """
    root = Path(path).absolute()
    marker = root / MARKER
    try:
        if root.exists() and not root.is_dir():
            raise DataDirError(f"data directory {root} is a file, not a directory")
        if not create and not marker.exists():
            if root.is_dir() and any(root.iterdir()):
                raise DataDirError(f"{root} is not a wf data directory (set --world, --data-dir or WF_WORLD)")
            raise DataDirError(
                f"no wf data directory at {root} (nothing has run here yet; set --world, --data-dir or WF_WORLD)"
            )
        root.mkdir(parents=True, exist_ok=True)
        try:
            meta = read_json(marker)
        except FileNotFoundError:
            meta = None
        if meta is None:
            others = [name for name in os.listdir(root) if not _is_ignorable(name)]
            if MARKER in others:  # created by another process in the meantime
                meta = read_json(marker)
            elif others:
                raise DataDirError(
                    f"{root} is not a wf data directory (no {MARKER}, and it is not empty); "
                    "choose another WF_DATA_DIR"
                )
            else:
                write_json_atomic(marker, {"format": FORMAT, "version": VERSION}, fsync=fsync)
                return root
    except CorruptDataError as exc:
        raise DataDirError(f"{root} is not a usable wf data directory: {exc}") from exc
    except OSError as exc:
        raise DataDirError(f"cannot use data directory {root}: {exc.strerror or exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise DataDirError(f"{root} holds data of format {found!r}, not {FORMAT!r}; choose another WF_DATA_DIR")
    if meta.get("version") != VERSION:
        raise DataDirError(
            f"{root} holds {FORMAT} data of version {meta.get('version')!r}; this wf reads version {VERSION}"
        )
    return root
