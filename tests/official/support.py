"""What the official client's tests share: one call with a connected client, on asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from frequenz.client.base.retry import LinearBackoff
from frequenz.client.microgrid import MicrogridApiClient

from distributord.sim.server import Simulator

T = TypeVar("T")

TIMEOUT = 20.0
"""How long one test's use of the client may take, s."""


def with_client(
    sim: Simulator, use: Callable[[MicrogridApiClient], Awaitable[T]], *, retries: int | None = None
) -> T:
    """``use(client)`` with a connected official client, on asyncio, with a deadline.

    ``retries``: how often the client re-opens a stream that ended (its own default if None).
    """

    async def main() -> T:
        strategy = None if retries is None else LinearBackoff(interval=0.0, limit=retries)
        async with MicrogridApiClient(f"grpc://{sim.address}", retry_strategy=strategy) as client:
            return await asyncio.wait_for(use(client), timeout=TIMEOUT)

    return asyncio.run(main())
