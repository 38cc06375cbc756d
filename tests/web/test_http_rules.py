"""The web app's security rules and limits, over real sockets (the app served in-process by uvicorn)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

import wf
from wf.web.limits import Limits

from .http_client import json_headers, read_answer, request

WEBHOOK = "/.well-known/workflow/v1/webhook/"


@wf.workflow
async def greet(name: str) -> str:
    payload = await wf.create_hook(token=f"greet:{name}")
    return f"hello {name}: {payload['body']}"


@wf.step
async def double(x: int) -> int:
    return 2 * x


@wf.workflow
async def doubled(x: int) -> int:
    return await double(x)


@wf.step
async def long_text(n: int) -> str:
    return "x" * n


@wf.workflow
async def big_output(n: int) -> str:
    return await long_text(n)


async def test_the_story_leaves_step_payloads_to_the_step_endpoint_and_cuts_huge_ones(serve: Any) -> None:
    s = await serve()
    small, huge = await s.env.start(doubled, 21), await s.env.start(big_output, 300_000)
    assert await small.result_async(timeout=10) == 42
    assert len(await huge.result_async(timeout=10)) == 300_000
    story = (await request(s.port, "GET", f"/api/runs/{small.id}")).json()
    assert [st["step_id"] for st in story["steps"]] == ["step_1"] and "output" not in story["steps"][0]
    step = (await request(s.port, "GET", f"/api/runs/{small.id}/steps/step_1")).json()
    assert (step["input"], step["output"], step["status"]) == ({"args": [21], "kwargs": {}}, 42, "completed")
    cut = (await request(s.port, "GET", f"/api/runs/{huge.id}/steps/step_1")).json()["output"]
    assert cut["truncated"] == 300_000 and cut["preview"].startswith("xxx") and len(cut["preview"]) < 5000
    assert (await request(s.port, "GET", f"/api/runs/{huge.id}")).json()["run"]["output"]["truncated"] == 300_000
    assert (await request(s.port, "GET", f"/api/runs/{small.id}/steps/step_9")).status == 404
    assert (await request(s.port, "GET", f"/api/runs/{small.id}/steps/..%2Fx")).status == 404


async def test_a_foreign_host_is_refused_and_local_names_are_served(serve: Any) -> None:
    s = await serve()
    for host in (f"127.0.0.1:{s.port}", f"localhost:{s.port}", "localhost", f"[::1]:{s.port}"):
        assert (await request(s.port, "GET", "/api/runs", host=host)).status == 200, host
    for host in ("evil.example", f"evil.example:{s.port}", "127.0.0.1.evil.example", ""):
        answer = await request(s.port, "GET", "/api/runs", host=host)
        assert answer.status == 421, host
        assert "does not answer for host" in answer.json()["error"]
    assert (await request(s.port, "GET", "/", host="rebind.attacker.example")).status == 421


async def test_pages_cannot_be_framed_and_load_scripts_only_from_the_server(serve: Any) -> None:
    s = await serve()
    for path in ("/", "/workflows", "/api/runs", "/static/run.js"):
        headers = (await request(s.port, "GET", path)).headers
        assert headers["x-frame-options"] == "DENY", path
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy, path
        assert headers["referrer-policy"] == "no-referrer" and headers["x-content-type-options"] == "nosniff"


async def test_cross_site_posts_cannot_start_runs(serve: Any) -> None:
    s = await serve()
    body = orjson.dumps({"workflow": doubled.name, "args": [2]})
    plain = await request(s.port, "POST", "/api/runs", body, {"Content-Type": "text/plain"})
    assert plain.status == 415
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    form = await request(s.port, "POST", "/api/runs", b"workflow=x", form_type)
    assert form.status == 415
    evil = await request(s.port, "POST", "/api/runs", body, {**json_headers(s.port), "Origin": "http://evil.example"})
    assert evil.status == 403 and "cross-origin" in evil.json()["error"]
    no_origin_cross = {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}
    assert (await request(s.port, "POST", "/api/runs", body, no_origin_cross)).status == 403
    assert (await request(s.port, "POST", "/api/hooks/resume", b"{}", {"Content-Type": "text/plain"})).status == 415
    runs = (await request(s.port, "GET", "/api/runs")).json()["runs"]
    assert runs == []  # nothing refused got through
    same = await request(s.port, "POST", "/api/runs", body, json_headers(s.port))
    assert same.status == 201
    curl = await request(s.port, "POST", "/api/runs", body, {"Content-Type": "application/json"})
    assert curl.status == 201  # no browser, no Origin: a script on this machine may start runs
    run = wf.runtime.client.Run(same.json()["run_id"], s.env.world)
    assert await run.result_async(timeout=10) == 4


async def test_webhooks_work_from_any_host_and_origin(serve: Any) -> None:
    s = await serve()
    run = await s.env.start(greet, "ada")
    await s.env.wait_for_hook("greet:ada")
    headers = {"Content-Type": "text/plain", "Origin": "https://hooks.partner.example", "Sec-Fetch-Site": "cross-site"}
    answer = await request(s.port, "POST", WEBHOOK + "greet:ada", b"approved", headers, host="hooks.partner.example")
    assert (answer.status, answer.json()) == (202, {"ok": True})
    assert await run.result_async(timeout=10) == "hello ada: approved"
    unknown = await request(s.port, "POST", WEBHOOK + "nobody", b"x", host="anything.example")
    assert unknown.status == 404


async def test_a_token_guards_a_server_bound_beyond_loopback(serve: Any) -> None:
    s = await serve(token="s3cret-token", host="0.0.0.0")
    assert (await request(s.port, "GET", "/")).status == 401
    assert (await request(s.port, "GET", "/api/runs", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await request(s.port, "GET", "/api/runs", headers={"Cookie": "wf_token=wrong"})).status == 401
    first = await request(s.port, "GET", "/?token=s3cret-token&status=running", host="my-box.lan:3001")
    assert first.status == 303
    assert first.headers["location"] == "/?status=running"
    assert "wf_token=s3cret-token" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
    assert (await request(s.port, "GET", "/", headers={"Cookie": "wf_token=s3cret-token"})).status == 200
    assert (await request(s.port, "GET", "/api/runs", headers={"Authorization": "Bearer s3cret-token"})).status == 200
    body = orjson.dumps({"workflow": doubled.name, "args": [1]})
    no_token = await request(s.port, "POST", "/api/runs", body, json_headers(s.port))
    assert no_token.status == 401
    # Webhooks carry their own secret and stay open.
    assert (await request(s.port, "POST", WEBHOOK + "nobody", b"x")).status == 404


def test_wf_ui_on_a_public_address_prints_a_url_with_a_token(tmp_path: Path) -> None:
    env = {**os.environ, "WF_FSYNC": "0", "WF_DATA_DIR": str(tmp_path / ".wf")}
    asyncio.run(_make_store(tmp_path / ".wf"))
    proc = subprocess.Popen([sys.executable, "-m", "wf.cli", "ui", "--host", "0.0.0.0", "--port", "0"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "open http://0.0.0.0:" in line and "?token=" in line, line
        port = int(line.split("http://0.0.0.0:")[1].split("/")[0])
        token = line.split("?token=")[1].split()[0]
        assert len(token) >= 32
        assert asyncio.run(request(port, "GET", "/")).status == 401
        assert asyncio.run(request(port, "GET", f"/?token={token}")).status == 303
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


async def _make_store(path: Path) -> None:
    from wf.world_local import LocalWorld

    world = LocalWorld(path)
    await world.start()
    await world.close()


async def test_bodies_over_the_limit_are_413_and_deep_json_400(serve: Any) -> None:
    s = await serve()
    run = await s.env.start(greet, "deep")
    await s.env.wait_for_hook("greet:deep")
    deep = b"[" * 200 + b"]" * 200
    answer = await request(s.port, "POST", WEBHOOK + "greet:deep", deep, {"Content-Type": "application/json"})
    assert answer.status == 400 and "deeper than 64" in answer.json()["error"]
    big = b"x" * (1024 * 1024 + 1)
    assert (await request(s.port, "POST", WEBHOOK + "greet:deep", big)).status == 413
    api_big = await request(s.port, "POST", "/api/runs", b"[" + b"1," * 600_000 + b"1]", json_headers(s.port))
    assert api_big.status == 413
    assert (await request(s.port, "POST", "/api/runs", b"{nope", json_headers(s.port))).status == 400
    assert await run.status_async() == "running"  # nothing was delivered
    assert (await request(s.port, "POST", WEBHOOK + "greet:deep", b"fine")).status == 202


async def test_a_slow_body_is_answered_408_and_a_slow_head_is_cut(serve: Any) -> None:
    s = await serve(limits=Limits(read_timeout=0.5), head_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(f"POST {WEBHOOK}x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc".encode())
    await writer.drain()
    answer = await read_answer(reader, timeout=5)
    assert answer.status == 408
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(b"GET /api/runs HTTP/1.1\r\nHost: 127.0")  # and then nothing
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, unanswered
    writer.close()


async def test_large_requests_take_turns_and_small_ones_still_pass(serve: Any) -> None:
    s = await serve(limits=Limits(large_slots=2, slot_wait=0.3, read_timeout=5))
    held = []
    for _ in range(2):  # two large uploads that stall half-way hold both slots
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(f"POST {WEBHOOK}x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500000\r\n\r\n".encode()
                     + b"y" * 1000)
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.2)
    assert s.app.web.bodies.large_in_flight == 2
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(f"POST {WEBHOOK}x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n".encode())
    third = await read_answer(reader)  # answered before its body is read
    writer.close()
    assert third.status == 503 and third.headers.get("retry-after") == "1"
    assert (await request(s.port, "POST", WEBHOOK + "x", b"small")).status == 404  # small bodies skip the line
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.3)
    assert s.app.web.bodies.large_in_flight == 0
    assert (await request(s.port, "POST", WEBHOOK + "x", b"z" * 200_000)).status == 404


async def test_bad_input_gets_one_line_and_a_proper_status(serve: Any) -> None:
    s = await serve()
    run = await s.env.run(doubled, 5)
    assert run == 10
    run_id = (await request(s.port, "GET", "/api/runs")).json()["runs"][0]["run_id"]
    cases = [
        ("GET", "/api/runs?status=bogus", 400), ("GET", "/api/runs?limit=0", 400), ("GET", "/api/runs?limit=x", 400),
        ("GET", "/api/runs?cursor=%%%", 400), ("GET", "/api/runs?cursor=WyJ4Il0=", 400),
        ("GET", "/api/runs?since=yesterday", 400), ("GET", "/api/runs?tag==x", 400),
        ("GET", "/api/runs/..%2F..%2Fetc%2Fpasswd", 404),
        ("GET", "/api/runs/wrun_nope", 404), ("GET", "/runs/wrun_nope", 404), ("GET", "/nowhere", 404),
        ("GET", f"/api/live/runs/{run_id}?after=x", 400), ("GET", f"/api/runs/{run_id}/streams/..%2Fx", 404),
    ]
    for method, path, status in cases:
        answer = await request(s.port, method, path)
        assert answer.status == status, (path, answer.body)
        message = answer.json()["error"]
        assert message and "\n" not in message and "Traceback" not in message
    posts = [
        ("/api/runs", [1, 2], 400), ("/api/runs", {"workflow": "no.such"}, 404),
        ("/api/runs", {"workflow": doubled.name, "args": "x"}, 400),
        ("/api/runs", {"workflow": doubled.name, "args": [1, 2, 3]}, 400),  # does not fit doubled(x)
        ("/api/runs", {"workflow": doubled.name, "args": [1], "tags": {"team": 5}}, 400),
        (f"/api/runs/{run_id}/fork", {"at": 999}, 400), (f"/api/runs/{run_id}/fork", {"at": "x"}, 400),
        (f"/api/runs/{run_id}/cancel", {"reason": 5}, 400), ("/api/runs/wrun_nope/cancel", {}, 404),
        ("/api/hooks/resume", {"token": "nobody", "payload": 1}, 404), ("/api/hooks/resume", {"payload": 1}, 400),
    ]
    for path, data, status in posts:
        answer = await request(s.port, "POST", path, orjson.dumps(data), json_headers(s.port))
        assert answer.status == status, (path, data, answer.body)
        assert "\n" not in answer.json()["error"]
    page = await request(s.port, "GET", "/runs/wrun_nope", headers={"Accept": "text/html"})
    assert page.status == 404 and b"no run with id" in page.body and b"<html" in page.body


async def test_runs_are_listed_newest_first_filtered_searched_and_paged(serve: Any) -> None:
    s = await serve()
    for x in range(5):
        assert await s.env.run(doubled, 100 + x) == 200 + 2 * x
    waiting = await s.env.start(greet, "searchable-name")
    await s.env.wait_for_hook("greet:searchable-name")
    first = (await request(s.port, "GET", "/api/runs?limit=2")).json()
    assert first["runs"][0]["run_id"] == waiting.id
    seen = [r["run_id"] for r in first["runs"]]
    cursor = first["next_cursor"]
    while cursor:
        page = (await request(s.port, "GET", f"/api/runs?limit=2&cursor={cursor}")).json()
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 6 and seen == sorted(seen, reverse=True)
    running = (await request(s.port, "GET", "/api/runs?status=running")).json()["runs"]
    assert [r["run_id"] for r in running] == [waiting.id]
    found = (await request(s.port, "GET", "/api/runs?q=searchable")).json()["runs"]
    assert [r["run_id"] for r in found] == [waiting.id]
    by_output = (await request(s.port, "GET", "/api/runs?q=206")).json()["runs"]  # doubled(103) returned 206
    assert len(by_output) == 1 and by_output[0]["workflow"] == doubled.name
    by_id = (await request(s.port, "GET", f"/api/runs?q={waiting.id}")).json()["runs"]
    assert [r["run_id"] for r in by_id] == [waiting.id]
    future = (await request(s.port, "GET", "/api/runs?since=2999-01-01T00:00")).json()["runs"]
    assert future == []
    paged_search = (await request(s.port, "GET", f"/api/runs?q={doubled.name}&limit=3")).json()
    assert len(paged_search["runs"]) == 3 and paged_search["next_cursor"]
    rest = (await request(s.port, "GET", f"/api/runs?q={doubled.name}&limit=3&cursor={paged_search['next_cursor']}"))
    assert len(rest.json()["runs"]) == 2
    for _ in range(100):
        counts = (await request(s.port, "GET", "/api/runs")).json()["counts"]
        if counts is not None:
            break
        await asyncio.sleep(0.05)
    assert counts == {"pending": 0, "running": 1, "completed": 5, "failed": 0, "cancelled": 0}
    tagged = orjson.dumps({"workflow": doubled.name, "args": [7], "tags": {"team": "billing"}})
    tagged_id = (await request(s.port, "POST", "/api/runs", tagged, json_headers(s.port))).json()["run_id"]
    for tag in ("team=billing", "team"):
        found = (await request(s.port, "GET", f"/api/runs?tag={tag}")).json()["runs"]
        assert [(r["run_id"], r["tags"]) for r in found] == [(tagged_id, {"team": "billing"})]
    assert (await request(s.port, "GET", "/api/runs?tag=team=ops")).json()["runs"] == []
    page = await request(s.port, "GET", "/?tag=team%3Dbilling", headers={"Accept": "text/html"})
    assert tagged_id.encode() in page.body and b"team=billing" in page.body


async def test_counts_follow_new_runs_and_status_changes_while_the_runs_page_is_open(serve: Any) -> None:
    s = await serve()
    assert await s.env.run(doubled, 1) == 2
    counts = None
    for _ in range(100):
        counts = (await request(s.port, "GET", "/api/runs")).json()["counts"]
        if counts is not None:
            break
        await asyncio.sleep(0.05)
    assert counts is not None and counts["completed"] == 1
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)  # a runs page listening for changes
    writer.write(f"GET /api/live/runs HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b": watching runs"), 5)
    await asyncio.sleep(1.2)  # the watcher's first reading
    waiting = await s.env.start(greet, "counted")
    await s.env.wait_for_hook("greet:counted")
    assert await s.env.run(doubled, 2) == 4
    await asyncio.wait_for(reader.readuntil(b"event: runs"), 5)
    expected = {**counts, "running": 1, "completed": 2}
    for _ in range(60):  # long before the next full recount (every 2 minutes)
        counts = (await request(s.port, "GET", "/api/runs")).json()["counts"]
        if counts == expected:
            break
        await asyncio.sleep(0.1)
    assert counts == expected
    await request(s.port, "POST", WEBHOOK + "greet:counted", b"ok")
    assert await waiting.result_async(timeout=10) == "hello counted: ok"
    for _ in range(60):
        counts = (await request(s.port, "GET", "/api/runs")).json()["counts"]
        if counts == {**expected, "running": 0, "completed": 3}:
            break
        await asyncio.sleep(0.1)
    assert counts == {**expected, "running": 0, "completed": 3}
    writer.close()


async def test_a_search_answers_in_slices_and_its_cursor_goes_on(serve: Any, monkeypatch: Any) -> None:
    from wf.web import runs_query

    s = await serve()
    needle = await s.env.start(greet, "needle-in-a-haystack")
    await s.env.wait_for_hook("greet:needle-in-a-haystack")
    for x in range(6):
        assert await s.env.run(doubled, x) == 2 * x
    monkeypatch.setattr(runs_query, "SCAN_PAGE", 2)
    monkeypatch.setattr(runs_query, "SCAN_RUNS", 4)  # a slice reads 4 runs, then answers
    found: list[str] = []
    cursor, slices = "", 0
    while True:
        page = (await request(s.port, "GET", f"/api/runs?q=needle{cursor}")).json()
        slices += 1
        found += [r["run_id"] for r in page["runs"]]
        if page["next_cursor"] is None:
            break
        assert page["partial"] is True and page["scanned"] == 4
        cursor = f"&cursor={page['next_cursor']}"
    assert found == [needle.id] and slices == 2  # 7 runs: 4 in the first slice, 3 (with the needle) in the second
    html = await request(s.port, "GET", "/?q=needle", headers={"Accept": "text/html"})
    assert b"search older runs" in html.body and b"4 searched here" in html.body
