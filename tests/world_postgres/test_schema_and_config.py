"""The Postgres World's schema, URL and start-up: migrations racing, refusals, typed errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wf.runtime.entities import Event, EventType
from wf.runtime.errors import DataDirError, InvalidIdError, StorageUnavailableError, WorldConfigError
from wf.runtime.ids import new_run_id
from wf.world_postgres import schema as pg_schema
from wf.world_postgres.url import parse_world_url
from wf.world_postgres.world import PostgresWorld, drop_schema
from wf.world_testing.stores import with_query

from .conftest import fresh_schema
from .helpers import REPO, sql


@pytest.fixture
async def schema_name(pg_url: str):  # type: ignore[no-untyped-def]
    name = fresh_schema()
    yield name
    await drop_schema(pg_url, name)


_MIGRATE = """
import asyncio, sys, time
from pathlib import Path
from wf.world_postgres.world import PostgresWorld
url, go = sys.argv[1], Path(sys.argv[2])
world = PostgresWorld(url)
while not go.exists():
    time.sleep(0.001)
print(asyncio.run(world.prepare_schema()))
"""


def test_several_processes_migrating_a_new_schema_at_once_all_succeed(
        pg_url: str, schema_name: str, tmp_path: Path) -> None:
    url = with_query(pg_url, schema=schema_name)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, url, str(go)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1.0)  # let them import and wait at the line
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {str(pg_schema.LATEST)}
    assert sql(url, "SELECT value FROM meta WHERE key = 'version'") == [(str(pg_schema.LATEST),)]
    assert sql(url, "SELECT count(*) FROM counters") == [(3,)]  # the seed rows once, not six times


async def test_a_schema_written_by_a_newer_wf_is_refused_with_one_line(pg_url: str, schema_name: str) -> None:
    url = with_query(pg_url, schema=schema_name)
    await PostgresWorld(url).prepare_schema()
    sql(url, "UPDATE meta SET value = %s WHERE key = 'version'", (str(pg_schema.LATEST + 1),))

    for create in (True, False):
        world = PostgresWorld(url, create=create)
        with pytest.raises(DataDirError, match="newer wf") as caught:
            await world.start()
        assert "\n" not in str(caught.value)
        await world.close()
    assert sql(url, "SELECT value FROM meta WHERE key = 'version'") == [(str(pg_schema.LATEST + 1),)]  # untouched

    cli = subprocess.run([sys.executable, "-m", "wf.cli", "db", "migrate", "--world", url], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "newer wf" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


async def test_create_false_needs_a_migrated_schema_and_creates_nothing(pg_url: str, schema_name: str) -> None:
    url = with_query(pg_url, schema=schema_name)
    world = PostgresWorld(url, create=False)
    with pytest.raises(DataDirError, match="wf db migrate"):
        await world.start()
    with pytest.raises(DataDirError, match="wf db migrate"):
        await world.runs.list()  # a World used without start() checks too
    await world.close()
    assert sql(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema_name,)) == [(0,)]


async def test_wf_db_migrate_creates_the_schema_and_says_its_version(pg_url: str, schema_name: str) -> None:
    url = with_query(pg_url, schema=schema_name)
    for _ in range(2):  # and again: nothing to do
        cli = subprocess.run([sys.executable, "-m", "wf.cli", "db", "migrate", "--world", url], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip().splitlines() == [
            f"schema {schema_name} is at version {pg_schema.LATEST} on {pg_url}"]
    world = PostgresWorld(url, create=False)
    await world.start()
    await world.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_server_is_a_typed_error_at_start_and_exit_2_in_the_cli() -> None:
    url = f"postgresql://wf@127.0.0.1:{_closed_port()}/wf"
    world = PostgresWorld(url)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="unavailable") as caught:
        await world.start()
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)
    await world.close()

    cli = subprocess.run([sys.executable, "-m", "wf.cli", "db", "migrate", "--world", url], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2
    assert len(cli.stderr.strip().splitlines()) == 1 and "unavailable" in cli.stderr
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize("name", ["Upper", "a-b", "x;drop table runs", 'q"uote', "pg_catalog", "1abc", "", "a" * 64])
def test_schema_names_are_checked_before_any_sql(name: str) -> None:
    with pytest.raises(WorldConfigError, match="invalid Postgres schema name"):
        PostgresWorld("postgresql://wf@127.0.0.1:1/wf", schema=name)
    with pytest.raises(WorldConfigError, match="invalid Postgres schema name"):
        parse_world_url(with_query("postgresql://wf@127.0.0.1:1/wf", schema=name))


def test_the_schema_comes_from_the_argument_the_url_the_environment_then_wf(monkeypatch: pytest.MonkeyPatch) -> None:
    base = "postgresql://u:secret@h:5/db?sslmode=disable"
    monkeypatch.delenv("WF_PG_SCHEMA", raising=False)
    assert parse_world_url(base) == ("postgresql://u:secret@h:5/db?sslmode=disable", "wf")
    monkeypatch.setenv("WF_PG_SCHEMA", "from_env")
    assert parse_world_url(base)[1] == "from_env"
    assert parse_world_url(base + "&schema=from_url") == ("postgresql://u:secret@h:5/db?sslmode=disable", "from_url")
    assert parse_world_url(base + "&schema=from_url", "from_arg")[1] == "from_arg"
    with pytest.raises(WorldConfigError, match="not a PostgreSQL URL"):
        parse_world_url("mysql://h/db")
    world = PostgresWorld(base)
    assert "secret" not in world.where


@pytest.mark.parametrize("prepare", ["", "off"], ids=["prepared-by-default", "prepare-off"])
async def test_statements_are_prepared_unless_the_url_says_prepare_off(pg_url: str, schema_name: str,
                                                                       prepare: str) -> None:
    url = with_query(pg_url, schema=schema_name, **({"prepare": prepare} if prepare else {}))
    assert parse_world_url(url)[0] == pg_url.split("?")[0]  # not passed to libpq, which would refuse it
    world = PostgresWorld(url)
    await world.start()
    try:
        run_id = new_run_id()
        await world.events.create(run_id, Event(run_id=run_id, event_type=EventType.RUN_CREATED,
                                                data={"workflow_name": "w"}))
        for i in range(5):
            await world.events.create(run_id, Event(run_id=run_id, event_type=EventType.STEP_CREATED,
                                                    correlation_id=f"s{i}", data={"step_name": "x", "input": i}))
            await world.runs.get(run_id)

        async def prepared(conn, attempt):  # type: ignore[no-untyped-def]
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            return (await cur.fetchone())[0]

        counts = [await world.db.run(prepared) for _ in range(3)]
        assert (max(counts) > 0) == (prepare != "off")
        assert len((await world.steps.list(run_id)).data) == 5
    finally:
        await world.close()
    with pytest.raises(WorldConfigError, match="prepare"):
        PostgresWorld(with_query(pg_url, prepare="sometimes"))


async def test_hostile_values_reach_the_database_only_as_parameters(pg_url: str, schema_name: str) -> None:
    url = with_query(pg_url, schema=schema_name)
    world = PostgresWorld(url)
    await world.start()
    try:
        evil = "x'); DROP TABLE runs; --"
        for bad_id in [evil, "../x", "a b", "", "é"]:
            with pytest.raises(InvalidIdError):
                await world.runs.get(bad_id)
            with pytest.raises(InvalidIdError):
                await world.events.create(bad_id, Event(run_id=bad_id, event_type=EventType.RUN_CREATED,
                                                        data={"workflow_name": "w"}))
        run_id = new_run_id()
        await world.events.create(run_id, Event(run_id=run_id, event_type=EventType.RUN_CREATED,
                                                data={"workflow_name": evil, "input": {evil: evil}}))
        await world.events.create(run_id, Event(run_id=run_id, event_type=EventType.RUN_STARTED))
        await world.events.create(run_id, Event(run_id=run_id, event_type=EventType.HOOK_CREATED,
                                                correlation_id="h1", data={"token": evil, "metadata": None}))
        await world.queue.enqueue(evil, {"n": evil}, idempotency_key=evil, order_key=evil)
        await world.streams.write(run_id, evil, evil)

        run = await world.runs.get(run_id)
        assert (run.workflow_name, run.input) == (evil, {evil: evil})
        assert (await world.runs.list(workflow_name=evil)).data[0].run_id == run_id
        assert (await world.hooks.get_by_token(evil)).hook_id == "h1"
        [message] = await world.queue.list(evil)
        assert (message.queue, message.payload, message.idempotency_key) == (evil, {"n": evil}, evil)
        assert await world.streams.read(run_id, evil) == ([evil], False)
        assert sql(url, "SELECT count(*) FROM runs") == [(1,)]
    finally:
        await world.close()


async def test_ten_worlds_starting_together_recover_each_active_run_once(pg_url: str, schema_name: str) -> None:
    url = with_query(pg_url, schema=schema_name)
    first = PostgresWorld(url)
    await first.start()
    runs = []
    for i in range(30):
        run_id = new_run_id()
        await first.events.create(run_id, Event(run_id=run_id, event_type=EventType.RUN_STARTED,
                                                data={"workflow_name": "w", "input": i}))
        runs.append(run_id)
    done = runs[0]
    await first.events.create(done, Event(run_id=done, event_type=EventType.RUN_COMPLETED, data={"output": 1}))
    await first.close()
    sql(url, "UPDATE counters SET value = 0 WHERE name IN ('recoveries', 'recovered_at')")

    worlds = [PostgresWorld(url) for _ in range(10)]
    started = time.monotonic()
    await asyncio.gather(*(w.start() for w in worlds))
    elapsed = time.monotonic() - started
    try:
        messages = await worlds[0].queue.list("workflow")
        assert sorted(m.payload["run_id"] for m in messages) == sorted(runs[1:])  # one each; none for the ended run
        recoveries = sql(url, "SELECT value FROM counters WHERE name = 'recoveries'")[0][0]
        print(f"\nten Worlds started together in {elapsed:.2f} s; recovery ran {recoveries} time(s)")
        assert recoveries == 1
        assert await worlds[0].recover() is False  # another recovery right after finds nothing to do
    finally:
        for w in worlds:
            await w.close()
