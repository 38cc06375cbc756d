"""Security: ids and tokens never name paths, tokens are unguessable, data never runs code.

The HTTP rules of `wf dev` and `wf ui` (Host, token, same-origin JSON, body/depth/time limits)
are tested in tests/web/test_http_rules.py, and `wf dev` itself in tests/cli/test_dev_server.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import wf
from wf.runtime.entities import Event, EventType
from wf.runtime.errors import InvalidIdError, NotFoundError, SerializationError, WorldError
from wf.runtime.serialization import TAG, deserialize, loads
from wf.world_local.world import LocalWorld

E = EventType
ROOT = Path(__file__).resolve().parents[2]
WF_BIN = Path(sys.executable).with_name("wf")
TRAVERSALS = ["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "", "x\x00y", "x/y", "~root"]


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@wf.workflow(name="sec.hooked")
async def hooked() -> object:
    return await wf.create_hook()


# --- the API ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", TRAVERSALS)
async def test_run_ids_that_could_name_a_path_are_refused(world: LocalWorld, tmp_path: Path, bad: str) -> None:
    before = _tree(tmp_path)
    with pytest.raises(wf.RunNotFoundError):
        await wf.get_run_async(bad)
    with pytest.raises(WorldError):  # InvalidIdError (400) or NotFoundError, never a file access
        await world.runs.get(bad)
    with pytest.raises(InvalidIdError):
        await world.events.create(bad, Event(bad, E.RUN_CREATED, data={"workflow_name": "x"}))
    with pytest.raises(InvalidIdError):
        await world.streams.write(bad, "default", "chunk")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("bad", ["../x", "../../etc/passwd", "a/b", ".."])
async def test_step_hook_and_wait_ids_that_could_name_a_path_are_refused(world: LocalWorld, bad: str) -> None:
    run = await wf.start_async("sec.hooked")
    for event_type, data in ((E.STEP_CREATED, {"step_name": "s"}), (E.HOOK_CREATED, {"token": "t"}),
                             (E.WAIT_CREATED, {"resume_at": "2030-01-01T00:00:00+00:00"})):
        with pytest.raises(InvalidIdError):
            await world.events.create(run.id, Event(run.id, event_type, correlation_id=bad, data=data))


@pytest.mark.parametrize("token", ["../../evil", "/etc/passwd", "..", "a/../../../b", "x" * 500])
async def test_hook_tokens_are_hashed_before_they_reach_the_disk(
    world: LocalWorld, data_dir: Path, tmp_path: Path, token: str,
) -> None:
    before = {p for p in _tree(tmp_path) if not p.startswith("data")}
    run = await wf.start_async("sec.hooked")
    await world.events.create(run.id, Event(run.id, E.RUN_STARTED))
    await world.events.create(run.id, Event(run.id, E.HOOK_CREATED, correlation_id="hook_1",
                                            data={"token": token, "metadata": None}))
    assert (await world.hooks.get_by_token(token)).run_id == run.id
    await wf.resume_hook_async(token, {"ok": 1})
    names = [p.name for p in (data_dir / "tokens").iterdir()]
    assert all(re.fullmatch(r"[0-9a-f]{64}\.json", n) for n in names), names
    assert {p for p in _tree(tmp_path) if not p.startswith("data")} == before
    with pytest.raises(wf.HookNotFoundError):
        await wf.resume_hook_async("../../" + token, 1)


async def test_generated_hook_tokens_carry_at_least_128_secret_bits(world: LocalWorld) -> None:
    from wf.runtime.worker import Worker

    worker = Worker(world)
    import asyncio

    task = asyncio.create_task(worker.run())
    try:
        runs = [await wf.start_async("sec.hooked") for _ in range(2)]
        tokens = []
        for run in runs:
            for _ in range(200):
                hooks = (await world.hooks.list(run_id=run.id)).data
                if hooks:
                    break
                await asyncio.sleep(0.01)
            tokens.append(hooks[0].token)
    finally:
        worker.stop()
        await task
    assert tokens[0] != tokens[1]
    for run, token in zip(runs, tokens, strict=True):
        secret = token.removeprefix("hk_")
        assert len(secret) * 4 >= 128 and re.fullmatch(r"[0-9a-f]+", secret)
        seed = (await world.runs.get(run.id)).attributes["seed"]
        assert len(seed) * 4 >= 128  # the key the token is derived from: secrets.token_hex(16)
        assert run.id.removeprefix("wrun_") not in token  # not derived from the (guessable) run id alone


# --- the CLI -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["inspect", "../../etc/passwd"], ["inspect", "/etc/passwd"], ["cancel", "../x"], ["stream", "../x"],
    ["replay", "../../x"], ["hook", "resume", "../../x", "{}"],
])
def test_cli_refuses_traversal_with_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    data = tmp_path / "data"
    asyncio.run(LocalWorld(data, fsync=False).start())  # an existing data dir, used before
    before = _tree(tmp_path)
    proc = subprocess.run([str(WF_BIN), *args, "--data-dir", str(data)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, WF_FSYNC="0"), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _tree(tmp_path) == before  # nothing created, inside the data dir or out of it


# --- nothing from the data dir is ever executed -------------------------------------------

_FORBIDDEN = re.compile(
    r"\b(?:import\s+pickle|from\s+pickle|pickle\.|marshal\.loads|shelve\.|yaml\.load\(|eval\(|exec\()"
)


def test_no_pickle_eval_or_exec_in_the_engine() -> None:
    found = []
    for folder in ("runtime", "world_local", "cli", "wf"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if _FORBIDDEN.search(code) and "literal_eval" not in code:
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize("kind", ["dataclass", "enum", "namedtuple", "pydantic", "error"])
def test_a_crafted_value_naming_os_system_runs_nothing(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    crafted = {TAG: kind, "cls": "os:system", "v": {"command": command} if kind in ("dataclass", "pydantic")
               else [command], "args": [command], "message": command}
    try:
        value = loads(orjson.dumps(crafted))
    except SerializationError:
        value = None
    assert not marker.exists()
    if kind == "error":  # an unknown class comes back as a stand-in carrying the data, nothing more
        assert isinstance(value, Exception) and type(value).__name__ == "StandInError"


async def test_a_run_whose_stored_input_names_os_system_fails_without_running_it(
    world: LocalWorld, tmp_path: Path, side_file: Path,
) -> None:
    import asyncio

    from wf.runtime.worker import Worker

    marker = tmp_path / "pwned"
    evil = {TAG: "dataclass", "cls": "os:system", "v": {"command": f"touch {marker}"}}
    run_id = "wrun_01JEVILEVILEVILEVILEVILEVI"
    await world.events.create(run_id, Event(run_id, E.RUN_CREATED, data={
        "workflow_name": "soak.chain", "input": {"args": [evil], "kwargs": {}}, "attributes": {}}))
    from wf.runtime.messages import enqueue_workflow

    await enqueue_workflow(world, run_id)
    worker = Worker(world)
    task = asyncio.create_task(worker.run())
    try:
        run = await wf.get_run_async(run_id)
        with pytest.raises(wf.WorkflowRunFailedError, match="os:system"):  # one clear error, the run over
            await run.result_async(timeout=15)
    finally:
        worker.stop()
        await task
    assert not marker.exists()
    with pytest.raises(SerializationError):
        deserialize(evil)
    with pytest.raises(NotFoundError):
        await world.runs.get("wrun_01JEVILEVILEVILEVILEVILEVX")
