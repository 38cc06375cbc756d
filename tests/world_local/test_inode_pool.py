"""The queue's pool of reusable files (local World): a pooled file goes to exactly one new
name, complete, and the pool stays bounded."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from wf.world_local import inode_pool
from wf.world_local.inode_pool import InodePool


def _files(folder: Path, n: int, tag: str) -> list[str]:
    paths = []
    for i in range(n):
        path = folder / f"{tag}{i}.json"
        path.write_bytes(b'{"old": "content that is longer than the new one"}')
        paths.append(str(path))
    return paths


def test_racing_claimers_in_two_processes_each_get_a_different_file(tmp_path: Path) -> None:
    messages = tmp_path / "messages"
    messages.mkdir()
    first, second = InodePool(tmp_path / "spare", "a"), InodePool(tmp_path / "spare", "b")
    for path in _files(messages, 40, "old"):
        assert first.put(path)
    inodes: dict[str, int] = {}
    lock = threading.Lock()

    def claim(pool: InodePool, name: str) -> None:
        for i in range(40):
            path = str(messages / f"{name}{i}.json")
            if pool.write_new(path, b'{"new": %d}' % i):
                with lock:
                    inodes[path] = os.stat(path).st_ino

    threads = [threading.Thread(target=claim, args=(pool, name)) for pool, name in ((first, "x"), (second, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(inodes) == 40  # every pooled file went somewhere...
    assert len(set(inodes.values())) == 40  # ...to exactly one name
    for path in inodes:
        assert Path(path).read_bytes().startswith(b'{"new": ')  # complete, none of the old bytes
        assert Path(path).read_bytes().endswith(b"}")
    assert not list((tmp_path / "spare").iterdir())


def test_an_empty_pool_creates_nothing_and_a_full_one_takes_nothing(tmp_path: Path, monkeypatch) -> None:
    pool = InodePool(tmp_path / "spare", "t")
    assert pool.write_new(str(tmp_path / "new.json"), b"{}") is False
    assert not (tmp_path / "new.json").exists()
    monkeypatch.setattr(inode_pool, "MAX_POOLED", 3)
    kept = [pool.put(path) for path in _files(tmp_path, 5, "f")]
    assert kept == [True, True, True, False, False]
    assert len(list((tmp_path / "spare").iterdir())) == 3


def test_a_claim_left_by_a_dead_process_is_removed_when_a_pool_opens(tmp_path: Path) -> None:
    spare = tmp_path / "spare"
    spare.mkdir()
    stale, fresh = spare / ".c.dead.1", spare / ".c.live.1"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (1, 1))
    InodePool(spare, "t")
    assert not stale.exists() and fresh.exists()
