"""Hook tokens, unique across runs: `tokens/<sha256(token)>.json` = {token, run_id, hook_id}.

A file exists while a live hook may hold the token. It is created exclusively before the
hook's `hook_created` is committed and removed after the hook is disposed (or its run
ends). A crash can leave a stale file behind (the hook was never committed, or was
disposed); whoever finds one decides it is stale by reading the owner run's log under
that run's lock (see `RunStore`), so every change to a file pointing at run R happens
while R's lock is held. Tokens are hashed: any string can be a token, none names a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..runtime.errors import CorruptDataError
from .files import create_file_exclusive, read_json, write_bytes_atomic

log = logging.getLogger("wf.world_local")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    token: str
    run_id: str
    hook_id: str


class TokenIndex:
    """The `tokens/` folder of a data directory."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def path(self, token: str) -> Path:
        return self.root / (hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest() + ".json")

    def read(self, token: str) -> TokenEntry | None:
        """Who holds `token` according to the index (None if nobody, or the file is unreadable)."""
        path = self.path(token)
        try:
            return self._read_path(path)
        except FileNotFoundError:
            return None
        except CorruptDataError as exc:
            log.warning("ignoring corrupt token file: %s", exc)
            return None

    def _read_path(self, path: Path) -> TokenEntry:
        raw = read_json(path)
        try:
            return TokenEntry(str(raw["token"]), str(raw["run_id"]), str(raw["hook_id"]))
        except (TypeError, KeyError) as exc:
            raise CorruptDataError(f"{path} is not a token entry ({exc})", str(path)) from exc

    def create(self, token: str, run_id: str, hook_id: str) -> bool:
        """Claim `token` for a hook if nobody holds it; False if a file for it exists."""
        entry = {"token": token, "run_id": run_id, "hook_id": hook_id}
        return create_file_exclusive(self.path(token), orjson.dumps(entry), fsync=self.fsync)

    def replace(self, token: str, run_id: str, hook_id: str) -> None:
        """Take over `token` from a stale holder (the caller holds the stale owner's run lock)."""
        entry = {"token": token, "run_id": run_id, "hook_id": hook_id}
        write_bytes_atomic(self.path(token), orjson.dumps(entry), fsync=self.fsync)

    def release(self, token: str, run_id: str, hook_id: str) -> None:
        """Remove the token's file if it still points at this hook (the caller holds run_id's lock)."""
        entry = self.read(token)
        if entry is not None and entry.run_id == run_id and entry.hook_id == hook_id:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(token))

    def entries(self) -> Iterator[TokenEntry]:
        """Every readable entry (stale ones included), skipping and logging corrupt files."""
        for name in sorted(os.listdir(self.root)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                yield self._read_path(self.root / name)
            except FileNotFoundError:
                continue
            except CorruptDataError as exc:
                log.warning("skipping corrupt token file: %s", exc)
