"""Fan-out/fan-in: score many documents in parallel, at most 4 at a time, then aggregate.

    wf start examples/fanout.py:score_documents 20 --wait
        # 20 steps, never more than 4 running at once (about 0.5 s), then prints
        # {"documents": 20, "total_words": 1750, "longest": "doc-19"}

`concurrency=4` limits the step across every worker of the World (not only this run): start
three runs at once and still no more than 4 documents are scored at a time. A per-key limit
(`concurrency_key=lambda doc_id: ...`) would allow 4 per customer instead, and
`rate_limit="100/1m"` would cap how many start per minute.

Each document's step is recorded on its own: after a crash, only the unfinished ones run again.
"""

import asyncio

import wf


@wf.step(concurrency=4)
async def count_words(doc_id: str) -> int:
    await asyncio.sleep(0.1)  # stands in for a slow service that takes 4 requests at a time
    return 40 + 5 * int(doc_id.split("-")[1])


@wf.step
async def summarize(counts: dict[str, int]) -> dict:
    return {"documents": len(counts), "total_words": sum(counts.values()), "longest": max(counts, key=counts.get)}


@wf.workflow
async def score_documents(count: int = 20) -> dict:
    doc_ids = [f"doc-{i}" for i in range(count)]
    counts = await asyncio.gather(*(count_words(d) for d in doc_ids))  # results keep the order of doc_ids
    return await summarize(dict(zip(doc_ids, counts, strict=True)))
