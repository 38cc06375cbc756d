"""Fault injection for the local World's writes: a test seam, inert unless armed.

Armed by the environment variable `WF_FAULTS` when this module is first imported, or
in-process by `arm()`. The spec is a comma-separated list of `kind[@op]:probability`:

    WF_FAULTS=enospc:0.01,eio:0.01,tear:0.005,vanish:0.005
    WF_FAULTS=eio@append:0.05          (only the run logs' appends)

Kinds: `enospc` and `eio` make the write raise that OSError before anything is written;
`tear` writes a prefix of the data (where the hook passes its descriptor) and then raises
EIO, as a dying disk or process would leave it; `vanish` lets the write succeed and then
deletes the file it wrote (a file lost behind the World's back). Operations (`op`), named
by the hooks: `atomic` (write_bytes_atomic), `exclusive` (create_file_exclusive),
`append` (a run's event log), `stream` (a stream's file), `queue` (a queue message file).
`vanish` never applies to `append` or `stream`: losing a whole log is not a fault the
World claims to survive.

Every hook is one call, `faults.check(op, path)` (before the write) or
`faults.after(op, path)` (after it), whose first statement tests the module-level `ARMED`
flag: disarmed, a hook costs one global lookup. `WF_FAULTS_SEED` makes the draws
repeatable; `counts` tells how many faults of each kind were injected.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("enospc", "eio", "tear", "vanish")
OPS = ("atomic", "exclusive", "append", "stream", "queue")
_NO_VANISH = frozenset({"append", "stream"})

#: True while some fault may fire; the hooks test it first.
ARMED = False


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    probability: float
    op: str | None = None  # None: every operation


_rules: list[Rule] = []
_where: Callable[[str], bool] | None = None
_rng = random.Random()
#: (kind, op) -> faults injected so far in this process.
counts: collections.Counter[tuple[str, str]] = collections.Counter()


class InjectedFault(OSError):
    """An OSError raised on purpose by the fault seam (a real errno: ENOSPC or EIO)."""


def parse(spec: str) -> list[Rule]:
    """Rules from a `WF_FAULTS` spec. ValueError with one clear line for a bad one."""
    rules = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, prob = part.partition(":")
        kind, _, op = name.partition("@")
        if not sep or kind not in KINDS or (op and op not in OPS):
            raise ValueError(
                f"bad fault {part!r}: expected kind[@op]:probability with kind in {', '.join(KINDS)}"
                f" and op in {', '.join(OPS)}"
            )
        try:
            p = float(prob)
        except ValueError:
            raise ValueError(f"bad fault {part!r}: {prob!r} is not a probability") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bad fault {part!r}: probability must be between 0 and 1")
        rules.append(Rule(kind, p, op or None))
    return rules


def arm(spec: str | list[Rule], *, seed: int | None = None, where: Callable[[str], bool] | None = None) -> None:
    """Start injecting the faults of `spec` in this process (replacing any armed before);
    with `where`, only into writes of the paths it accepts."""
    global ARMED, _where
    _rules[:] = parse(spec) if isinstance(spec, str) else list(spec)
    _where = where
    if seed is not None:
        _rng.seed(seed)
    ARMED = bool(_rules)


def disarm() -> None:
    """Stop injecting faults (the counts are kept)."""
    global ARMED
    ARMED = False
    _rules.clear()


def _draw(op: str, path: object, *, vanish: bool) -> str | None:
    if _where is not None and not _where(str(path)):
        return None
    for rule in _rules:
        if rule.op is not None and rule.op != op:
            continue
        if (rule.kind == "vanish") != vanish or (vanish and op in _NO_VANISH):
            continue
        if _rng.random() < rule.probability:
            counts[(rule.kind, op)] += 1
            return rule.kind
    return None


def check(op: str, path: object, fd: int | None = None, data: bytes | memoryview | None = None) -> None:
    """Before a write of `data` to `path` (open as `fd`): maybe raise ENOSPC/EIO, or tear it."""
    if not ARMED:
        return
    kind = _draw(op, path, vanish=False)
    if kind is None:
        return
    if kind == "enospc":
        raise InjectedFault(errno.ENOSPC, f"injected fault: {os.strerror(errno.ENOSPC)}", str(path))
    if kind == "tear" and fd is not None and data is not None and len(data) > 1:
        os.write(fd, bytes(data[: _rng.randrange(1, len(data))]))
    raise InjectedFault(errno.EIO, f"injected fault: {os.strerror(errno.EIO)}", str(path))


def after(op: str, path: object) -> None:
    """After a successful write of `path`: maybe make the file vanish."""
    if not ARMED:
        return
    if _draw(op, path, vanish=True) is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)  # type: ignore[arg-type]


def _arm_from_env() -> None:
    spec = os.environ.get("WF_FAULTS", "").strip()
    if spec:
        seed = os.environ.get("WF_FAULTS_SEED")
        arm(spec, seed=int(seed) if seed else None)


_arm_from_env()
