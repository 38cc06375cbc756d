"""Child workflows: awaited from a workflow (a child run), or started from a step (independent)."""

from __future__ import annotations

from types import ModuleType

from .conftest import E2E


async def test_a_workflow_awaits_a_child_workflow(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.parent, 41)
    assert await run.result_async(timeout=20) == {"child": 42, "meta": run.id}
    runs = (await e2e.env.world.runs.list(workflow_name="tests.e2e.workflows.child")).data
    (child,) = [r for r in runs if r.attributes.get("parent_run_id") == run.id]
    assert child.status == "completed"
    await e2e.env.assert_replays(run)


async def test_a_step_starts_an_independent_run(e2e: E2E, workflows: ModuleType) -> None:
    import wf

    run = await e2e.env.start(workflows.start_from_step, 1)
    child_id = await run.result_async(timeout=20)
    assert child_id != run.id
    assert await (await wf.get_run_async(child_id)).result_async(timeout=20) == 2
