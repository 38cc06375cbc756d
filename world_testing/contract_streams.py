"""Streams: ordered, closable chunk streams per run, readable live from other processes."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from wf.runtime.errors import EntityConflictError, InvalidIdError, SerializationError
from wf.runtime.world import StreamInfo, Streams, World

from .stores import Store

RUN = "wrun_01TESTSTREAMS"


@pytest.fixture
async def streams(world: World) -> Streams:
    return world.streams




def _writer_script(url: str, body: str) -> list[str]:
    """A command running `body` in a fresh Python process with `world` opened on the store at `url`."""
    code = textwrap.dedent(
        """
        import asyncio, sys, time
        from pathlib import Path
        from wf.runtime.config import world_from_url

        async def main(world):
        {body}

        async def run():
            world = world_from_url({url!r})
            await world.start()
            try:
                await main(world)
            finally:
                await world.close()

        asyncio.run(run())
        """
    ).format(body=textwrap.indent(textwrap.dedent(body), "    "), url=url)
    return [sys.executable, "-c", code]


def _stream_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*.jsonl") if p.is_file()]


# --- order, indexes, reading ---


async def test_chunks_read_back_in_order_with_their_indexes(streams: Streams) -> None:
    chunks = ["a", {"k": [1, 2, None]}, [True, 1.5], 7, None, "", {"nested": {"deep": ["x"]}}]
    indexes = [await streams.write(RUN, "default", chunk) for chunk in chunks]
    assert indexes == list(range(len(chunks)))
    assert await streams.read(RUN, "default") == (chunks, False)


async def test_write_many_appends_in_order_and_returns_the_last_index(streams: Streams) -> None:
    assert await streams.write(RUN, "s", "first") == 0
    assert await streams.write_many(RUN, "s", ["b", "c", "d"]) == 3
    assert await streams.write(RUN, "s", "e") == 4
    assert await streams.read(RUN, "s") == (["first", "b", "c", "d", "e"], False)


async def test_write_many_of_nothing_changes_nothing(streams: Streams) -> None:
    assert await streams.write_many(RUN, "s", []) == -1
    assert await streams.list(RUN) == []
    await streams.write_many(RUN, "s", ["a", "b"])
    assert await streams.write_many(RUN, "s", []) == 1
    await streams.close(RUN, "s")
    with pytest.raises(EntityConflictError):
        await streams.write_many(RUN, "s", [])


async def test_read_from_an_index(streams: Streams) -> None:
    await streams.write_many(RUN, "s", [f"c{i}" for i in range(10)])
    assert await streams.read(RUN, "s", start=7) == (["c7", "c8", "c9"], False)
    assert await streams.read(RUN, "s", start=10) == ([], False)
    assert await streams.read(RUN, "s", start=50) == ([], False)
    await streams.close(RUN, "s")
    assert await streams.read(RUN, "s", start=9) == (["c9"], True)
    assert await streams.read(RUN, "s", start=10) == ([], True)
    assert await streams.read(RUN, "s", start=50) == ([], True)


async def test_unknown_stream_reads_as_empty_and_open(streams: Streams) -> None:
    assert await streams.read(RUN, "never-written") == ([], False)


async def test_streams_of_one_run_are_independent(streams: Streams) -> None:
    await streams.write(RUN, "a", 1)
    await streams.write(RUN, "b", 2)
    await streams.close(RUN, "a")
    assert await streams.read(RUN, "a") == ([1], True)
    assert await streams.read(RUN, "b") == ([2], False)
    assert await streams.write(RUN, "b", 3) == 1


async def test_non_json_chunk_is_refused_and_nothing_is_written(streams: Streams) -> None:
    await streams.write(RUN, "s", "ok")
    with pytest.raises(SerializationError, match="chunk 1 is not JSON-compatible"):
        await streams.write_many(RUN, "s", ["fine", object()])
    assert await streams.read(RUN, "s") == (["ok"], False)


# --- closing ---


async def test_close_is_idempotent_and_creates_an_empty_stream(streams: Streams) -> None:
    await streams.close(RUN, "empty")
    await streams.close(RUN, "empty")
    assert await streams.read(RUN, "empty") == ([], True)
    assert await streams.list(RUN) == [StreamInfo(run_id=RUN, name="empty", chunks=0, closed=True)]


async def test_write_after_close_is_a_conflict(streams: Streams) -> None:
    await streams.write(RUN, "s", "only")
    await streams.close(RUN, "s")
    with pytest.raises(EntityConflictError, match="closed"):
        await streams.write(RUN, "s", "late")
    with pytest.raises(EntityConflictError, match="closed"):
        await streams.write_many(RUN, "s", ["late", "later"])
    assert await streams.read(RUN, "s") == (["only"], True)


async def test_a_second_world_sees_the_first_ones_writes_and_close(make_world) -> None:  # type: ignore[no-untyped-def]
    first, second = (await make_world()).streams, (await make_world()).streams
    await first.write_many(RUN, "s", ["a", "b", "c"])
    assert await second.write(RUN, "s", "d") == 3
    assert await first.write(RUN, "s", "e") == 4
    await second.close(RUN, "s")
    with pytest.raises(EntityConflictError):
        await first.write(RUN, "s", "late")
    assert await first.read(RUN, "s") == (["a", "b", "c", "d", "e"], True)


# --- live tail ---


async def test_tail_yields_what_is_there_then_stops_at_close(streams: Streams) -> None:
    await streams.write_many(RUN, "s", [1, 2, 3])
    await streams.close(RUN, "s")
    assert [c async for c in streams.tail(RUN, "s")] == [1, 2, 3]
    assert [c async for c in streams.tail(RUN, "s", start=2)] == [3]


async def test_tail_follows_writes_of_this_process(streams: Streams) -> None:
    async def produce() -> None:
        for i in range(20):
            await streams.write(RUN, "s", i)
            await asyncio.sleep(0.001)
        await streams.close(RUN, "s")

    producer = asyncio.create_task(produce())
    got = [c async for c in streams.tail(RUN, "s", timeout=5)]
    await producer
    assert got == list(range(20))


async def test_tail_stops_after_timeout_when_nothing_arrives(streams: Streams) -> None:
    await streams.write(RUN, "s", "a")
    started = time.monotonic()
    got = [c async for c in streams.tail(RUN, "s", timeout=0.2)]
    elapsed = time.monotonic() - started
    assert got == ["a"]
    assert 0.15 <= elapsed < 2.0


async def test_tail_follows_another_process_writing_live(streams: Streams, world_url: str) -> None:
    """A real subprocess writes 100 chunks with small sleeps; the test process sees them all, in order, live."""
    body = """
        for i in range(100):
            await world.streams.write(sys.argv[1], "live", {"i": i, "t": time.time()})
            await asyncio.sleep(0.002)
        await world.streams.close(sys.argv[1], "live")
    """
    got: list[dict] = []
    latencies: list[float] = []
    cmd = [*_writer_script(world_url, body), RUN]
    proc = subprocess.Popen(cmd)  # the stream does not exist yet: tail waits for it
    try:
        async for chunk in streams.tail(RUN, "live", timeout=30):
            latencies.append(time.time() - chunk["t"])
            got.append(chunk)
    finally:
        assert proc.wait(timeout=30) == 0
    assert [c["i"] for c in got] == list(range(100))
    print(
        f"\ncross-process stream latency: first {latencies[0] * 1000:.2f} ms, "
        f"median {statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
    )
    assert latencies[0] < 0.5
    assert statistics.median(latencies) < 0.1


async def test_a_megabyte_of_chunks_round_trips(streams: Streams) -> None:
    chunks = [{"i": i, "text": f"{i:06d}" + "x" * 1000} for i in range(1000)]
    await streams.write_many(RUN, "big", chunks[:500])
    for chunk in chunks[500:]:
        await streams.write(RUN, "big", chunk)
    await streams.close(RUN, "big")
    assert await streams.read(RUN, "big") == (chunks, True)
    assert [c async for c in streams.tail(RUN, "big", start=250)] == chunks[250:]
    assert (await streams.list(RUN))[0].chunks == 1000


# --- concurrency: lines never interleave ---


async def test_threads_writing_one_stream_never_interleave(streams: Streams) -> None:
    """Several threads, each with its own event loop, share one World and write one stream."""
    per_thread, threads = 100, 4
    indexes: list[list[int]] = [[] for _ in range(threads)]

    def writer(t: int) -> None:
        async def go() -> None:
            for i in range(per_thread):
                big = f"{t}:{i}:" + "y" * 20_000  # several pages: a torn interleaving would show
                if i % 10 == 0:
                    indexes[t].append(await streams.write_many(RUN, "shared", [big, big]))
                else:
                    indexes[t].append(await streams.write(RUN, "shared", big))

        asyncio.run(go())

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    chunks, closed = await streams.read(RUN, "shared")
    assert not closed
    assert len(chunks) == threads * (per_thread + per_thread // 10)
    for t in range(threads):
        mine = [int(c.split(":")[1]) for c in chunks if c.startswith(f"{t}:")]
        assert mine == sorted(mine)  # each thread's order is kept
        for index in indexes[t]:
            assert chunks[index].startswith(f"{t}:")
    flat = [i for ix in indexes for i in ix]
    assert len(set(flat)) == len(flat)


async def test_processes_writing_one_stream_never_interleave(streams: Streams, world_url: str) -> None:
    body = """
        tag = sys.argv[1]
        for i in range(150):
            await world.streams.write(sys.argv[2], "shared", f"{tag}:{i}:" + "z" * 10_000)
    """
    procs = [subprocess.Popen([*_writer_script(world_url, body), tag, RUN]) for tag in ("p", "q")]
    for i in range(150):
        await streams.write(RUN, "shared", f"m:{i}:" + "z" * 10_000)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    chunks, _ = await streams.read(RUN, "shared")
    assert len(chunks) == 450
    for tag in ("p", "q", "m"):
        assert [int(c.split(":")[1]) for c in chunks if c.startswith(f"{tag}:")] == list(range(150))


# --- crashes ---


async def test_a_writer_killed_mid_stream_leaves_a_readable_stream(streams: Streams, world_url: str) -> None:
    """kill -9 of a writer in the middle of megabyte writes often tears the last line; nothing else suffers."""
    body = """
        i = 0
        while True:
            await world.streams.write_many(sys.argv[1], "s", [f"{i}:" + "k" * 1_000_000, f"{i + 1}:"])
            i += 2
    """
    proc = subprocess.Popen([*_writer_script(world_url, body), RUN])
    try:
        deadline = time.monotonic() + 20
        while len((await streams.read(RUN, "s"))[0]) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.003)
    finally:
        proc.kill()
        proc.wait()
    chunks, closed = await streams.read(RUN, "s")
    assert not closed
    assert len(chunks) >= 6
    assert [int(c.split(":")[0]) for c in chunks] == list(range(len(chunks)))
    index = await streams.write(RUN, "s", "after")
    assert index == len(chunks)
    assert (await streams.read(RUN, "s"))[0] == [*chunks, "after"]


# --- hostile ids and names ---


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".", "..", "/abs", "a\x00b", "x" * 200, 5])
async def test_hostile_run_ids_are_refused(streams: Streams, tmp_path: Path, run_id: object) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidIdError, match="invalid run id"):
        await streams.write(run_id, "s", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        await streams.read(run_id, "s")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        await streams.list(run_id)  # type: ignore[arg-type]
    assert sorted(p for p in tmp_path.rglob("*")) == before


HOSTILE_NAMES = [
    "../../../etc/passwd",
    "logs/errors",
    ".",
    "..",
    ".hidden",
    "a\x00b",
    "line\nbreak",
    "é🙂",
    "%2F",
    "with space",
    "x.jsonl",
]


async def test_hostile_stream_names_stay_inside_the_run_folder_and_round_trip(
    streams: Streams, world_store: Store
) -> None:
    for i, name in enumerate(HOSTILE_NAMES):
        assert await streams.write(RUN, name, i) == 0
    infos = await streams.list(RUN)
    assert sorted(info.name for info in infos) == sorted(HOSTILE_NAMES)
    for i, name in enumerate(HOSTILE_NAMES):
        assert await streams.read(RUN, name) == ([i], False)
    if world_store.data_dir is None:
        return  # the rest looks at the local World's files
    files = _stream_files(world_store.data_dir)
    assert len(files) == len(HOSTILE_NAMES)
    assert len({f.parent for f in files}) == 1  # all in the run's own folder
    assert files[0].parent.name == RUN
    assert not any(f.name.startswith(".") for f in files)


@pytest.mark.parametrize("name", ["", "n" * 300, "🙂" * 60, None, 3])
async def test_unusable_stream_names_are_refused(streams: Streams, name: object) -> None:
    with pytest.raises(InvalidIdError, match="invalid stream name"):
        await streams.write(RUN, name, "x")  # type: ignore[arg-type]


# --- list ---


async def test_list_reports_each_stream_with_its_count_and_state(streams: Streams) -> None:
    assert await streams.list(RUN) == []
    await streams.write_many(RUN, "tokens", ["a", "b", "c"])
    await streams.write(RUN, "default", "x")
    await streams.close(RUN, "default")
    await streams.write(RUN + "other", "default", "y")
    assert await streams.list(RUN) == [
        StreamInfo(run_id=RUN, name="default", chunks=1, closed=True),
        StreamInfo(run_id=RUN, name="tokens", chunks=3, closed=False),
    ]
