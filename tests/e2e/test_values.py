"""Values that must survive the trip through the log: null bytes, binary, dataclasses, metadata, streams."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType

from .conftest import E2E


async def test_null_bytes_and_binary_survive(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.null_bytes, "a\x00b", bytes(range(256)))
    assert await run.result_async(timeout=20) == {"text": "a\x00b\x00end", "blob": bytes(range(256)) + b"\x00\xff"}


async def test_a_custom_dataclass_round_trips(e2e: E2E, workflows: ModuleType) -> None:
    money = workflows.Money
    invoice = workflows.Invoice("INV-1", (money(Decimal("10.10"), "EUR"), money(Decimal("0.20"), "EUR")),
                                datetime(2024, 5, 1, 12, tzinfo=UTC))
    run = await e2e.env.start(workflows.dataclass_round_trip, invoice)
    result = await run.result_async(timeout=20)
    assert result == {"invoice": invoice, "total": money(Decimal("10.30"), "EUR")}
    assert type(result["invoice"]) is workflows.Invoice and type(result["invoice"].lines) is tuple


async def test_workflow_and_step_metadata(e2e: E2E, workflows: ModuleType) -> None:
    run = await e2e.env.start(workflows.metadata)
    meta = await run.result_async(timeout=20)
    assert meta["run_id"] == run.id == meta["step"]["run_id"]
    assert meta["workflow_name"] == "tests.e2e.workflows.metadata"
    assert meta["step"]["step_name"] == "tests.e2e.workflows.step_metadata"
    assert meta["step"]["step_id"] == "step_1" and meta["step"]["attempt"] == 1
    assert isinstance(meta["started_at"], datetime) and meta["step"]["started_at"] >= meta["started_at"]


async def test_output_streams_carry_bytes_and_objects_in_order(e2e: E2E, workflows: ModuleType) -> None:
    chunks = [b"\x00\x01binary", {"kind": "object", "n": 1}, "text", [1, 2, 3], b"", 42]
    run = await e2e.env.start(workflows.output_stream, chunks)
    assert [c async for c in run.stream_async()] == chunks
    assert [c async for c in run.stream_async("side")] == ["namespaced"]
    assert await run.result_async(timeout=20) == len(chunks)
