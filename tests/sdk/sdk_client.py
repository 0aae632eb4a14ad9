"""The Frequenz SDK 1.0 as its users run it, against a Microgrid API server; reports in JSON.

Run by ``test_frequenz_sdk.py`` in a process of its own: the SDK keeps its microgrid connection
and data pipeline in module-level singletons, runs on asyncio, and starts background tasks that
outlive a test. Nothing here patches the SDK: it is the SDK's own start-up,
``microgrid.initialize``, then a battery pool and a PV pool, as in its documentation.

Usage: ``python sdk_client.py HOST:PORT``. Prints one JSON object per observation
(``{"what": ..., ...}``) on stdout, then ``{"what": "done"}``, and exits. Exits 1 with a
``{"what": "error", ...}`` line when something does not arrive within its deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from datetime import timedelta
from typing import Any

from frequenz.quantities import Power
from frequenz.sdk import microgrid
from frequenz.sdk.microgrid import connection_manager
from frequenz.sdk.timeseries import ResamplerConfig2

DEADLINE_S = 30.0
"""How long any one observation may take to arrive."""


def report(what: str, **fields: Any) -> None:
    """One observation, as a JSON line."""
    print(json.dumps({"what": what, **fields}), flush=True)


async def first(receiver: Any, accept: Any = lambda _: True) -> Any:
    """The first message from ``receiver`` that ``accept`` takes, within :data:`DEADLINE_S`."""

    async def wait() -> Any:
        while True:
            message = await receiver.receive()
            if accept(message):
                return message

    return await asyncio.wait_for(wait(), DEADLINE_S)


def watts(power: Power | None) -> float | None:
    """A power in W, or None."""
    return None if power is None else power.as_watts()


async def main(address: str) -> None:
    """Start the SDK on ``address``, read and command its pools, report what it saw."""
    await microgrid.initialize(
        f"grpc://{address}?ssl=false",
        ResamplerConfig2(resampling_period=timedelta(seconds=0.2)),
    )
    manager = connection_manager.get()
    location = manager.location
    report(
        "microgrid",
        id=None if manager.microgrid_id is None else int(manager.microgrid_id),
        latitude=None if location is None else location.latitude,
        longitude=None if location is None else location.longitude,
        country_code=None if location is None else location.country_code,
    )

    batteries = microgrid.new_battery_pool(priority=5)
    soc = await first(batteries.soc.new_receiver(), lambda s: s.value is not None)
    capacity = await first(batteries.capacity.new_receiver(), lambda s: s.value is not None)
    status = await first(batteries.power_status.new_receiver())
    report(
        "battery_pool",
        ids=sorted(int(c) for c in batteries.component_ids),
        soc_pct=soc.value.as_percent(),
        capacity_wh=capacity.value.as_watt_hours(),
        inclusion_lower_w=watts(status.bounds.lower) if status.bounds else None,
        inclusion_upper_w=watts(status.bounds.upper) if status.bounds else None,
    )

    statuses = batteries.power_status.new_receiver()
    results = batteries.power_distribution_results.new_receiver()
    await batteries.propose_power(Power.from_watts(6000.0))
    target = await first(statuses, lambda s: watts(s.target_power) == 6000.0)
    result = await first(results)
    report(
        "proposed",
        target_w=watts(target.target_power),
        result=type(result).__name__,
        succeeded_w=watts(getattr(result, "succeeded_power", None)),
    )
    socs = batteries.soc.new_receiver()
    risen = await first(socs, lambda s: s.value is not None and s.value.as_percent() > soc_pct(soc))
    report("soc_risen", soc_pct=risen.value.as_percent())

    pv = microgrid.new_pv_pool(priority=5)
    production = await first(pv.power.new_receiver(), lambda s: s.value is not None)
    report("pv_pool", ids=sorted(int(c) for c in pv.component_ids), power_w=watts(production.value))
    pv_status = await first(pv.power_status.new_receiver(), lambda s: s.bounds is not None)
    report(
        "pv_bounds",
        inclusion_lower_w=watts(pv_status.bounds.lower),
        inclusion_upper_w=watts(pv_status.bounds.upper),
    )
    pv_results = pv.power_distribution_results.new_receiver()
    await pv.propose_power(Power.from_watts(-2000.0))  # produce at most 2 kW
    report("pv_proposed", result=type(await first(pv_results)).__name__)
    report("done")


def soc_pct(sample: Any) -> float:
    """A SoC sample's value in %."""
    return float(sample.value.as_percent())


async def run(address: str) -> None:
    """:func:`main`, then end the process at once, whatever the SDK still runs.

    The SDK's actors and streams are meant to live as long as the program. A failure is
    reported, and the exit code is 1.
    """
    try:
        await main(address)
    except Exception as error:  # any failure is the report
        report("error", error=repr(error), traceback=traceback.format_exc())
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
