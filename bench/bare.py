"""The link benchmark's baseline: a bare grpc.aio consumer of every telemetry stream.

Usage (``bench.link`` runs it): ``python -m bench.bare --api VERSION
--address HOST:PORT --seconds S --settle S`` with the component ids on stdin, one a line.

A plain asyncio program, as someone with no daemon would write it: one channel (so one HTTP/2
connection, as the link's telemetry has), the version's generated ``MicrogridStub``, one task
per component iterating its stream with ``async for``. Per message it reads the component id
and each metric sample's value (``value.simple_metric.value``) and nothing else: no decoding
into distributord's types, no timestamps, bounds or states. It asks for the streams with the
same requests as the daemon's adapter (every version filters the metrics the daemon reads),
so the server sends both consumers the same messages, and it opens at most
``--max-opening`` streams at a time (the link's ``MAX_OPENING_STREAMS``: a grpc server cancels
calls beyond its pending limit).

Once every stream has delivered and ``--settle`` seconds have passed, it measures itself for
``--seconds``: user plus system CPU of this process (grpc's threads included) over wall time,
messages received, and the time spent in garbage collections; it prints them as one JSON line
on stdout. Its start (interpreter, imports, opening the streams) is outside the window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc
from frequenz.api.microgrid.v1 import microgrid_pb2_grpc as v1_grpc
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2_grpc as v1alpha18_grpc
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2_grpc as v1alpha19_grpc

from distributord.api import v1, v1alpha


def cpu_seconds() -> float:
    """User plus system CPU time of this process, s."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class GcClock:
    """Wall time spent in garbage collections while :attr:`running` (it holds the GIL)."""

    def __init__(self) -> None:
        self.running = False
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.running:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1


class Consumer:
    """Every component's stream on one channel; counts messages, keeps a sum of the values."""

    def __init__(self, api: str, channel: grpc.aio.Channel, max_opening: int) -> None:
        self.received = 0
        self.foreign = 0  # messages carrying another component's id (there should be none)
        self.total = 0.0  # the values read, summed: a consumer uses what it reads
        self._opening = asyncio.Semaphore(max_opening)
        self._first: set[int] = set()
        self._v1 = v1_grpc.MicrogridStub(channel) if api == "v1" else None
        alpha: Any = {"v1alpha18": v1alpha18_grpc, "v1alpha19": v1alpha19_grpc}.get(api)
        self._alpha = None if alpha is None else alpha.MicrogridStub(channel)
        # The adapter, for its stream request only: the daemon's request, metric filter and all.
        self._alpha_request = None if alpha is None else v1alpha.AlphaAdapter(v1alpha.VERSIONS[api])

    @property
    def delivered(self) -> int:
        """Streams that have delivered a message."""
        return len(self._first)

    def _arrived(self, component_id: int) -> None:
        if component_id not in self._first:
            self._first.add(component_id)
            self._opening.release()

    async def consume(self, component_id: int) -> None:
        """Read one component's stream until cancelled."""
        await self._opening.acquire()
        if self._v1 is not None:
            async for response in self._v1.ReceiveComponentDataStream(
                v1.stream_request(component_id)
            ):
                data = response.data
                if data.component_id != component_id:
                    self.foreign += 1
                for sample in data.metric_samples:
                    self.total += sample.value.simple_metric.value
                self.received += 1
                self._arrived(component_id)
        else:
            assert self._alpha is not None
            assert self._alpha_request is not None
            async for reply in self._alpha.ReceiveElectricalComponentTelemetryStream(
                self._alpha_request.stream_request(component_id)
            ):
                telemetry = reply.telemetry
                if telemetry.electrical_component_id != component_id:
                    self.foreign += 1
                for sample in telemetry.metric_samples:
                    self.total += sample.value.simple_metric.value
                self.received += 1
                self._arrived(component_id)


async def measure(
    api: str, address: str, ids: Sequence[int], *, seconds: float, settle: float, max_opening: int
) -> dict[str, float]:
    """Consume every stream for ``settle`` then ``seconds``; the figures of the latter."""
    clock = GcClock()
    async with grpc.aio.insecure_channel(address) as channel:
        consumer = Consumer(api, channel, max_opening)
        tasks = [asyncio.create_task(consumer.consume(i)) for i in ids]
        while consumer.delivered < len(ids):
            await asyncio.sleep(0.1)
            for task in tasks:
                if task.done():  # a stream failed or ended: no fair baseline
                    task.result()
                    raise RuntimeError("a telemetry stream ended")
        await asyncio.sleep(settle)
        start_wall, start_cpu, start_received = time.time(), cpu_seconds(), consumer.received
        clock.running = True
        await asyncio.sleep(seconds)
        clock.running = False
        wall, cpu = time.time() - start_wall, cpu_seconds() - start_cpu
        received = consumer.received - start_received
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "start": start_wall,
        "wall": wall,
        "cpu": cpu,
        "received": float(received),
        "foreign": float(consumer.foreign),
        "gc_s": clock.seconds,
        "gc_collections": float(clock.collections),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Read the ids from stdin, measure, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--api", required=True, choices=("v1alpha18", "v1alpha19", "v1"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--max-opening", type=int, default=256)
    args = parser.parse_args(argv)
    ids = [int(line) for line in sys.stdin.read().split()]
    figures = asyncio.run(
        measure(
            args.api,
            args.address,
            ids,
            seconds=args.seconds,
            settle=args.settle,
            max_opening=args.max_opening,
        )
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
