"""The crash soak on PostgreSQL: three workers, kill -9 every few moments, one server restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..pg_server import PgServer
from .soak import run_pg_soak


@pytest.mark.slow
async def test_workers_killed_and_the_server_restarted_lose_nothing(
        world_store, pg_server: PgServer | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = await run_pg_soak(world_store.url, tmp_path, pg_server, runs=40, kills=10, workers=3, seed=13)
    await world_store.drop()
    report = result.audit
    print(f"\npostgres soak: {result.summary()}")
    assert result.kills >= 10
    assert result.restarted_server or pg_server is None
    assert report.problems == []
    assert report.runs >= 40
    assert report.lost == report.wrong_output == 0
    assert report.duplicate_completions == report.illegal_transitions == report.unexplained_results == 0
    assert report.events_after_end == 0
    assert report.queue_left == report.live_hooks_left == report.views_mismatched == 0
    assert result.files_left == [], "a worker wrote files in its working directory"
