"""Bad input to the inspect and operator commands: exit 2 and exactly one line on stderr, never a traceback."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .conftest import Runs, wf_cli

UNKNOWN_RUN = "wrun_01J0000000000000000000000"

CASES = [
    # (what, arguments, words the one line must hold)
    ("unknown run id", ["inspect", UNKNOWN_RUN], ["no run", UNKNOWN_RUN]),
    ("malformed run id", ["inspect", "../etc"], ["no run", "../etc"]),
    ("path in a run filter", ["inspect", "steps", "--run", "../../etc/passwd"], ["no run"]),
    ("unknown status", ["inspect", "runs", "--status", "sleepy"], ["sleepy", "completed"]),
    ("status of events", ["inspect", "events", "--status", "failed"], ["--type"]),
    ("unknown event type", ["inspect", "events", "--type", "step_exploded"], ["step_exploded"]),
    ("listing option on a run", ["inspect", "RUN:bad", "--status", "failed"], ["--status", "listings"]),
    ("malformed cursor", ["inspect", "steps", "--cursor", "nonsense"], ["cursor"]),
    ("cancel of an unknown run", ["cancel", UNKNOWN_RUN], ["no run"]),
    ("stream of an unknown run", ["stream", "../x"], ["no run"]),
    ("stream a run never wrote", ["stream", "RUN:stream", "--namespace", "logs"], ["no stream", "default"]),
    ("invalid JSON for a hook", ["hook", "resume", "tok-recorded", "{bad json"], ["not valid JSON"]),
    ("unknown hook token", ["hook", "resume", "no-such-token", '{"a": 1}'], ["no live hook", "no-such-token"]),
    ("fail-pending with no filter", ["queue", "fail-pending"], ["--all"]),
]


def test_bad_input_is_one_line_and_exit_2(recorded: Runs) -> None:
    """Every case of CASES (run at once, in parallel processes)."""

    def run(case: tuple[str, list[str], list[str]]) -> str | None:
        what, args, words = case
        args = [recorded.ids[a[4:]] if a.startswith("RUN:") else a for a in args]
        result = wf_cli(recorded.data_dir, *args)
        lines = result.stderr.splitlines()
        if result.returncode != 2 or len(lines) != 1 or result.stdout:
            return f"{what}: exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr!r}"
        if not lines[0].startswith("error: ") or not all(word in lines[0] for word in words):
            return f"{what}: {lines[0]!r} should hold {words}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(run, CASES) if p is not None]
    assert problems == []


def test_missing_data_dir(tmp_path: Path) -> None:
    for args in (["inspect", "runs"], ["queue", "ls"], ["doctor"]):
        result = wf_cli(tmp_path / "nowhere", *args)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [result.stderr.strip()]
        assert "no wf data directory" in result.stderr
        assert not (tmp_path / "nowhere").exists(), "a read-only command created the data dir"


def test_data_dir_of_another_format(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "wf-data.json").write_text(json.dumps({"format": "something-else", "version": 7}))
    result = wf_cli(data, "inspect", "runs")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "something-else" in result.stderr and "Traceback" not in result.stderr
