"""The smallest durable workflow: two steps, each recorded once and replayed after that.

    wf start examples/hello.py:hello '"world"' --wait
"""

import wf


@wf.step
async def greet(name: str) -> str:
    return f"hello, {name}"


@wf.step
def shout(text: str) -> str:  # a sync step runs in the worker's thread pool
    return text.upper() + "!"


@wf.workflow
async def hello(name: str) -> str:
    greeting = await greet(name)
    return await shout(greeting)
