"""Prometheus metrics, scraped over real HTTP from a daemon on the simulator.

The text is parsed with ``prometheus_client``'s own parser: what a Prometheus server would
read, not what our code meant to write. The scrape runs on a worker thread, as a Prometheus
server's would be another process: the daemon answers it from its own trio thread.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from distributord import __version__
from distributord.core.config import Config, with_overrides
from distributord.core.errors import (
    CommandError,
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.shell.live import fixed
from distributord.shell.metrics import (
    Metrics,
    MetricsServer,
    Reading,
    command_result,
    serve_metrics,
)
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, config_for, connect, running_daemon, sim_wait, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SCENARIO = Scenario(
    batteries=tuple(BatterySpec(id=1001 + k, soc_pct=40.0 + 10 * k) for k in range(3)),
    inverters=tuple(InverterSpec(id=2001 + k, batteries=(1001 + k,)) for k in range(3)),
    telemetry_hz=50.0,
)


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=LIMIT_S) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode("utf-8"))


def parse(text: str) -> Samples:
    """Every sample by name and labels (the parser raises on text Prometheus could not read)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(server: MetricsServer) -> Samples:
    return await scrape_url(server.url)


async def scrape_url(url: str) -> Samples:
    return parse(await trio.to_thread.run_sync(scrape_text, url))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


@contextlib.contextmanager
def served(metrics: Metrics, **bounds: Any) -> Iterator[MetricsServer]:
    server = serve_metrics(metrics, "127.0.0.1:0", **bounds)
    try:
        yield server
    finally:
        server.close()


def address_of(server: MetricsServer) -> tuple[str, int]:
    host_port = server.url.removeprefix("http://").removesuffix("/metrics")
    host, _, port = host_port.rpartition(":")
    return host, int(port)


@contextlib.asynccontextmanager
async def daemon_with_metrics(
    sim: Simulator, tmp_path: Path, *, lifetime_scale: float = 1.0, **status: float
) -> AsyncIterator[tuple[Daemon, MetricsServer]]:
    """The daemon on ``sim`` (``status``: keys of its ``[status]`` table) and its metrics.

    Its socket is ``tmp_path / "c.sock"``; with a ``lifetime_scale`` (the simulator's), its
    setpoints are sent with the shortest lifetime the API allows, 10 s.
    """
    metrics = Metrics(reading_reuse_s=0.0)  # every scrape reads the daemon afresh
    with served(metrics) as server:
        setpoints = {"lifetime_s": 10} if lifetime_scale != 1.0 else {}
        config = config_for(sim, status=status, setpoints=setpoints)
        async with running_daemon(
            sim, tmp_path / "c.sock", config, lifetime_scale=lifetime_scale, metrics=metrics
        ) as daemon:
            yield daemon, server


