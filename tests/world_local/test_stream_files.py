"""The local World's stream files: a torn last line is ignored by readers and cut by the next writer."""

from __future__ import annotations

from pathlib import Path

from wf.runtime.world import StreamInfo, World

RUN = "wrun_01TESTSTREAMS"


def _stream_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*.jsonl") if p.is_file()]


async def test_torn_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(
    world: World, data_dir: Path
) -> None:
    streams = world.streams
    await streams.write_many(RUN, "s", ["a", "b"])
    (path,) = _stream_files(data_dir)
    with path.open("ab") as f:  # what a writer killed in the middle of its write leaves
        f.write(b'{"half": "writ')
    assert await streams.read(RUN, "s") == (["a", "b"], False)
    assert await streams.list(RUN) == [StreamInfo(run_id=RUN, name="s", chunks=2, closed=False)]
    assert await streams.write(RUN, "s", "c") == 2
    assert await streams.read(RUN, "s") == (["a", "b", "c"], False)


