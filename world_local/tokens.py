"""Hook tokens, unique across runs: `tokens/<sha256(token)>.json` = {token, run_id, hook_id}.

A file exists while a live hook may hold the token. It is created exclusively before the
hook's `hook_created` is committed and removed after the hook is disposed (or its run
ends). A crash can leave a stale file behind (the hook was never committed, or was
disposed); whoever finds one decides it is stale by reading the owner run's log under
that run's lock (see `RunStore`), so every change to a file pointing at run R happens
while R's lock is held. Tokens are hashed: any string can be a token, none names a path.

A damaged file (empty or garbage: what a power loss leaves of an unsynced new file) is
rebuilt from the logs by whoever meets it (`RunStore.repair_token`): under an exclusive
`flock` of the damaged file (`damaged()`), it is rewritten for the live hook that the logs
say holds the token, or removed when none does; every other writer then goes on as usual.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
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
        """Who holds `token` according to the index (None if nobody).

        CorruptDataError if its file is damaged (see `RunStore.repair_token`); an entry of
        another token (a hash collision, or a file copied by hand) is damage too.
        """
        path = self.path(token)
        try:
            entry = self._read_path(path)
        except FileNotFoundError:
            return None
        if entry.token != token:
            raise CorruptDataError(f"{path} holds the entry of another token", str(path))
        return entry

    def _read_path(self, path: Path) -> TokenEntry:
        return _entry(read_json(path), path)

    @contextlib.contextmanager
    def damaged(self, token: str, timeout: float = 2.0) -> Iterator[bool]:
        """Whether `token`'s file is damaged; if so, hold an exclusive lock on it meanwhile.

        False if the file is absent, readable, replaced while we waited, or its lock stays
        taken for `timeout` (someone else is repairing it). Inside, `replace` rebuilds it and
        `remove_damaged` removes it.
        """
        path = self.path(token)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield False
            return
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.005)
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    yield False  # repaired (rewritten or removed) while we waited
                    return
            except FileNotFoundError:
                yield False
                return
            yield not self._holds_entry(fd, path, token)
        finally:
            os.close(fd)  # drops the lock

    @staticmethod
    def _holds_entry(fd: int, path: Path, token: str) -> bool:
        parts = []
        while chunk := os.pread(fd, 1 << 16, sum(len(p) for p in parts)):
            parts.append(chunk)
        try:
            return _entry(orjson.loads(b"".join(parts)), path).token == token
        except (orjson.JSONDecodeError, CorruptDataError):
            return False

    def remove_damaged(self, token: str) -> None:
        """Remove a damaged token file (call inside `damaged()`)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(token))

    def create(self, token: str, run_id: str, hook_id: str) -> bool:
        """Claim `token` for a hook if nobody holds it; False if a file for it exists."""
        entry = {"token": token, "run_id": run_id, "hook_id": hook_id}
        return create_file_exclusive(self.path(token), orjson.dumps(entry), fsync=self.fsync)

    def replace(self, token: str, run_id: str, hook_id: str) -> None:
        """Take over `token` from a stale holder (the caller holds the stale owner's run lock)."""
        entry = {"token": token, "run_id": run_id, "hook_id": hook_id}
        write_bytes_atomic(self.path(token), orjson.dumps(entry), fsync=self.fsync)

    def release(self, token: str, run_id: str, hook_id: str) -> None:
        """Remove the token's file if it still points at this hook (the caller holds run_id's lock).

        A damaged file is left to whoever meets it next: it is rebuilt from the logs then.
        """
        try:
            entry = self.read(token)
        except CorruptDataError as exc:
            log.warning("not releasing hook token of run %s: %s", run_id, exc)
            return
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


def _entry(raw: object, path: Path) -> TokenEntry:
    try:
        return TokenEntry(str(raw["token"]), str(raw["run_id"]), str(raw["hook_id"]))  # type: ignore[index]
    except (TypeError, KeyError) as exc:
        raise CorruptDataError(f"{path} is not a token entry ({exc})", str(path)) from exc
