"""Order fulfilment: retries with backoff, a fatal decline, and compensation (a saga).

    wf start examples/order.py:fulfil_order '"o-1"' '"4242"' --wait
        # the payment gateway times out twice; wf retries after 1 s and 2 s, then prints
        # {"order_id": "o-1", "status": "shipped", "charge": "ch_o-1", "tracking": "TRK-O-1-BERLIN"}
    wf start examples/order.py:fulfil_order '"o-2"' '"0002"' --wait
        # a declined card is a wf.FatalError: no retry; the stock is released, prints
        # {"order_id": "o-2", "status": "declined", "reason": "card ending 0002 was declined"}
    wf start examples/order.py:fulfil_order '"o-3"' '"4242"' '"Atlantis"' --wait
        # shipping fails after the charge: the charge is refunded and the stock released
        # (both steps are in the log), then the run fails with the shipping error

Every step runs once per attempt and its result is recorded: a worker crash after the charge
never charges the card twice.
"""

from collections.abc import Awaitable, Callable

import wf


@wf.step
async def reserve_stock(order_id: str) -> str:
    return f"res_{order_id}"


@wf.step
async def release_stock(reservation: str) -> None:
    print(f"released {reservation}")


@wf.step  # default max_retries=3: up to 4 attempts, 1 s, 2 s, 4 s apart
async def charge_card(order_id: str, card: str) -> str:
    if card.endswith("0002"):
        raise wf.FatalError(f"card ending {card[-4:]} was declined")  # retrying will not help
    if wf.get_step_metadata().attempt < 3:  # a flaky gateway, simulated: the first two calls time out
        raise ConnectionError("payment gateway timed out")
    return f"ch_{order_id}"


@wf.step
async def refund(charge: str) -> None:
    print(f"refunded {charge}")


@wf.step(max_retries=0)
async def ship(order_id: str, ship_to: str) -> str:
    if ship_to == "Atlantis":
        raise wf.FatalError(f"no carrier delivers to {ship_to}")
    return f"TRK-{order_id}-{ship_to}".upper()


@wf.workflow
async def fulfil_order(order_id: str, card: str, ship_to: str = "Berlin") -> dict:
    undo: list[Callable[[], Awaitable[None]]] = []  # compensations, newest last
    try:
        reservation = await reserve_stock(order_id)
        undo.append(lambda: release_stock(reservation))
        try:
            charge = await charge_card(order_id, card)
        except wf.StepFailedError as exc:
            if exc.error_type != "FatalError":
                raise
            for compensate in reversed(undo):
                await compensate()
            return {"order_id": order_id, "status": "declined", "reason": exc.error_message}
        undo.append(lambda: refund(charge))
        tracking = await ship(order_id, ship_to)
    except wf.StepFailedError:
        for compensate in reversed(undo):
            await compensate()
        raise
    return {"order_id": order_id, "status": "shipped", "charge": charge, "tracking": tracking}
