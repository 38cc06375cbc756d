"""The crash soak, short version: `wf worker` subprocesses killed with SIGKILL while they work.

The long version is `python -m tests.reliability.soak --runs 500 --kills 200`; its figures
are in RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .soak import run_soak


@pytest.mark.slow
async def test_runs_survive_kill_9_of_their_workers(tmp_path: Path) -> None:
    result = await run_soak(40, 10, workers=2, seed=20240, data_dir=tmp_path, fsync=True, finish_timeout=45)
    report = result.audit
    assert result.kills >= 10 and result.mass_kills >= 1
    assert report.problems == []
    assert report.runs >= 40  # plus the children
    assert report.lost == report.wrong_output == 0
    assert report.duplicate_completions == report.illegal_transitions == report.unexplained_results == 0
    assert report.early_timers == 0 and report.timers > 0
    assert report.queue_left == report.live_hooks_left == report.views_mismatched == 0
