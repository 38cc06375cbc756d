"""Issue 15, the local loop without friction: a run remembers its code, loading without a path has no
surprises, names resolve from the loaded code, arguments are checked at the door, Ctrl-C and the
built-in worker of `wf start --wait` behave. Real `wf` subprocesses in real folders."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wf.runtime.client import start_run
from wf.runtime.loader import ORIGIN_ATTRIBUTE, import_path, python_files
from wf.world_local.world import LocalWorld

from .conftest import REPO, cli_env

FLOWS = '''
import asyncio

import wf

@wf.step
async def add(a: int, b: int) -> int:
    return a + b

@wf.workflow
async def add_ten(x: int) -> int:
    return await add(x, 10)

@wf.workflow
async def everything(x: int) -> int:
    return await add(x, 1)

@wf.workflow
async def napper(x: int) -> int:
    await wf.sleep("30s")
    return x

@wf.workflow
async def parent(x: int) -> int:
    return await napper(x)

@wf.workflow
async def parent_quick(x: int) -> int:
    (result,) = await asyncio.gather(add_ten(x))  # the child starts in a task of its own
    return result
'''

OTHER = '''
import wf

@wf.workflow
async def everything() -> str:
    return "other"
'''


def wf_in(cwd: Path, data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`wf ARGS...` run from the folder `cwd` on `data_dir`."""
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], cwd=cwd, env=cli_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a workflow module and the things a new user's folder holds besides."""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "flows.py").write_text(FLOWS)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "__main__.py").write_text('import sys\nprint("usage: python -m pkg …", file=sys.stderr)\n'
                                              "sys.exit(2)\n")
    (root / "script.py").write_text('open("side_effect.txt", "w").write("ran")\n')
    (root / "broken.py").write_text("import wf\nimport no_such_module_xyz\n\n@wf.workflow\nasync def broken():\n"
                                    "    return 1\n")
    for hidden in (".hidden", "venv", ".venv/lib/site-packages"):
        (root / hidden).mkdir(parents=True)
        (root / hidden / "h.py").write_text('import wf\nraise SystemExit("hidden module ran")\n\n@wf.workflow\n'
                                            "async def h():\n    return 1\n")
    return root


def _run_ids(cwd: Path, data_dir: Path) -> list[str]:
    listed = wf_in(cwd, data_dir, "inspect", "runs", "--json")
    if listed.returncode == 2 and "no wf data directory" in listed.stderr:
        return []
    assert listed.returncode == 0, listed.stderr
    return [item["run_id"] for item in json.loads(listed.stdout)["items"]]


# --- item 1: a run remembers where its code came from ---


