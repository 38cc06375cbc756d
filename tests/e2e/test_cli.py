"""Scenarios through the command line: `wf start FILE:FN ARGS --wait --json`, and `wf inspect --json`."""

from __future__ import annotations

from types import ModuleType

from .conftest import E2E, WORKFLOWS_FILE

REF = str(WORKFLOWS_FILE)


async def test_add_ten_through_the_cli(e2e: E2E) -> None:
    result = await e2e.cli("start", f"{REF}:add_ten", "123", "--wait", "--json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert (out["status"], out["output"], out["workflow"]) == ("completed", 133, "tests.e2e.workflows.add_ten")
    steps = await e2e.env.steps(out["run_id"])
    assert [s.output for s in steps] == [125, 128, 133]


async def test_a_failing_run_through_the_cli_exits_1_with_its_error(e2e: E2E) -> None:
    result = await e2e.cli("start", f"{REF}:step_error", '"bad input"', "--wait", "--json")
    assert result.code == 1
    out = result.json()
    assert out["status"] == "failed" and "ValueError: bad input" in out["error"]["message"]


async def test_hooks_through_the_cli_start(e2e: E2E, workflows: ModuleType) -> None:
    import wf

    result = await e2e.cli("start", f"{REF}:hold_token", '"cli-token-' + e2e.mode + '"', "--json")
    assert result.code == 0, result.stderr
    run_id = result.json()["run_id"]
    await e2e.env.resume_hook(f"cli-token-{e2e.mode}", {"via": "api"})
    assert await (await wf.get_run_async(run_id)).result_async(timeout=20) == {"via": "api"}


async def test_inspect_json_shows_input_output_and_status(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.add_ten, 123)
    assert await run.result_async(timeout=20) == 133
    result = await e2e.cli("inspect", run.id, "--json")
    assert result.code == 0, result.stderr  # a missing command fails here (exit 2), it is never skipped
    shown = result.json()["run"]
    assert (shown["run_id"], shown["status"], shown["output"]) == (run.id, "completed", 133)
    assert shown["input"] == {"args": [123], "kwargs": {}}
    assert [s["step_name"] for s in result.json()["steps"]] == ["tests.e2e.workflows.add"] * 3
