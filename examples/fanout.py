"""Fan-out/fan-in: score many documents in parallel, at most `limit` at a time, then aggregate.

    wf start examples/fanout.py:score_documents 20 4 --wait
        # 20 steps, never more than 4 running at once (about 0.5 s), then prints
        # {"documents": 20, "total_words": 1750, "longest": "doc-19"}

Each document's step is recorded on its own: after a crash, only the unfinished ones run again.
"""

import asyncio

import wf


@wf.step
async def count_words(doc_id: str) -> int:
    await asyncio.sleep(0.1)  # stands in for a slow service
    return 40 + 5 * int(doc_id.split("-")[1])


@wf.step
async def summarize(counts: dict[str, int]) -> dict:
    return {"documents": len(counts), "total_words": sum(counts.values()), "longest": max(counts, key=counts.get)}


@wf.workflow
async def score_documents(count: int = 20, limit: int = 4) -> dict:
    slots = asyncio.Semaphore(limit)  # deterministic inside a workflow, like the rest of asyncio

    async def one(doc_id: str) -> int:
        async with slots:
            return await count_words(doc_id)

    doc_ids = [f"doc-{i}" for i in range(count)]
    counts = await asyncio.gather(*(one(d) for d in doc_ids))  # results keep the order of doc_ids
    return await summarize(dict(zip(doc_ids, counts, strict=True)))
