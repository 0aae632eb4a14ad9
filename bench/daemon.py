"""Benchmark of the whole daemon: request → reply latency through the real socket.

Usage: ``python -m bench.daemon [--api v1alpha18,v1] [--sizes 10,100,500]
[--requests 1000]``

For each API version and fleet size: ``distributord sim --api VERSION`` (serving only that
version; zero command latency, telemetry at 1 Hz) and ``distributord run`` with
``microgrid.api`` pinned to that version (checked with ``ping``), each in a process of their
own; this process is the client. It sends ``set_power`` for the whole fleet through the
control socket, one request at a time, and alternates each with a *bare fan-out*: the same
number of set-power calls of that version, all at once, from a plain grpc.aio client with the
version's generated stub to the same simulator (what a program with no daemon would do). In
v1 that is ``SetComponentPowerActive``, one reply each; in v1alpha18/19
``SetElectricalComponentPower``, whose reply stream the bare client reads to its end: the
simulator answers ``ACCEPTED``, then the final ``SUCCESS``, and ends the stream, so two
replies per command, as the daemon reads them. Alternating puts both under the same
conditions on a machine whose speed drifts.

Printed per size: the daemon's reply latency (p50, p99) beside the bare fan-out's, their
ratios, and the daemon's own overhead, the reply latency minus the fan-out the daemon performed
(from the ``timing.commands_ms`` it reports). The issue's targets, at 100 and 500 batteries:
p50 within 1.3× of the bare fan-out, p99 within 2×, and an overhead under 5 ms p50 at 100.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from frequenz.api.microgrid.v1 import microgrid_pb2 as v1_pb2
from frequenz.api.microgrid.v1 import microgrid_pb2_grpc as v1_grpc
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2 as v1alpha18_pb2
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2_grpc as v1alpha18_grpc
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2 as v1alpha19_pb2
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2_grpc as v1alpha19_grpc

from bench.distribution import machine
from bench.link import simulator
from distributord.client import Client
from distributord.core.config import API_VERSIONS
from distributord.core.errors import DaemonError

TARGET_P50 = 1.3
TARGET_P99 = 2.0
TARGET_OVERHEAD_MS = 5.0


@contextlib.contextmanager
def daemon(
    address: str,
    api: str,
    directory: Path,
    log: str,
    *,
    metrics: str | None = None,
    extra: str = "",
) -> Iterator[Path]:
    """``distributord run`` against ``address`` speaking ``api``, logging to ``log``.

    Yields its socket path. The version is pinned in a configuration file (``run`` has no flag
    for it), ``metrics.listen`` is ``metrics`` if given, and ``extra`` (TOML: more tables, the
    programs, say) is appended; the rest is the default.
    """
    sock = directory / "control.sock"
    config = directory / "distributord.toml"
    text = f'[microgrid]\napi = "{api}"\n'
    if metrics is not None:
        text += f'[metrics]\nlisten = "{metrics}"\n'
    config.write_text(text + extra, encoding="utf-8")
    command = [sys.executable, "-m", "distributord", "run", "--config", str(config)]
    command += ["--microgrid", address, "--socket", str(sock), "--log-level", "warning"]
    with open(log, "a") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
    try:
        yield sock
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.asynccontextmanager
async def connected(sock: Path) -> AsyncIterator[Client]:
    """A client of the daemon at ``sock`` (the library's asyncio face), once it listens.

    asyncio rather than trio because the bare fan-out is a grpc.aio client: both paths run on
    the one event loop, so that they are measured under the same conditions. It keeps every
    notification, for :func:`drop_notifications` to count.
    """
    for _ in range(600):  # the daemon is starting; wait for its socket (up to a minute)
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError(f"the daemon did not open {sock}")
    client = Client(reader, writer, peer=f"distributord at {sock}", keep_all_notifications=True)
    try:
        yield client
    finally:
        await client.aclose()


def drop_notifications(client: Client) -> int:
    """Drop the notifications received so far, between requests; how many there were."""
    count = 0
    while client.receive_nowait() is not None:
        count += 1
    return count


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_all_working(client: Client, n: int) -> None:
    """Until the daemon has telemetry from every battery (polled: the daemon is another process)."""
    for _ in range(600):
        if len((await client.result("get_status"))["working"]) >= n:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"fewer than {n} batteries working after two minutes")


LIFETIME_S = 60
"""The bare fan-out's ``request_lifetime``: the daemon's default setpoint lifetime."""

FanOut = Callable[[Sequence[int], float], Awaitable[None]]
"""Command every inverter of a list to the same power (W), all at once."""


def bare_fan_out(api: str, channel: grpc.aio.Channel) -> FanOut:
    """The bare client's fan-out in ``api``, with the version's generated stub on ``channel``.

    v1: ``SetComponentPowerActive``, one reply per call. v1alpha18/19:
    ``SetElectricalComponentPower``, each reply stream read to its end (``ACCEPTED``, then the
    final reply); a command whose last reply is not ``SUCCESS`` fails the benchmark.
    """
    if api == "v1":
        stub = v1_grpc.MicrogridStub(channel)

        async def fan_out_v1(inverters: Sequence[int], power_w: float) -> None:
            await asyncio.gather(
                *(
                    stub.SetComponentPowerActive(
                        v1_pb2.SetComponentPowerActiveRequest(
                            component_id=i, power=power_w, request_lifetime=LIFETIME_S
                        )
                    )
                    for i in inverters
                )
            )

        return fan_out_v1
    # v1alpha18 and v1alpha19 have the same messages, each in its own generated package.
    pb2: Any = {"v1alpha18": v1alpha18_pb2, "v1alpha19": v1alpha19_pb2}[api]
    stubs: Any = {"v1alpha18": v1alpha18_grpc, "v1alpha19": v1alpha19_grpc}[api]
    alpha_stub = stubs.MicrogridStub(channel)
    active = pb2.POWER_TYPE_ACTIVE
    success = pb2.SET_ELECTRICAL_COMPONENT_POWER_REQUEST_STATUS_SUCCESS

    async def command(inverter: int, power_w: float) -> None:
        request = pb2.SetElectricalComponentPowerRequest(
            electrical_component_id=inverter,
            power_type=active,
            power=power_w,
            request_lifetime=LIFETIME_S,
        )
        last = None
        async for reply in alpha_stub.SetElectricalComponentPower(request):
            last = reply.status
        if last != success:
            raise RuntimeError(f"inverter {inverter}: the reply stream ended with {last}")

    async def fan_out_alpha(inverters: Sequence[int], power_w: float) -> None:
        await asyncio.gather(*(command(i, power_w) for i in inverters))

    return fan_out_alpha


async def measure(
    n: int,
    requests: int,
    hz: float,
    log: str,
    *,
    api: str,
    metrics: str | None = None,
    while_running: Callable[[], Coroutine[Any, Any, None]] | None = None,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Run one fleet size; returns the figures in ms, and ``failed``: requests not a success.

    With ``metrics``, the daemon serves them there (``metrics.listen``); ``while_running`` runs
    beside the requests (a scraper, say) and is cancelled when they are done. ``samples``, if
    given, gets every latency in seconds appended (``daemon``, ``bare``).
    """
    with (
        simulator(n, hz, api=api) as sim,
        tempfile.TemporaryDirectory() as directory,
        daemon(sim.address, api, Path(directory), log, metrics=metrics) as sock,
    ):
        async with connected(sock) as client:
            await wait_all_working(client, n)
            spoken = (await client.result("ping")).get("microgrid_api")
            if spoken != api:
                raise RuntimeError(f"the daemon speaks {spoken}, not {api}")
            channel = grpc.aio.insecure_channel(sim.address)
            fan_out = bare_fan_out(api, channel)
            batteries = [1000 + k for k in range(1, n + 1)]
            inverters = [2000 + k for k in range(1, n + 1)]
            failed = 0

            async def bare(power: float) -> float:
                start = time.perf_counter()
                await fan_out(inverters, power / n)
                return time.perf_counter() - start

            async def through_daemon(power: float) -> tuple[float, float]:
                nonlocal failed
                start = time.perf_counter()
                params = {"power_w": power, "batteries": batteries}
                try:
                    result = await client.result("set_power", params)
                except DaemonError:  # refused (overloaded, say): not a success
                    result = {}
                elapsed = time.perf_counter() - start
                if result.get("outcome") != "success":
                    failed += 1
                    return elapsed, elapsed
                return elapsed, result["timing"]["commands_ms"] / 1e3

            powers = [s * f * n * 5000 for f in (0.1, 0.3, 0.5, 0.7, 0.9) for s in (1, -1)]
            for k in range(20):  # warm up both paths
                await bare(powers[k % len(powers)])
                await through_daemon(powers[k % len(powers)])
            failed = 0
            bare_s: list[float] = []
            daemon_s: list[float] = []
            overhead_s: list[float] = []
            beside = asyncio.create_task(while_running()) if while_running else None
            for k in range(requests):
                power = powers[k % len(powers)]
                bare_s.append(await bare(power))
                elapsed, commands = await through_daemon(power)
                daemon_s.append(elapsed)
                overhead_s.append(elapsed - commands)
            if beside is not None:
                beside.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beside
            await channel.close()
    if samples is not None:
        samples.setdefault("daemon", []).extend(daemon_s)
        samples.setdefault("bare", []).extend(bare_s)
    ms = 1e3
    return {
        "daemon_p50": statistics.median(daemon_s) * ms,
        "daemon_p99": percentile(daemon_s, 0.99) * ms,
        "bare_p50": statistics.median(bare_s) * ms,
        "bare_p99": percentile(bare_s, 0.99) * ms,
        "overhead_p50": statistics.median(overhead_s) * ms,
        "overhead_p99": percentile(overhead_s, 0.99) * ms,
        "failed": failed,
    }


def verdict(ok: bool) -> str:
    """A tick or a cross."""
    return "✓" if ok else "✗"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--api", default="v1alpha18,v1", help="versions, comma-separated")
    parser.add_argument("--sizes", default="10,100,500", help="fleet sizes, comma-separated")
    parser.add_argument("--requests", type=int, default=1000, help="requests per size")
    parser.add_argument("--telemetry-hz", type=float, default=1.0, help="the simulator's rate")
    parser.add_argument("--daemon-log", default=os.devnull, help="append the daemon's log here")
    args = parser.parse_args(argv)
    apis = [a.strip() for a in args.api.split(",")]
    if unknown := [a for a in apis if a not in API_VERSIONS]:
        parser.error(f"--api: unknown {', '.join(unknown)}; known: {', '.join(API_VERSIONS)}")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    print(f"daemon: {machine()}")
    print(
        f"{args.requests} requests per size, each alternated with a bare fan-out of the same "
        "version; ms"
    )
    print(
        f"{'api':<10} {'batteries':>9} {'daemon p50':>11} {'bare p50':>9} {'ratio':>6} "
        f"{'daemon p99':>11} {'bare p99':>9} {'ratio':>6} {'overhead p50/p99':>17}"
    )
    for api in apis:
        for n in (int(s) for s in args.sizes.split(",")):
            f = asyncio.run(measure(n, args.requests, args.telemetry_hz, args.daemon_log, api=api))
            r50, r99 = f["daemon_p50"] / f["bare_p50"], f["daemon_p99"] / f["bare_p99"]
            checks = ""
            if n in (100, 500):
                checks = f"  p50 {verdict(r50 <= TARGET_P50)} p99 {verdict(r99 <= TARGET_P99)}"
                if n == 100:
                    checks += f" overhead {verdict(f['overhead_p50'] < TARGET_OVERHEAD_MS)}"
            if f["failed"]:
                checks += f"  {f['failed']:.0f} requests not a success (see --daemon-log)"
            print(
                f"{api:<10} {n:>9} {f['daemon_p50']:>11.1f} {f['bare_p50']:>9.1f} {r50:>6.2f} "
                f"{f['daemon_p99']:>11.1f} {f['bare_p99']:>9.1f} {r99:>6.2f} "
                f"{f['overhead_p50']:>8.1f} / {f['overhead_p99']:<6.1f}{checks}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
