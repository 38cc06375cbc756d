"""Human approval: wait for a person (a hook) but not forever (a durable timeout), then escalate.

    wf start examples/approval.py:expense_approval '"exp-7"' 420 --wait
        # the run waits; from another terminal approve it with
    wf hook resume approve:exp-7 '{"approved": true, "by": "ana"}'
        # or POST to the webhook of `wf dev` (it prints its address):
        #   curl -X POST http://127.0.0.1:<port>/.well-known/workflow/v1/webhook/approve:exp-7 \
        #        -H 'content-type: application/json' -d '{"approved": true, "by": "ana"}'
        # and the first terminal prints
        # {"request_id": "exp-7", "status": "approved", "by": "ana"}
    wf start examples/approval.py:expense_approval '"exp-8"' 420 2 --wait
        # nobody answers within 2 seconds: the manager is paged, prints
        # {"request_id": "exp-8", "status": "escalated", "to": "manager@example.com"}

The timeout is a durable timer: stop the worker, restart it tomorrow, and the run still
escalates at the right time (or right away, if that time has passed).
"""

import asyncio
from typing import Any

import wf


@wf.step
async def ask_approver(request_id: str, amount: int, token: str) -> None:
    print(f"expense {request_id} ({amount} EUR) needs approval: wf hook resume {token} '{{\"approved\": true}}'")


@wf.step
async def page_manager(request_id: str) -> str:
    print(f"no answer for {request_id}: paging the manager")
    return "manager@example.com"


def _decision(payload: Any) -> dict:
    """A payload from `wf hook resume` is the JSON itself; a webhook's carries it in `body`."""
    if isinstance(payload, dict) and isinstance(payload.get("body"), dict):
        return payload["body"]
    return payload if isinstance(payload, dict) else {"approved": bool(payload)}


@wf.workflow
async def expense_approval(request_id: str, amount: int, timeout_seconds: float = 24 * 3600) -> dict:
    hook = wf.create_hook(token=f"approve:{request_id}", metadata={"amount": amount})
    await ask_approver(request_id, amount, hook.token)
    try:
        async with asyncio.timeout(timeout_seconds):  # a durable timer inside a workflow
            decision = _decision(await hook)
    except TimeoutError:
        return {"request_id": request_id, "status": "escalated", "to": await page_manager(request_id)}
    status = "approved" if decision.get("approved") else "rejected"
    return {"request_id": request_id, "status": status, "by": decision.get("by", "someone")}