def test_replay_and_fork_find_the_code_from_another_folder(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = wf_in(REPO, data, "start", f"{project / 'flows.py'}:add_ten", "5", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    story = json.loads(wf_in(elsewhere, data, "inspect", run_id, "--json").stdout)
    assert story["run"]["attributes"][ORIGIN_ATTRIBUTE] == {"module": "flows",
                                                           "file": str((project / "flows.py").resolve())}

    replayed = wf_in(elsewhere, data, "replay", run_id)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replays cleanly" in replayed.stdout
    every = wf_in(elsewhere, data, "replay", "--workflow", "flows.add_ten")
    assert every.returncode == 0, every.stdout + every.stderr
    assert "1 replay cleanly" in every.stdout
    forked = wf_in(elsewhere, data, "fork", run_id, "--at", "3", "--json")
    assert forked.returncode == 0, forked.stderr
    assert json.loads(forked.stdout)["divergence"] is None and "warning" not in forked.stderr

    # --path still overrides: code that does not define the workflow is not replaced by the recorded one.
    other = tmp_path / "other"
    other.mkdir()
    (other / "flows.py").write_text(OTHER)
    overridden = wf_in(elsewhere, data, "replay", run_id, "--path", str(other / "flows.py"))
    assert overridden.returncode == 2 and "not defined in the loaded code" in overridden.stderr


async def test_start_records_the_origin_of_a_function(tmp_path: Path) -> None:
    module = import_path(Path(__file__).with_name("flows.py"))
    world = LocalWorld(tmp_path / "data", fsync=False)
    await world.start()
    try:
        run = await start_run(world, module.retrying, [1], {})
        by_name = await start_run(world, module.retrying.name, [1], {})  # a loaded name: the same
        for handle in (run, by_name):
            info = await world.runs.get(handle.id, resolve_data=False)
            assert info.attributes[ORIGIN_ATTRIBUTE] == {"module": module.__name__,
                                                         "file": str(Path(module.__file__).resolve())}
    finally:
        await world.close()


# --- item 2: no path means no surprises ---


def test_no_path_imports_only_workflow_modules(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = wf_in(project, data, "start", "flows.everything", "41", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == 42
    assert not (project / "side_effect.txt").exists(), "a plain script ran"
    assert "usage" not in done.stderr and "hidden module ran" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken.py" in warnings[0] and "no_such_module_xyz" in warnings[0]

    # The worker too: a broken module is a warning, the others are served.
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker"], cwd=project, env=cli_env(data),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        first, second = proc.stderr.readline(), proc.stderr.readline()
        assert "broken.py" in first and first.startswith("warning:"), first
        assert "ready: 5 workflow(s)" in second, second
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert not (project / "side_effect.txt").exists()


def test_configured_paths_and_explicit_files(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (project / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.wf]\npaths = ["flows.py"]\n')
    done = wf_in(project, data, "start", "everything", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, "a module outside [tool.wf] paths was imported"
    named = wf_in(project, data, "replay", json.loads(done.stdout)["run_id"], "--path", "broken.py")
    assert named.returncode == 2 and "no_such_module_xyz" in named.stderr
    assert len(named.stderr.splitlines()) == 1


def test_the_repository_root_never_runs_benchmarks_main() -> None:
    files = python_files([REPO])
    assert REPO / "benchmarks" / "__main__.py" not in files
    assert not any(".venv" in f.parts or f.name.startswith("test_") for f in files)
    assert REPO / "examples" / "hello.py" in files


# --- item 8: names resolve from the loaded code ---


def test_names_resolve_from_loaded_code_and_short_names(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    full = wf_in(project, data, "start", "flows.everything", "1", "--json")
    assert full.returncode == 0, full.stderr
    short = wf_in(project, data, "start", "everything", "1", "--json")
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["workflow"] == "flows.everything"

    (project / "more.py").write_text(OTHER)
    both = wf_in(project, data, "start", "everything", "--json")
    assert both.returncode == 2 and "ambiguous" in both.stderr and "more.everything" in both.stderr
    unknown = wf_in(project, data, "start", "evrything", "1")
    assert unknown.returncode == 2 and "unknown workflow" in unknown.stderr and "everything" in unknown.stderr


# --- item 10: bad arguments are caught at the door ---


def test_bad_arguments_exit_2_and_record_nothing(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (["flows.py:add_ten", "1", "2", "3"], ["add_ten"], ["add_ten", "--kwargs", '{"y": 1}']):
        result = wf_in(project, data, "start", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1 and "wrong arguments for workflow flows.add_ten(x: int)" in lines[0], lines
    assert _run_ids(project, data) == []


async def test_wf_start_raises_type_error_and_records_nothing(tmp_path: Path) -> None:
    import wf

    module = import_path(Path(__file__).with_name("flows.py"))
    wf.configure(data_dir=tmp_path / "data")
    try:
        with pytest.raises(TypeError, match=r"wrong arguments for workflow .*retrying"):
            await wf.start_async(module.retrying, 1, 2)
        with pytest.raises(TypeError, match="missing a required argument"):
            await wf.start_async(module.retrying.name)
        world = LocalWorld(tmp_path / "data", fsync=False)
        await world.start()
        try:
            assert (await world.runs.list()).data == []
        finally:
            await world.close()
    finally:
        wf.configure(data_dir=None)


def test_a_name_no_loaded_code_defines_is_refused(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def bare_client() -> None:  # a process without the code may record any name
        world = LocalWorld(data, fsync=False)
        await world.start()
        try:
            await start_run(world, "ghost.flow", [], {})
        finally:
            await world.close()

    asyncio.run(bare_client())
    refused = wf_in(project, data, "start", "ghost.flow")
    assert refused.returncode == 2 and "unknown workflow 'ghost.flow'" in refused.stderr
    assert len(_run_ids(project, data)) == 1


# --- item 11: Ctrl-C during `wf start --wait` ---


def test_ctrl_c_during_wait_names_the_run_that_goes_on(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "start", "flows.py:napper", "7", "--wait"],
                            cwd=project, env=cli_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _run_ids(project, data):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_id,) = _run_ids(project, data)
    assert proc.returncode == 130
    assert f"run {run_id} goes on" in err and f"wf inspect {run_id}" in err and "wf worker" in err, err
    assert "Traceback" not in err


# --- item 12: the built-in worker of `wf start --wait` drives its own run only ---


def test_start_wait_leaves_other_runs_alone(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def others() -> list[str]:
        world = LocalWorld(data, fsync=False)
        await world.start()
        try:
            ghost = await start_run(world, "ghost.flow", [], {})
            module_run = await start_run(world, "flows.add_ten", [1], {})  # loaded by `wf start`, not its run
            return [ghost.id, module_run.id]
        finally:
            await world.close()

    ghost_id, other_id = asyncio.run(others())
    done = wf_in(project, data, "start", "flows.py:add_ten", "2", "--wait", "--json",)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == 12
    assert "ERROR" not in done.stderr and "unknown workflow" not in done.stderr, done.stderr
    for rid in (ghost_id, other_id):
        story = json.loads(wf_in(project, data, "inspect", rid, "--json").stdout)
        assert story["run"]["status"] == "pending", rid


def test_start_without_a_worker_says_so(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    started = wf_in(project, data, "start", "flows.py:add_ten", "1")
    assert started.returncode == 0
    assert "no worker is running: start `wf worker flows.py` or `wf dev flows.py`" in started.stderr
    assert os.path.exists(data)


# --- item 3: `wf replay --pdb` ---


def _in_a_terminal(cwd: Path, data_dir: Path, args: list[str], keys: bytes) -> tuple[int, str]:
    """Run `wf ARGS` with a pseudo-terminal as stdin/stdout, typing `keys`; (exit code, what it printed)."""
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", *args], cwd=cwd, env=cli_env(data_dir),
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    out = b""
    typed = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not typed and b"(Pdb)" in out:
                os.write(leader, keys)
                typed = True
            if proc.poll() is not None and not ready:
                break
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return proc.returncode, out.decode(errors="replace")


def test_pdb_in_a_terminal_and_without_one(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = wf_in(project, data, "start", "flows.py:add_ten", "5", "--wait", "--json")
    run_id = json.loads(done.stdout)["run_id"]
    code, out = _in_a_terminal(project, data, ["replay", run_id, "--until", "2", "--pdb"], b"p x\nc\n")
    assert "entering pdb in" in out and "(Pdb)" in out, out
    assert "botframe" not in out and "Traceback" not in out, out
    assert "5" in out.split("(Pdb)", 1)[1], out
    assert code == 0, out
    piped = wf_in(project, data, "replay", run_id, "--until", "2", "--pdb")
    assert piped.returncode == 2 and len(piped.stderr.splitlines()) == 1 and "terminal" in piped.stderr


# --- item 9: cancelling a run cancels the children it awaits ---


def _wait_for(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_cancel_reaches_children_unless_detached(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "worker", "flows.py"], cwd=project, env=cli_env(data),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None and "ready" in proc.stderr.readline()

        def children_of(parent_id: str) -> list[dict]:
            listed = json.loads(wf_in(project, data, "inspect", "runs", "--json", "--limit", "100").stdout)["items"]
            return [r for r in listed if r["attributes"].get("parent_run_id") == parent_id]

        for detach in (False, True):
            parent_id = wf_in(project, data, "start", "parent", "3").stdout.strip()
            _wait_for(lambda pid=parent_id: children_of(pid))
            (child,) = children_of(parent_id)
            args = ["cancel", parent_id, "--json"] + (["--no-children"] if detach else [])
            cancelled = wf_in(project, data, *args)
            assert cancelled.returncode == 0, cancelled.stderr
            assert json.loads(cancelled.stdout)["children_cancelled"] == ([] if detach else [child["run_id"]])
            status = json.loads(wf_in(project, data, "inspect", child["run_id"], "--json").stdout)["run"]["status"]
            assert status == ("running" if detach else "cancelled"), (detach, status)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


# --- item 13: the smaller rough edges ---


def test_a_parent_shows_child_runs_and_its_trace_names_the_workflow_line(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = wf_in(project, data, "start", "parent_quick", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    parent_id = json.loads(done.stdout)["run_id"]
    story = wf_in(project, data, "inspect", parent_id)
    assert story.returncode == 0, story.stderr
    as_json = json.loads(wf_in(project, data, "inspect", parent_id, "--json").stdout)
    (child,) = as_json["children"]
    assert child["workflow_name"] == "flows.add_ten" and child["status"] == "completed"
    assert "Children" in story.stdout and child["run_id"] in story.stdout
    assert "start_child" not in story.stdout.split("Timeline")[0], story.stdout
    assert "Hooks" not in story.stdout and "wfchild_" not in story.stdout.split("Timeline")[0]

    trace = wf_in(tmp_path, data, "replay", parent_id, "--trace")
    assert trace.returncode == 0, trace.stdout + trace.stderr
    sites = re.findall(r"\[([^\]]+)\]", trace.stdout.replace("\n", ""))  # the call sites, [file:line]
    assert sites and all(site.endswith(tuple(f"flows.py:{n}" for n in range(20, 40))) for site in sites), sites
    assert "replay_cmds" not in trace.stdout


def test_piped_tables_keep_ids_whole(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_id = wf_in(project, data, "start", "flows.py:napper", "1").stdout.strip()
    env = cli_env(data)
    env.pop("COLUMNS")
    listed = subprocess.run([sys.executable, "-m", "wf.cli", "queue", "ls"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith(run_id + " ") for line in listed.stdout.splitlines()), listed.stdout


def test_a_garbage_cursor_is_bad_input(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    wf_in(project, data, "start", "flows.py:add_ten", "1")
    for cursor in ("garbage", "wrun_knosuchrun"):
        result = wf_in(project, data, "inspect", "runs", "--cursor", cursor)
        assert result.returncode == 2 and "invalid cursor" in result.stderr, (cursor, result.stdout, result.stderr)
        assert len(result.stderr.splitlines()) == 1


def test_doctor_does_not_promise_to_fix_a_corrupt_log_and_its_help_is_right(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = wf_in(project, data, "start", "flows.py:add_ten", "1", "--wait", "--json")
    run_id = json.loads(done.stdout)["run_id"]
    (data / "runs" / run_id / "events.jsonl").write_bytes(b"\x00garbage{\n")
    report = wf_in(project, data, "doctor")
    assert report.returncode == 1
    assert "repairs them" not in report.stdout and "cannot repair" in report.stdout, report.stdout
    helped = wf_in(project, data, "doctor", "--help")
    assert "wf/runtime/doctor.py" not in helped.stdout and "runtime/doctor.py" in helped.stdout


def test_hook_resume_before_the_hook_exists_says_it_may_not_exist_yet(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    wf_in(project, data, "start", "flows.py:add_ten", "1")
    early = wf_in(project, data, "hook", "resume", "not-yet", "{}")
    assert early.returncode == 2 and "may not exist yet" in early.stderr


# --- items 4 and 10: doctor names what no worker will run ---


def test_doctor_notes_runs_no_live_worker_will_run(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_id = wf_in(project, data, "start", "flows.py:napper", "1").stdout.strip()
    alone = json.loads(wf_in(project, data, "doctor", "--json").stdout)
    assert alone["findings"] == []
    assert any("no worker is running" in note and "flows.napper" in note and "flows.py" in note
               for note in alone["notes"]), alone

    async def bare_client() -> None:
        world = LocalWorld(data, fsync=False)
        await world.start()
        try:
            await start_run(world, "ghost.flow", [], {})
        finally:
            await world.close()

    asyncio.run(bare_client())
    port = _free_port()
    dev = subprocess.Popen([sys.executable, "-m", "wf.cli", "dev", "flows.py", "--no-live", "--no-reload",
                            "--port", str(port)], cwd=project, env=cli_env(data), stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
    try:
        assert dev.stderr is not None and "wf dev ready" in dev.stderr.readline()
        report = wf_in(project, data, "doctor")
        assert report.returncode == 0, report.stdout
        assert "no live worker serves workflow ghost.flow" in report.stdout, report.stdout
        assert "flows.napper" not in report.stdout and run_id not in report.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- item 7: lists are newest first by creation time ---


def test_child_runs_and_forks_list_in_time_order(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    parent = json.loads(wf_in(project, data, "start", "parent_quick", "1", "--wait", "--json").stdout)["run_id"]
    later = json.loads(wf_in(project, data, "start", "add_ten", "2", "--wait", "--json").stdout)["run_id"]
    forked = json.loads(wf_in(project, data, "fork", parent, "--json").stdout)["run_id"]
    items = json.loads(wf_in(project, data, "inspect", "runs", "--json").stdout)["items"]
    child = next(r["run_id"] for r in items if r["attributes"].get("parent_run_id") == parent)
    assert child.startswith("wrun_k")
    listed = [r["run_id"] for r in items]
    assert listed[:4] == [forked, later, child, parent], listed
    created = [r["created_at"] for r in items]
    assert created == sorted(created, reverse=True)
    page = json.loads(wf_in(project, data, "inspect", "runs", "--json", "--limit", "2", "--cursor",
                            later).stdout)["items"]
    assert [r["run_id"] for r in page] == [child, parent]


# --- item 15: finding runs ---


def test_runs_by_time_text_and_tags_with_counts(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tagged = wf_in(project, data, "start", "flows.py:add_ten", "1001", "--tag", "env=prod", "--tag", "team=a",
                   "--wait", "--json")
    assert tagged.returncode == 0, tagged.stderr
    a = json.loads(tagged.stdout)["run_id"]
    b = json.loads(wf_in(project, data, "start", "add_ten", "2", "--tag", "env=dev", "--wait", "--json").stdout)[
        "run_id"]
    c = wf_in(project, data, "start", "napper", "3").stdout.strip()

    def ids(*args: str) -> list[str]:
        result = wf_in(project, data, "inspect", "runs", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [item["run_id"] for item in json.loads(result.stdout)["items"]]

    assert ids("--search", "1001") == [a]  # the input
    assert ids("--search", "1011") == [a]  # the output
    assert ids("--search", b[-8:].lower()) == [b]  # the id, any case
    assert ids("--tag", "env=prod") == [a]
    assert ids("--tag", "env") == [b, a]
    assert ids("--tag", "env=prod", "--tag", "team=b") == []
    assert ids("--since", "1h") == [c, b, a]
    assert ids("--until", "1h") == []
    assert ids("--since", "2020-01-01T00:00", "--status", "completed", "--limit", "1") == [b]
    counted = json.loads(wf_in(project, data, "inspect", "runs", "--json", "--tag", "env").stdout)["counts"]
    assert counted == {"pending": 0, "running": 0, "completed": 2, "failed": 0, "cancelled": 0}
    table = wf_in(project, data, "inspect", "runs")
    assert "runs by status: 1 pending · 2 completed" in table.stdout, table.stdout
    assert "env=prod, team=a" in table.stdout
    story = wf_in(project, data, "inspect", a)
    assert "tags" in story.stdout and "env=prod, team=a" in story.stdout

    for args in (["inspect", "runs", "--since", "yesterday-ish"], ["inspect", "steps", "--search", "x"],
                 ["start", "add_ten", "1", "--tag", "novalue"]):
        bad = wf_in(project, data, *args)
        lines = [line for line in bad.stderr.splitlines() if not line.startswith("warning:")]
        assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, bad.stderr)


async def test_wf_start_takes_tags(tmp_path: Path) -> None:
    import wf

    module = import_path(Path(__file__).with_name("flows.py"))
    wf.configure(data_dir=tmp_path / "data")
    try:
        run = await wf.start_async(module.retrying, 1, tags={"customer": "c-9"})
        assert (await run.info_async()).attributes["tags"] == {"customer": "c-9"}
        with pytest.raises(TypeError, match="tags"):
            await wf.start_async(module.retrying, 1, tags={"n": 1})
    finally:
        wf.configure(data_dir=None)


def test_stream_without_a_worker_says_so_and_keeps_waiting(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_id = wf_in(project, data, "start", "flows.py:napper", "1").stdout.strip()
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "stream", run_id], cwd=project, env=cli_env(data),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "no worker is running: start `wf worker flows.py` or `wf dev flows.py`" in line, line
        time.sleep(1.0)
        assert proc.poll() is None, "it stopped waiting"
    finally:
        proc.kill()
        proc.wait(10)