async def test_a_scrape_shows_requests_commands_and_every_battery(tmp_path: Path) -> None:
    with Simulator(SCENARIO) as sim:
        async with (
            daemon_with_metrics(sim, tmp_path) as (_, server),
            connect(tmp_path / "c.sock") as client,
        ):
            result = await client.result(
                "set_power", {"power_w": 3000.0, "batteries": [1001, 1002, 1003]}
            )
            status = await client.result("get_status")
            await client.send_raw(b'{"jsonrpc": "2.0", "id": 7, "method": "hack_me"}\n')
            await client.send_raw(b"not json\n")
            await client.receive()
            await client.receive()
            samples = await scrape(server)
    assert result["outcome"] == "success"
    assert value(samples, "distributord_up") == 1.0
    assert value(samples, "distributord_build_info", version=__version__, microgrid_api="v1alpha18")
    assert value(samples, "distributord_microgrid_connected") == 1.0
    assert value(samples, "distributord_connected_clients") == 1.0
    assert value(samples, "distributord_requests_total", method="set_power", outcome="success")
    assert value(samples, "distributord_requests_total", method="get_status", outcome="ok") == 1
    # The unknown method's name is no label: a client cannot make series at will.
    assert value(samples, "distributord_requests_total", method="invalid", outcome="parse_error")
    assert (
        value(samples, "distributord_requests_total", method="invalid", outcome="method_not_found")
        == 1
    )
    assert not any("hack_me" in str(labels) for _, labels in samples)
    assert value(samples, "distributord_commands_total", result="success", api="v1alpha18") == 3
    assert value(samples, "distributord_request_duration_seconds_count") == 1
    assert value(samples, "distributord_command_fanout_duration_seconds_count") == 1
    latency_s = result["timing"]["total_ms"] / 1e3
    assert value(samples, "distributord_request_duration_seconds_sum") == pytest.approx(
        latency_s, abs=1e-3
    )
    assert value(samples, "distributord_batteries", status="working") == 3
    assert value(samples, "distributord_standing_setpoints") == 1
    assert value(samples, "distributord_queue_depth") == 0
    # Issue 20: the set_power is a proposal of program "default", granted what it asked.
    assert value(samples, "distributord_program_proposals", program="default") == 1
    assert value(samples, "distributord_program_granted_watts", program="default") == pytest.approx(
        3000.0
    )
    for entry in status["batteries"]:
        battery = str(entry["id"])
        assert value(samples, "distributord_battery_status", battery=battery, status="working")
        assert not value(
            samples, "distributord_battery_status", battery=battery, status="not_working"
        )
        assert (
            value(samples, "distributord_battery_setpoint_watts", battery=battery)
            == (result["distribution"][battery])
        )
        soc = value(samples, "distributord_battery_soc_percent", battery=battery)
        assert soc == pytest.approx(entry["soc_pct"], abs=0.5)  # moved on since get_status
        assert value(samples, "distributord_battery_telemetry_age_seconds", battery=battery) >= 0.0


async def test_failed_and_timed_out_commands_are_counted_apart(tmp_path: Path) -> None:
    with Simulator(SCENARIO) as sim:
        async with (
            daemon_with_metrics(sim, tmp_path) as (_, server),
            connect(tmp_path / "c.sock") as client,
        ):
            sim.set_fault(2001, command_error="UNAVAILABLE")
            sim.set_fault(2002, command_hang=True)
            result = await client.result(
                "set_power",
                {"power_w": 3000.0, "batteries": [1001, 1002, 1003], "request_timeout_s": 0.5},
            )
            samples = await scrape(server)
    assert result["outcome"] == "partial_failure"
    counted = {
        outcome: value(samples, "distributord_commands_total", result=outcome, api="v1alpha18")
        for outcome in ("success", "failed", "timed_out")
    }
    # The two blocked batteries change the standing set's statuses: a re-plan may follow at
    # once and command 1003 again before the scrape, and the ledger releases 2001 and 2002
    # (each may hold the power it was sent: an UNAVAILABLE or a timeout is no proof it did
    # not apply), which fail and hang again (races the daemon is right to run; counting
    # exactly one of each failed about one run in ten). Each outcome has its own label.
    assert counted["failed"] >= 1
    assert counted["timed_out"] >= 1
    assert counted["success"] >= 1
    # The two are blocked for a while (status.md): neither counts as working.
    assert value(samples, "distributord_batteries", status="working") == 1


LAPSE_SCALE = 0.2
"""A simulator and daemon whose setpoints hold ``lifetime_s`` (10 s) × this: 2 s."""


async def lapse_in_an_outage(sim: Simulator, daemon: Daemon) -> None:
    """An outage until the standing setpoints of the 3 inverters lapse, then every battery back.

    The simulator's record is the judge of what lapsed; once the batteries work again, the
    daemon's clock is past when it could last have believed them held.
    """
    sim.outage()
    await sim_wait(sim, lambda s: len({e.inverter_id for e in s.record().lapses()}) == 3)
    sim.outage(down=False)
    await wait_until(
        daemon, lambda d: all(s.status is Status.WORKING for s in d.tracker.states.values())
    )


