"""The simulator's CPU per telemetry tick, in one process: ``python -m bench.sim_tick``.

What one tick of ``distributord sim`` costs for a fleet (1,000 batteries by default, each with
its inverter, every one holding a setpoint): advance the world, make every component's
version-neutral reading (the ticker's work under the lock), then, as each stream does, encode
the reading for the stream's metric filter and serialize the response (what grpc sends). One
stream per component, with the daemon's filter (``daemon``) or none (``every``: every metric
the component has). The figure is the median of the ticks' CPU time (``time.process_time``).
No sockets, no event loop: what gRPC and asyncio add per message is outside it (see the link
benchmark's *sim CPU* for the whole process).

It reaches into the simulator (``Simulator._reading``, the world) for the tick's own steps:
a harness beside the tests, not part of the product.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

from distributord.api.adapter import SetPowerOutcome, Telemetry
from distributord.api.common import TelemetryServing
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import API_VERSIONS, Simulator, adapter

FILTERS = ("daemon", "every")


class _NoStreams:
    """A handler no stream is read from: the benchmark hands readings in itself."""

    def components(self) -> Sequence[tuple[int, object]]:
        return ()

    def connections(self) -> Sequence[tuple[int, int]]:
        return ()

    async def set_power(self, component_id: int, power_w: float, lifetime_s: int | None) -> None:
        raise NotImplementedError

    async def set_reactive_power(
        self, component_id: int, power_var: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        raise NotImplementedError

    def telemetry(self, component_id: int) -> None:
        raise NotImplementedError


def serving(api: str) -> tuple[TelemetryServing, frozenset[str] | None]:
    """The version's telemetry serving and the daemon's filter as it reads it."""
    from distributord.api import v1, v1alpha

    if api == "v1":
        wrap = v1.StreamResponse
        serve = TelemetryServing(
            _NoStreams(),  # type: ignore[arg-type]
            v1.encode_telemetry,
            lambda data: wrap(data=data),
            {n: name for name, n in v1.SIM_METRIC_NUMBERS.items()},
        )
        daemon = v1.stream_request(0).filter.metrics
    else:
        pb2 = v1alpha.VERSIONS[api].pb2
        alpha = v1alpha.AlphaAdapter(v1alpha.VERSIONS[api])
        serve = TelemetryServing(
            _NoStreams(),  # type: ignore[arg-type]
            v1alpha.encode_telemetry,
            lambda t: pb2.ReceiveElectricalComponentTelemetryStreamResponse(telemetry=t),
            {n: name for name, n in v1alpha.SIM_METRIC_NUMBERS.items()},
        )
        daemon = alpha.stream_request(0).filter.metrics
    return serve, serve.wanted(list(daemon))


def tick_cpu_s(api: str, batteries: int, which: str, ticks: int) -> tuple[float, float]:
    """Median CPU seconds of a tick, and of its world part (advance and readings)."""
    adapter(api)  # an unknown version fails here
    sim = Simulator(uniform_fleet(batteries, seed=1), apis=(api,))
    serve, daemon = serving(api)
    wanted = daemon if which == "daemon" else None
    world = sim._world
    now = time.monotonic()
    for inverter in sim.inverter_ids:
        world.command(inverter, 1_000.0, 900, now=now)
    ids = [cid for cid, _ in sim._components]
    whole, part = [], []
    for _ in range(ticks):
        start = time.process_time()
        with sim._changed:
            sim._advance()
            sampled_at = time.time()
            readings: list[Telemetry] = [sim._reading(cid, sampled_at) for cid in ids]
        part.append(time.process_time() - start)
        for reading in readings:
            serve._wrap(serve.message(reading, wanted)).SerializeToString()
        whole.append(time.process_time() - start)
    return statistics.median(whole), statistics.median(part)


def main(argv: Sequence[str] | None = None) -> None:
    """Print one line per version and filter."""
    parser = argparse.ArgumentParser(prog="python -m bench.sim_tick", description=__doc__)
    parser.add_argument("--batteries", type=int, default=1_000)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--api", default=",".join(API_VERSIONS))
    args = parser.parse_args(argv)
    for api in args.api.split(","):
        for which in FILTERS:
            whole, part = tick_cpu_s(api, args.batteries, which, args.ticks)
            print(
                f"{api:10} {which:6} filter: {whole * 1e3:6.1f} ms CPU per tick "
                f"(world and readings {part * 1e3:.1f} ms), {args.batteries} batteries"
            )


if __name__ == "__main__":
    main()
