"""Which worker processes are alive on this data directory (`<data>/workers/`).

Each running worker owns one small file naming its process (pid, start time, boot id, see
`leases.py`) and what it says about itself; a file whose process is gone is stale and is
removed by the next reader. `wf start --wait` uses this to know whether to run the
workflow itself.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from ..runtime.ids import new_ulid
from .files import write_bytes_atomic
from .leases import Holder, current_holder, is_alive


class WorkerRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def announce(self, info: dict[str, Any]) -> str:
        """Record this process as a live worker; returns the id to retire it with."""
        self.root.mkdir(parents=True, exist_ok=True)
        worker_id = f"{os.getpid()}-{new_ulid()}"
        doc = {"worker_id": worker_id, "holder": current_holder().to_dict(), **info}
        write_bytes_atomic(self.root / f"{worker_id}.json", orjson.dumps(doc), fsync=False)
        return worker_id

    def retire(self, worker_id: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.root / f"{worker_id}.json")

    def live(self) -> list[dict[str, Any]]:
        """The live workers' self-descriptions; stale entries are removed."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        alive = []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = self.root / name
            try:
                doc = orjson.loads(path.read_bytes())
                holder = Holder.from_dict(doc.get("holder"))
            except (OSError, ValueError, AttributeError):
                continue
            if is_alive(holder):
                alive.append(doc)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return alive


class DrainFlag:
    """`<data>/drain.json`: a generation number that `wf queue drain` bumps."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def generation(self) -> int:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return 0
        value = doc.get("generation") if isinstance(doc, dict) else None
        return value if isinstance(value, int) else 0

    def bump(self) -> int:
        new = self.generation() + 1
        write_bytes_atomic(self.path, orjson.dumps({"generation": new}), fsync=False)
        return new