async def test_setpoints_that_run_out_during_an_outage_are_counted_as_lapses(
    tmp_path: Path,
) -> None:
    # Issue 23: no metric said that a standing setpoint ran out at the inverter (the API's
    # fail-safe) instead of being refreshed or released, so no alert could say so. The
    # simulator's record is the judge of what lapsed.
    with Simulator(SCENARIO, lifetime_scale=LAPSE_SCALE) as sim:
        async with (
            daemon_with_metrics(sim, tmp_path, lifetime_scale=LAPSE_SCALE) as (daemon, server),
            connect(tmp_path / "c.sock") as client,
        ):
            result = await client.result(
                "set_power", {"power_w": 3000.0, "batteries": [1001, 1002, 1003]}
            )
            before = await scrape(server)
            await lapse_in_an_outage(sim, daemon)
            after = await scrape(server)
            lapsed = sim.record().lapses()
    assert result["outcome"] == "success", result
    assert value(before, "distributord_setpoint_lapses_total") == 0
    assert len(lapsed) == 3, lapsed
    assert value(after, "distributord_setpoint_lapses_total") == 3


async def test_stream_breaks_and_reconnects_are_counted(tmp_path: Path) -> None:
    with Simulator(SCENARIO) as sim:
        async with daemon_with_metrics(sim, tmp_path, max_data_age_s=0.5) as (daemon, server):
            before = await scrape(server)
            sim.set_fault(1001, refuse_streams=True)
            sim.drop_streams(1001)
            # Stale, then fresh again: the second transition needs a message from a new stream.
            await wait_until(daemon, lambda d: d.tracker.state(1001).status is Status.NOT_WORKING)
            sim.clear_faults(1001)
            await wait_until(daemon, lambda d: d.tracker.state(1001).status is Status.WORKING)
            after = await scrape(server)
    breaks = "distributord_telemetry_stream_breaks_total"
    reconnects = "distributord_telemetry_stream_reconnects_total"
    assert value(before, breaks, kind="battery") == value(before, reconnects, kind="battery") == 0
    assert value(after, breaks, kind="battery") >= 1  # each refused attempt is one more
    assert value(after, reconnects, kind="battery") == 1
    assert value(after, breaks, kind="inverter") == 0


async def test_a_scrape_before_the_microgrid_is_reached_says_so(tmp_path: Path) -> None:
    from distributord.shell.control import bind_control_socket
    from distributord.shell.daemon import serve_daemon

    metrics = Metrics()
    with served(metrics) as server:
        # A port nobody serves on: the daemon waits for the microgrid, and serves meanwhile.
        config = fixed(with_overrides(Config(), microgrid="127.0.0.1:9"))
        sock = bind_control_socket(str(tmp_path / "c.sock"))
        with sock:
            async with trio.open_nursery() as nursery:
                serving = trio.Event()
                nursery.start_soon(
                    lambda: serve_daemon(config, sock, on_serving=serving.set, metrics=metrics)
                )
                await serving.wait()
                samples = await scrape(server)
                nursery.cancel_scope.cancel()
    assert value(samples, "distributord_up") == 1.0
    assert value(samples, "distributord_microgrid_connected") == 0.0
    assert value(samples, "distributord_build_info", version=__version__, microgrid_api="none")
    assert not any(name.startswith("distributord_battery") for name, _ in samples)


async def test_a_daemon_that_cannot_answer_leaves_the_scrape_with_up_0() -> None:
    metrics = Metrics()
    metrics.watch(lambda: (_ for _ in ()).throw(RuntimeError("broken")), api=lambda: None)
    metrics.request("ping", "ok")
    with served(metrics) as server:
        samples = await scrape(server)
    # Reading failed (logged): the events are still there, and up says the state is not.
    assert value(samples, "distributord_up") == 0.0
    assert value(samples, "distributord_requests_total", method="ping", outcome="ok") == 1


