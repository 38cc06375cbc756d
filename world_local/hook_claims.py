"""Hook-token claims of the local World: a token is held by one live hook at a time, and a
token file damaged by a crash is rebuilt from the logs that know who holds it."""

from __future__ import annotations

import logging

import orjson

from ..runtime.entities import (
    HookStatus,
    RunStatus,
)
from ..runtime.errors import (
    CorruptDataError,
    InvalidIdError,
)
from ..runtime.ids import validate_id
from ..runtime.state_machine import RunState
from .run_handles import (
    TOKEN_CHECK_TIMEOUT,
    _Changes,
    _LockTimeout,
)

log = logging.getLogger("wf.world_local")


class HookTokenClaims:
    """Claiming, checking and repairing hook tokens (a part of `RunStore`)."""

    def _token_in_use(self, run_id: str, hook_id: str, token: str, state: RunState, changes: _Changes) -> bool:
        """Claim `token` for the hook, or tell that a live hook holds it (True)."""
        for _ in range(5):
            if self.tokens.create(token, run_id, hook_id):
                changes.claimed.append((token, hook_id))
                return False
            try:
                entry = self.tokens.read(token)
            except CorruptDataError as exc:
                log.warning("hook token file damaged, rebuilding it from the logs: %s", exc)
                self.repair_token(token, own=(run_id, state))
                continue
            if entry is None:
                continue  # released in the meantime: try again
            if entry.run_id == run_id:
                holder = state.hooks.get(entry.hook_id)
                if holder is not None and holder.status == HookStatus.ACTIVE and holder.token == token:
                    return True
                self.tokens.replace(token, run_id, hook_id)
                changes.claimed.append((token, hook_id))
                return False
            taken = self._token_held_elsewhere(entry.run_id, entry.hook_id, token, run_id, hook_id)
            if taken is not None:
                if not taken:
                    changes.claimed.append((token, hook_id))
                return taken
        return True

    def _token_held_elsewhere(
        self, owner_run: str, owner_hook: str, token: str, run_id: str, hook_id: str
    ) -> bool | None:
        """Whether another run's live hook holds `token`; a stale entry is taken over (False).

        None if the entry changed meanwhile (look again).
        """
        try:
            validate_id(owner_run, "run id")
            with self.locked(owner_run, timeout=TOKEN_CHECK_TIMEOUT) as owner:
                try:
                    entry = self.tokens.read(token)
                except CorruptDataError:
                    return None  # damaged meanwhile: the caller looks again and repairs it
                if entry is None or (entry.run_id, entry.hook_id) != (owner_run, owner_hook):
                    return None
                if owner is not None:
                    holder = self.refresh(owner).state.hooks.get(owner_hook)
                    if holder is not None and holder.status == HookStatus.ACTIVE and holder.token == token:
                        return True
                self.tokens.replace(token, run_id, hook_id)
                return False
        except _LockTimeout:
            log.warning("token held by run %s whose lock stays taken: treating it as in use", owner_run)
            return True
        except (CorruptDataError, InvalidIdError) as exc:
            log.warning("token held by unreadable run %s (%s): treating it as in use", owner_run, exc)
            return True

    def repair_token(self, token: str, own: tuple[str, RunState] | None = None) -> None:
        """Rebuild `token`'s damaged file from the logs: point it at the live hook that holds the
        token, or remove it if none does. Nothing happens if the file is not damaged.

        `own`: the run whose lock the caller holds, and its state. The holder is looked for
        among the active runs (a hook lives only while its run does); a run whose lock stays
        taken leaves the file as it is (it is repaired by the next one who meets it).
        """
        with self.tokens.damaged(token) as damaged:
            if not damaged:
                return
            needle = orjson.dumps(token)
            candidates = sorted(self.index.run_ids((RunStatus.PENDING, RunStatus.RUNNING)) - {own[0] if own else ""})
            if own is not None and self._rebuild_for(token, own[0], own[1]):
                return
            for run_id in candidates:
                try:
                    validate_id(run_id, "run id")
                    with open(f"{self.runs_str}/{run_id}/events.jsonl", "rb") as f:
                        if needle not in f.read():
                            continue
                    with self.locked(run_id, timeout=TOKEN_CHECK_TIMEOUT) as handle:
                        if handle is not None and self._rebuild_for(token, run_id, self.refresh(handle).state):
                            return
                except (FileNotFoundError, NotADirectoryError, InvalidIdError):
                    continue
                except _LockTimeout:
                    log.warning("cannot repair the file of hook token %r: run %s stays locked", token, run_id)
                    return
                except CorruptDataError as exc:
                    log.warning("repairing a hook token file: skipping unreadable run %s (%s)", run_id, exc)
            self.tokens.remove_damaged(token)
            log.warning("removed the damaged file of hook token %r: no live hook holds it", token)

    def _rebuild_for(self, token: str, run_id: str, state: RunState) -> bool:
        # With run_id's lock held: point the token at its live hook holding it, if it has one.
        for hook in state.hooks.values():
            if hook.status == HookStatus.ACTIVE and hook.token == token:
                self.tokens.replace(token, run_id, hook.hook_id)
                log.warning("rebuilt the damaged file of hook token %r: run %s, hook %s", token, run_id, hook.hook_id)
                return True
        return False

    def _ensure_tokens(self, run_id: str, state: RunState) -> None:
        """With the run's lock held: every live hook of the run has its token file (a power loss may
        have lost or damaged it), unless another run's live hook took the token meanwhile."""
        for hook in state.hooks.values():
            if hook.status != HookStatus.ACTIVE:
                continue
            try:
                entry = self.tokens.read(hook.token)
            except CorruptDataError:
                self.repair_token(hook.token, own=(run_id, state))
                continue
            if entry is None and self.tokens.create(hook.token, run_id, hook.hook_id):
                log.warning("run %s: rewrote the missing file of its hook token %r", run_id, hook.token)
