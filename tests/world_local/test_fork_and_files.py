"""Two suspected defects, settled by test: a fork of a child run never reports to the original's parent;
`create_file_exclusive` never leaves a truncated file after a short write."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import wf
from wf.runtime.entities import EventType
from wf.world_local.world import LocalWorld

from .conftest import wf_cli_async

E = EventType


async def test_a_fork_of_a_child_run_does_not_report_to_the_original_parent(
    world: LocalWorld, data_dir: Path, start_worker: Callable[..., object],
) -> None:
    start_worker()
    parent = await wf.start_async("wl.parent", 1)
    assert await parent.result_async(timeout=20) == 107
    children = [r for r in (await world.runs.list()).data if r.attributes.get("parent_token")]
    assert len(children) == 1
    child = children[0]
    parent_events = await world.events.list(parent.id)
    forked = await wf_cli_async(data_dir, "fork", child.run_id, "--at", "3", "--json")
    assert forked.returncode == 0, forked.stdout + forked.stderr
    fork_id = json.loads(forked.stdout)["run_id"]
    assert fork_id != child.run_id
    ended = await world.wait_for_end(fork_id, timeout=20)
    assert ended is not None and str(ended.status) == "completed"
    attributes = (await world.runs.get(fork_id)).attributes
    assert not {"parent_token", "parent_run_id", "idempotency_key"} & set(attributes), attributes
    assert await world.events.list(parent.id) == parent_events  # the parent heard nothing more
    assert [e.event_type for e in parent_events].count(E.HOOK_RECEIVED) == 1


_SHORT_WRITE = r"""
import resource, signal, sys
from pathlib import Path
from wf.world_local.files import create_file_exclusive
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is then cut short (or fails: EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
try:
    made = create_file_exclusive(Path(sys.argv[1]), b"x" * 100, fsync=False)
    print("created" if made else "exists")
except OSError as exc:
    print("error", exc.errno)
"""


def test_create_file_exclusive_never_leaves_a_truncated_file_after_a_short_write(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    proc = subprocess.run([sys.executable, "-c", _SHORT_WRITE, str(target)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    outcome = proc.stdout.split()
    if outcome[0] == "created":
        assert target.read_bytes() == b"x" * 100
    else:
        assert outcome[0] == "error" and not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "token.json"] == []  # no temporary file left