def test_a_scrape_with_nobody_watching_is_the_events_only() -> None:
    metrics = Metrics()
    metrics.request("get_status", "ok")
    with served(metrics) as server:
        samples = parse(scrape_text(server.url))
    assert value(samples, "distributord_up") == 0.0
    assert value(samples, "distributord_requests_total", method="get_status", outcome="ok") == 1
    assert value(samples, "distributord_build_info", version=__version__, microgrid_api="none") == 1


async def test_a_loop_that_cannot_answer_in_time_leaves_up_0() -> None:
    metrics = Metrics()
    metrics.watch(lambda: Reading(api="v1", clients=0), api=lambda: "v1")
    # Asked from the trio thread itself, which therefore cannot run the read: a stuck loop.
    assert metrics.reading(timeout_s=0.05) is None
    await trio.lowlevel.checkpoint()  # the late read runs now, harmlessly


async def test_scrapes_share_a_recent_reading() -> None:
    taken: list[float] = []

    def read() -> Reading:
        taken.append(trio.current_time())
        return Reading(api="v1", clients=len(taken))

    metrics = Metrics()
    metrics.watch(read, api=lambda: "v1")
    readings = [await trio.to_thread.run_sync(metrics.reading) for _ in range(5)]
    assert len(taken) == 1  # five scrapes within a second: one reading
    assert {r.clients for r in readings if r is not None} == {1}


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (None, "success"),
        (CommandFailedError("UNAVAILABLE"), "failed"),
        (CommandRejectedError("OUT_OF_RANGE"), "refused"),
        (CommandOverriddenError("OVERRIDDEN"), "overridden"),
        (CommandError("DEADLINE", "no answer within 1 s"), "timed_out"),
    ],
)
def test_each_command_outcome_has_its_result_label(
    outcome: CommandError | None, label: str
) -> None:
    assert command_result(outcome) == label


def test_run_says_so_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "d.toml"
        config.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "distributord",
                "run",
                "--config",
                str(config),
                "--socket",
                str(tmp_path / "c.sock"),
            ],
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            check=False,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"metrics.listen: cannot serve on 127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]


def test_hostile_http_clients_leave_the_metrics_served() -> None:
    metrics = Metrics()
    metrics.request("ping", "ok")
    with served(metrics) as server:
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1].split("/")[0])
        idle = socket.create_connection((host, port))  # connects and says nothing: one thread
        for garbage in (b"\x00\xff" * 1000 + b"\r\n\r\n", b"GET /" + b"a" * 70_000 + b"\r\n\r\n"):
            with socket.create_connection((host, port)) as hostile:
                hostile.sendall(garbage)
                hostile.settimeout(LIMIT_S)
                hostile.recv(4096)  # an error status, or the connection closed
        with socket.create_connection((host, port)) as gone:
            gone.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request, then away
        samples = parse(scrape_text(server.url))
        idle.close()
    assert value(samples, "distributord_requests_total", method="ping", outcome="ok") == 1


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half-a-line", "no-headers", "headers-unended"],
)
def test_a_client_that_sends_no_whole_request_is_disconnected(sent: bytes) -> None:
    # Issue 18, finding 8: such a client kept its connection (a descriptor and a thread of
    # the daemon's) for as long as it liked.
    metrics = Metrics()
    with served(metrics, request_timeout_s=0.3) as server:
        with socket.create_connection(address_of(server)) as client:
            client.sendall(sent)
            client.settimeout(LIMIT_S)
            assert client.recv(4096) == b""  # closed by the server, unanswered
        parse(scrape_text(server.url))  # and the endpoint serves on


