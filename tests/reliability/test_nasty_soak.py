"""The nasty soak, CI version: workers killed and stopped, clients killed mid-start, `wf recover` and
`wf doctor --fix` alongside, hooks from other processes, cancellations, and a power loss between rounds.

The one-hour version: `python -m tests.reliability.soak --nasty --minutes 60` (RELIABILITY.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .soak import run_nasty_soak


@pytest.mark.slow
async def test_runs_survive_stops_kills_clients_tools_and_power_losses(tmp_path: Path) -> None:
    result = await run_nasty_soak(rounds=2, round_seconds=20, workers=3, seed=19, data_dir=tmp_path,
                                  finish_timeout=120)
    report, counts = result.audit, result.counts
    assert report.problems == []
    assert counts["power_losses"] == 1 and counts["logs_cut"] > 0 and counts["queue_files_removed"] > 0
    assert counts["kills"] > 0 and counts["stops"] > 0 and counts["clients_killed"] > 0
    assert counts["cancels"] > 0 and counts["hooks_sent_by_cli"] > 0
    assert counts["wf_recover"] + counts["wf_doctor"] > 0
    assert report.runs >= counts["runs_started"]
    assert report.lost == report.wrong_output == report.duplicate_completions == 0
    assert report.illegal_transitions == report.unexplained_results == report.events_after_end == 0
    assert report.over_budget == report.early_timers == 0
    assert report.queue_left == report.live_hooks_left == report.views_mismatched == 0
