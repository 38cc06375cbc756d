"""`wf dev`'s live view (issue 15, items 5 and 6): ids whole at 80 columns, a failed run's reason, "retry at",
reload messages and logged warnings inside the view, one header; a taken port is one line and exit 2."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from wf.cli.commands.dev import Reloader
from wf.cli.live_view import Messages, logs_into, message_style, render_view
from wf.runtime.loader import import_path

from .conftest import cli_env, ended, reached, start, until, worker_on


def _text(renderable: object, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.export_text()


async def test_the_view_shows_whole_ids_reasons_retries_and_messages(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        failed = await start(world, "failing", "bad")
        stalled = await start(world, "stalled")
        await ended(world, failed)

        async def retrying() -> bool:
            steps = (await world.steps.list(stalled)).data
            return bool(steps) and steps[0].retry_after is not None

        await until(retrying)
        messages = Messages()
        messages.add("reload failed: syntax error in flows.py:3: invalid syntax; keeping the old code",
                     message_style("reload failed"))
        with logs_into(messages):
            logging.getLogger("wf.test").warning("a worker warning\nwith a second line")
        text = _text(await render_view(world, messages, 80))
    lines = text.splitlines()
    assert lines.count("wf dev — recent runs") == 1
    assert any(failed in line and "ValueError" in line for line in lines), text  # the reason, beside the whole id
    assert any(stalled in line and "retry at" in line for line in lines), text
    assert "reload failed: syntax error in flows.py:3" in text
    assert "warning: a worker warning" in text and "second line" not in text


def test_a_syntax_error_is_a_reload_message_naming_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "livemod.py"
    source.write_text("import wf\n\n@wf.workflow\nasync def live_flow() -> int:\n    return 1\n")
    module = import_path(source)
    reloader = Reloader([tmp_path], {source.resolve(): module})
    source.write_text("import wf\n\n@wf.workflow\nasync def live_flow() -> int:\n    return (\n")
    (message,) = reloader.apply({source.resolve()})
    assert message.startswith("reload failed: syntax error in") and f"{source.resolve()}:5" in message
    assert message.endswith("keeping the old code") and message_style(message) == "red"
    source.write_text("import wf\n\n@wf.workflow\nasync def live_flow() -> int:\n    return 2\n")
    assert reloader.apply({source.resolve()}) == ["reloaded livemod"]


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text("import wf\n\n@wf.workflow\nasync def f() -> int:\n    return 1\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "wf.cli", "dev", "flows.py", "--port", str(port), "--no-live"],
                                cwd=tmp_path, env=cli_env(tmp_path / "data"), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"], (
        result.stderr)


async def test_a_run_waiting_on_a_hook_shows_its_token(fresh: Path) -> None:
    async with worker_on(fresh) as world:
        run_id = await start(world, "waiter", "tok-live-view")
        await reached(world, run_id, "hook_created")
        text = _text(await render_view(world, Messages(), 80))
    assert "hook tok-live-view" in text