def test_idle_connections_past_the_limit_are_closed_and_a_scrape_gets_through() -> None:
    metrics = Metrics()
    metrics.request("ping", "ok")
    with served(metrics, max_connections=4) as server:
        idle = [socket.create_connection(address_of(server)) for _ in range(50)]
        try:
            # The scrape comes after all of them: it takes the place of an idle one.
            samples = parse(scrape_text(server.url))
            for late in idle[4:]:  # every place was taken: each was closed once idle
                late.settimeout(LIMIT_S)
                assert late.recv(4096) == b""
            statistics = server.statistics()
        finally:
            for connection in idle:
                connection.close()
    assert value(samples, "distributord_requests_total", method="ping", outcome="ok") == 1
    assert statistics.held <= 4
    assert statistics.refused == 46


HOLD_DESCRIPTORS = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
"""Runs a command with at most ``argv[1]`` descriptors open."""


async def test_idle_metrics_connections_leave_the_daemon_its_descriptors(tmp_path: Path) -> None:
    # Issue 18, finding 8: every idle connection to /metrics held a descriptor of the daemon's
    # until it exhausted them (systemd's default soft limit is 1,024): control clients and
    # gRPC could no longer connect. Here the daemon may open 64, about 20 at rest.
    from tests.shell.test_service import RUN, daemon_process
    from tests.support import free_port

    port = free_port()
    config = tmp_path / "d.toml"
    config.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    sock = tmp_path / "c.sock"
    with Simulator(SCENARIO) as sim:
        args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
        command = [sys.executable, "-c", HOLD_DESCRIPTORS, "64", *args]
        async with daemon_process(command, tmp_path) as (process, notify, log):
            await notify.wait_for("READY", "1")
            await notify.wait_for("READY", "1")
            idle = []
            try:
                with trio.fail_after(LIMIT_S):
                    for _ in range(100):
                        idle.append(await trio.open_tcp_stream("127.0.0.1", port))
                samples = await scrape_url(f"http://127.0.0.1:{port}/metrics")
                async with connect(sock) as client:
                    status = await client.result("get_status")
            finally:
                for stream in idle:
                    await stream.aclose()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == 0
    assert value(samples, "distributord_up") == 1.0
    assert [battery["id"] for battery in status["batteries"]] == [1001, 1002, 1003]
    assert "accept failed" not in log.text


async def test_a_request_withdrawn_when_its_client_left_is_counted(tmp_path: Path) -> None:
    with Simulator(SCENARIO) as sim:
        async with (
            daemon_with_metrics(sim, tmp_path) as (_, server),
            connect(tmp_path / "c.sock") as client,
        ):
            sim.set_fault(2001, command_latency_s=0.3)  # the first request holds 1001 meanwhile
            running = await client.send("set_power", {"power_w": 500.0, "batteries": [1001]})
            await sim_wait(sim, lambda s: s.pending_commands(2001) > 0)
            async with connect(tmp_path / "c.sock") as leaving:
                await leaving.send("set_power", {"power_w": 900.0, "batteries": [1001]})
            await client.reply_to(running)
            samples = await scrape(server)
    assert value(samples, "distributord_requests_total", method="set_power", outcome="withdrawn")
    assert value(samples, "distributord_requests_total", method="set_power", outcome="success")
    assert value(samples, "distributord_request_duration_seconds_count") == 1


# --- the endpoint under load (issue 18, finding 8) ---------------------------------------------

SCRAPES = 1000
SCRAPE_LIMIT_S = 60.0
"""A scrape not answered by then counts as failed (Prometheus' own timeout is 10 s)."""


async def timed_scrape(host: str, port: int, times: list[float], failures: list[str]) -> None:
    """One scrape over its own connection, timed from connect to the end of the response."""
    start = trio.current_time()
    try:
        with trio.fail_after(SCRAPE_LIMIT_S):
            response = await _scrape_raw(host, port)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as error:
        failures.append(type(error).__name__)
        return
    if not response.startswith(b"HTTP/1.0 200") or b"distributord_up" not in response:
        failures.append(bytes(response[:40]).decode(errors="replace") or "closed")
        return
    times.append(trio.current_time() - start)


