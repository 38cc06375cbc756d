"""Streaming: a step streams tokens from an LLM-like generator while the run is in flight.

    wf start examples/streaming.py:chat '"tell me about durable workflows"'
        # prints the run id; then, in another terminal (or the same one):
    wf stream RUN_ID
        # prints the reply token by token as it is generated, and stops when the stream closes
    wf start examples/streaming.py:chat '"tell me about durable workflows"' --wait
        # prints the whole reply: "Durable workflows remember every step, ..."

From Python: `for token in wf.get_run(run_id).stream(): print(token, end="")`.
"""

import asyncio
from collections.abc import AsyncIterator

import wf

REPLY = ("Durable workflows remember every step, so a crash, a deploy or a restart "
         "picks the work up where it stopped instead of starting over.")


async def fake_llm(prompt: str) -> AsyncIterator[str]:
    """Stands in for a model's streaming API (no network): yields a word at a time."""
    for word in REPLY.split(" "):
        await asyncio.sleep(0.05)
        yield word + " "


@wf.step
async def generate(prompt: str) -> str:
    out = wf.get_writable()
    text = ""
    async for token in fake_llm(prompt):
        out.write(token)  # readers see each token as soon as it is written
        text += token
    out.close()
    return text.strip()


@wf.workflow
async def chat(prompt: str) -> str:
    return await generate(prompt)
