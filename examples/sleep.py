"""A durable sleep: the workflow suspends, frees its worker, and resumes on time.

The wake-up time is in the database, so a crash or a restart during the sleep
changes nothing: run the script again with the same id and it waits out what
is left. Run it: `python examples/sleep.py` (sleeps 2 seconds).
"""

from __future__ import annotations

import os

import flowz
from flowz import step, workflow


@step
async def send_email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


@workflow
async def onboarding(user: str, delay: float) -> list[str]:
    sent = [await send_email(user, "Welcome!")]
    await flowz.sleep(delay)  # in production: days, not seconds
    sent.append(await send_email(user, "How is it going?"))
    return sent


if __name__ == "__main__":
    run_id = os.environ.get("FLOWZ_RUN_ID")
    for line in flowz.run(onboarding.options(id=run_id), "ada@example.com", 2.0):
        print(line)