async def _scrape_raw(host: str, port: int) -> bytearray:
    # A socket of our own: open_tcp_stream would resolve the address in a worker thread, and
    # with 1,000 at once some would connect and then wait their turn to send their request.
    sock = trio.socket.socket()
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        response = bytearray()
        while chunk := await stream.receive_some(65536):
            response += chunk
    return response


@pytest.mark.slow
async def test_a_thousand_scrapes_at_once(tmp_path: Path) -> None:
    """Benchmark, printed with -s: 1,000 scrapes started at once against ``distributord run``.

    Not a timed assertion: the figures are for the report. Every scrape must succeed.
    """
    from tests.shell.test_service import RUN, daemon_process
    from tests.support import free_port

    port = free_port()
    config = tmp_path / "d.toml"
    config.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    with Simulator(SCENARIO) as sim:
        sock = tmp_path / "c.sock"
        args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
        async with daemon_process(args, tmp_path) as (process, notify, _):
            await notify.wait_for("READY", "1")
            await notify.wait_for("READY", "1")  # connected: scrapes carry every battery
            times: list[float] = []
            failures: list[str] = []
            started = trio.current_time()
            with trio.fail_after(SCRAPE_LIMIT_S + 30):
                async with trio.open_nursery() as nursery:
                    for _ in range(SCRAPES):
                        nursery.start_soon(timed_scrape, "127.0.0.1", port, times, failures)
            wall = trio.current_time() - started
            process.terminate()
    ordered = sorted(times) + [math.inf] * len(failures)  # a failed scrape: the slowest

    def quantile(q: float) -> str:
        seconds = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        return f"{seconds * 1e3:.0f} ms" if seconds < math.inf else f"> {SCRAPE_LIMIT_S:g} s"

    print(
        f"\n{SCRAPES} scrapes at once: {len(times)} answered, {len(failures)} failed"
        f" ({', '.join(sorted(set(failures)))}); p50 {quantile(0.5)}, p99 {quantile(0.99)},"
        f" max {quantile(1.0)}; all done in {wall:.2f} s"
    )
    assert not failures


async def test_a_scrape_shows_each_batterys_reactive_setpoint(tmp_path: Path) -> None:
    scenario = attrs.evolve(
        SCENARIO,
        inverters=tuple(attrs.evolve(i, reactive_limit_var=1000.0) for i in SCENARIO.inverters),
    )
    with Simulator(scenario) as sim:
        async with (
            daemon_with_metrics(sim, tmp_path) as (_, server),
            connect(tmp_path / "c.sock") as client,
        ):
            batteries = [1001, 1002, 1003]
            result = await client.result(
                "set_power", {"power_w": 3000.0, "reactive_var": -1500.0, "batteries": batteries}
            )
            assert result["outcome"] == "success", result
            samples = await scrape(server)
    for battery in batteries:
        name = "distributord_battery_reactive_setpoint_var"
        assert value(samples, name, battery=str(battery)) == -500.0


async def test_a_scrape_shows_each_groups_members(tmp_path: Path) -> None:
    # Issue 25: battery 1002 on a second inverter too: a group of one battery, two inverters.
    scenario = attrs.evolve(
        SCENARIO,
        inverters=(
            *SCENARIO.inverters,
            InverterSpec(id=2009, batteries=(1002,), power_limit_w=1_000.0),
        ),
    )
    with Simulator(scenario) as sim:
        async with daemon_with_metrics(sim, tmp_path) as (_, server):
            samples = await scrape(server)
    name = "distributord_battery_group_member"
    members = {
        (labels["battery"], labels["member"], labels["kind"])
        for (sample_name, label_set), sample_value in samples.items()
        if sample_name == name and sample_value == 1.0
        for labels in [dict(label_set)]
    }
    assert members == {
        ("1002", "1002", "battery"),
        ("1002", "2002", "inverter"),
        ("1002", "2009", "inverter"),
    }
