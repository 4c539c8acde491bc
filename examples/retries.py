"""Retries, backoff and timeouts against a flaky dependency.

`charge` fails twice before it succeeds; flowz retries it with exponential
backoff, journals the attempt count, and hands the payment API the same
idempotency key on every attempt. Run it: `python examples/retries.py`.
"""

from __future__ import annotations

import flowz
from flowz import step, workflow

_calls: dict[str, int] = {}


class PaymentServiceDown(Exception):
    pass


@step(retries=3, backoff=2.0, retry_delay=0.1, timeout=5, retry_on=PaymentServiceDown)
async def charge(order: str, cents: int) -> str:
    key = flowz.current_step().idempotency_key  # the same for every attempt
    _calls[order] = _calls.get(order, 0) + 1
    if _calls[order] <= 2:
        raise PaymentServiceDown(f"attempt {_calls[order]}: 503 from the payment service")
    return f"charged {cents} cents for {order} (idempotency key {key})"


@workflow
async def checkout(order: str, cents: int) -> str:
    return await charge(order, cents)


if __name__ == "__main__":
    print(flowz.run(checkout, "order-42", 1999))
    print(f"charge was called {_calls['order-42']} times")
