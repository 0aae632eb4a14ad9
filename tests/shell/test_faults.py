"""Faults of the microgrid, as the operator sees them: status, replies, log lines, STATUS=.

Each test breaks something on the Microgrid API side (with the simulator's faults, or its
hostile-telemetry hooks :meth:`Simulator.rewrite_readings` / :meth:`Simulator.rewrite_messages`)
and asserts what ``get_status``, ``list_components``, ``ping``, ``set_power``, the log and
systemd's ``STATUS=`` say, and that no request goes unanswered: every call is bounded
(:data:`tests.support.LIMIT_S`), and while a fault lasts a pinger asks the daemon every 50 ms
and fails the test if one answer takes longer than :data:`PING_LIMIT_S`.

Nothing sleeps to synchronise: the tests wait on the simulator (``sim_wait``), on the daemon's
status board (``wait_until``), on notifications and on log lines, all under deadlines.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client import generate_latest

from distributord.api.adapter import BatteryTelemetry, Telemetry
from distributord.core.config import Config
from distributord.core.status import Reason, Status
from distributord.shell.daemon import Daemon
from distributord.shell.service import status_line
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import API_VERSIONS, Simulator
from tests.shell.test_service import RUN, config_file, daemon_process
from tests.support import (
    LIMIT_S,
    Client,
    config_for,
    connect,
    free_port,
    running_daemon,
    sim_wait,
    wait_until,
)

HZ = 20.0
"""Telemetry rate: a stale battery shows within a second, and a 20-battery fleet stays cheap."""

MAX_AGE_S = 1.0
"""``status.max_data_age_s`` in tests that wait for data to go stale: short, but 20 samples."""

PING_LIMIT_S = 1.0
"""While a fault lasts, every ping must be answered within this (the request loop never
blocks; a second is generous on a loaded 2-core CI machine)."""

RESUME_LIMIT_S = 5.0
"""After the API restarts, service (telemetry and commands) must be back within this."""

ALL = [1001, 1002, 1003]


def fleet(n: int = 3) -> Simulator:
    return Simulator(uniform_fleet(n, seed=7), telemetry_hz=HZ)


def quick(sim: Simulator, **microgrid: Any) -> Config:
    """A configuration whose staleness shows within a second (``microgrid``: its keys)."""
    return config_for(sim, status={"max_data_age_s": MAX_AGE_S}, microgrid=microgrid)


@asynccontextmanager
async def pinging(path: Path) -> AsyncIterator[list[float]]:
    """Ping the daemon every 50 ms on a connection of its own; yields the latencies.

    A ping not answered within :data:`PING_LIMIT_S` fails the test (TooSlowError).
    """
    latencies: list[float] = []
    async with connect(path) as client, trio.open_nursery() as nursery:

        async def ping_forever() -> None:
            while True:
                start = trio.current_time()
                with trio.fail_after(PING_LIMIT_S):
                    assert (await client.result("ping"))["version"]
                latencies.append(trio.current_time() - start)
                await trio.sleep(0.05)  # pacing, not synchronisation

        nursery.start_soon(ping_forever)
        yield latencies
        nursery.cancel_scope.cancel()
    assert latencies, "not a single ping was answered"


async def battery_status(client: Client, battery_id: int) -> dict[str, Any]:
    status = await client.result("get_status")
    (entry,) = [b for b in status["batteries"] if b["id"] == battery_id]
    return dict(entry)


async def status_changed(client: Client, limit_s: float = LIMIT_S) -> dict[str, Any]:
    """The next ``status_changed`` notification (replies in between are skipped)."""
    while (message := await client.receive(limit_s)).get("method") != "status_changed":
        pass
    return message


async def scrape_metrics(daemon: Daemon) -> str:
    """What ``/metrics`` would serve now (read in a thread, as a scrape is)."""
    text = await trio.to_thread.run_sync(generate_latest, daemon.metrics.registry)
    return text.decode()


def state_is(battery_id: int, status: Status, reason: Reason | None = None) -> Any:
    def holds(daemon: Daemon) -> bool:
        state = daemon.tracker.state(battery_id)
        return state.status is status and (reason is None or reason in state.reasons)

    return holds


def working(*batteries: int) -> Callable[[Daemon], bool]:
    return lambda d: all(d.tracker.state(b).status is Status.WORKING for b in batteries)


def assert_commanded(sim: Simulator, inverters: Iterable[int], total_w: float) -> None:
    """Every one of ``inverters`` holds a setpoint, and they add up to ``total_w``."""
    setpoints = [sim.setpoint(i) for i in inverters]
    assert all(p > 0 for p in setpoints), setpoints
    assert sum(setpoints) == pytest.approx(total_w, rel=1e-6), setpoints


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="distributord")
    return caplog


class LogWatch(logging.Handler):
    """The in-process daemon's log lines as they come; wait for one to have been said n times."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._token = token
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._token.run_sync_soon(self._changed.set)  # thread-safe: a log may come from any

    async def wait_for(self, needle: str, times: int = 1) -> None:
        with trio.fail_after(LIMIT_S):
            while sum(needle in line for line in self.lines) < times:
                await self._changed.wait()
                self._changed = trio.Event()


@asynccontextmanager
async def watching_log() -> AsyncIterator[LogWatch]:
    watch = LogWatch(trio.lowlevel.current_trio_token())
    logger = logging.getLogger("distributord")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


def no_barrier_tripped(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing reached a task's fault barrier: every message was judged, none crashed."""
    ours = [r for r in caplog.records if r.name.startswith("distributord")]
    assert not [r.getMessage() for r in ours if r.exc_info or "could not be handled" in r.msg]


# --- 1. the API is down at start --------------------------------------------------------------


async def test_an_api_down_at_start_is_served_around_then_managed(tmp_path: Path) -> None:
    port = free_port()
    sock = tmp_path / "c.sock"
    args = [*RUN, "--microgrid", f"127.0.0.1:{port}", "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        serving = await notify.wait_for("READY", "1")
        assert serving["STATUS"] == f"waiting for the microgrid at 127.0.0.1:{port}"
        down = await notify.wait_for("STATUS")
        assert (
            down["STATUS"]
            == f"waiting for the microgrid at 127.0.0.1:{port}: UNREACHABLE, retrying"
        )
        await log.wait_for("microgrid unreachable")
        async with connect(sock) as client:
            ping = await client.result("ping")
            assert ping["microgrid"] == "unreachable"
            assert ping["unreachable_for_s"] >= 0.0
            assert (await client.result("get_status"))["microgrid"] == "unreachable"
            refused = await client.call("set_power", {"power_w": 1000, "batteries": [1001]})
            assert refused["error"]["code"] == -32004
            assert (await client.call("list_components"))["error"]["code"] == -32004

            with Simulator(uniform_fleet(3, seed=7), telemetry_hz=HZ, port=port) as sim:
                ready = await notify.wait_for("READY", "1")  # discovery completed
                assert ready["STATUS"].endswith("; API v1alpha18")
                await log.wait_for("microgrid reachable again")
                while "3 working" not in (await notify.wait_for("STATUS"))["STATUS"]:
                    pass
                assert (await client.result("ping"))["microgrid"] == "connected"
                status = await client.result("get_status")
                assert status["working"] == ALL
                components = await client.result("list_components")
                assert {p["battery_id"] for p in components["pairs"]} == set(ALL)
                result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
                assert result["outcome"] == "success", result
                assert_commanded(sim, (2001, 2002, 2003), 3000.0)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
    assert "Traceback" not in log.text


# --- 2. the API restarts mid-run --------------------------------------------------------------


async def test_an_api_restart_drops_every_stream_and_service_resumes_within_5_s(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture, record_property: Any
) -> None:
    sock = tmp_path / "c.sock"
    first = fleet(3).__enter__()
    port = int(first.address.rsplit(":", 1)[1])
    try:
        async with (
            watching_log() as log,
            running_daemon(first, sock, quick(first)) as daemon,
            connect(sock) as client,
            pinging(sock) as pings,
        ):
            before = await client.result("ping")
            result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
            assert result["outcome"] == "success"

            first.__exit__(None, None, None)  # the API server goes away, every stream with it
            await log.wait_for("microgrid unreachable: every telemetry stream is broken")
            down = await client.result("ping")
            assert down["microgrid"] == "unreachable", down
            with Simulator(uniform_fleet(3, seed=7), telemetry_hz=HZ, port=port) as second:
                back = trio.current_time()
                await sim_wait(
                    second,
                    lambda s: all(s.open_streams(c) == 1 for c in (*ALL, 2001, 2002, 2003)),
                    limit_s=RESUME_LIMIT_S,
                )
                await wait_until(daemon, working(*ALL))
                result = await client.result("set_power", {"power_w": 1500, "batteries": ALL})
                resumed_s = trio.current_time() - back
                assert result["outcome"] == "success", result
                assert_commanded(second, (2001, 2002, 2003), 1500.0)
                record_property("resume_s", resumed_s)
                print(f"service resumed {resumed_s:.2f} s after the API came back")
                assert resumed_s < RESUME_LIMIT_S
                after = await client.result("ping")
                assert after["uptime_s"] > before["uptime_s"]  # the same daemon, not a new one
                assert after["microgrid"] == "connected"
                status = await client.result("get_status")
                assert status["working"] == ALL
                # The link is one fact: one line down, one back, none per stream.
                assert sum("microgrid unreachable" in line for line in log.lines) == 1
                assert sum("microgrid reachable again" in line for line in log.lines) == 1
                per_stream = [line for line in log.lines if "telemetry stream" in line]
                assert per_stream == [line for line in per_stream if "unreachable" in line]
        assert max(pings) < PING_LIMIT_S
    finally:
        first.__exit__(None, None, None)
    no_barrier_tripped(caplog_info)


async def test_an_outage_is_one_fact_no_battery_reads_working_during_it(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    # Issue 21, item 2: with the microgrid down, `ping` said "connected", the metric stayed 1,
    # the log had one warning per stream, and batteries with a standing setpoint flapped
    # uncertain -> working -> uncertain as blocking windows ended.
    heard: list[dict[str, Any]] = []  # what a status subscriber was told, as it came

    async def listen(subscriber: Client) -> None:
        while True:
            heard.append((await status_changed(subscriber, limit_s=math.inf))["params"])

    with fleet(3) as sim:
        sock = tmp_path / "c.sock"
        async with (
            watching_log() as log,
            running_daemon(sim, sock, quick(sim)) as daemon,
            connect(sock) as client,
            connect(sock) as subscriber,
            pinging(sock),
            trio.open_nursery() as nursery,
        ):
            await wait_until(daemon, working(*ALL))
            result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
            assert result["outcome"] == "success", result
            assert await subscriber.result("subscribe_status") == {"subscribed": True}
            nursery.start_soon(listen, subscriber)

            sim.outage()
            went = trio.current_time()
            await wait_until(
                daemon,
                lambda d: all(
                    d.tracker.state(b).reasons == {Reason.MICROGRID_UNREACHABLE} for b in ALL
                ),
            )
            assert trio.current_time() - went < MAX_AGE_S  # at once, not at max_data_age
            ping = await client.result("ping")
            assert ping["microgrid"] == "unreachable", ping
            status = await client.result("get_status")
            assert status["microgrid"] == "unreachable"
            assert status["working"] == status["uncertain"] == []
            assert "distributord_microgrid_connected 0.0" in await scrape_metrics(daemon)
            assert status_line(daemon).startswith("microgrid UNREACHABLE for ")
            refused = await client.result("set_power", {"power_w": 1500, "batteries": ALL})
            assert refused["outcome"] == "error", refused  # no usable battery: nothing sent
            # The outage lasts longer than the blocking windows and the data age: the streams
            # keep failing, and nothing turns a battery working meanwhile.
            await trio.sleep(4 * MAX_AGE_S)  # the outage's length, not a synchronisation
            assert {daemon.tracker.state(b).status for b in ALL} == {Status.NOT_WORKING}
            during = list(heard)

            sim.outage(down=False)
            await log.wait_for("microgrid reachable again")
            await wait_until(daemon, working(*ALL))
            result = await client.result("set_power", {"power_w": 1500, "batteries": ALL})
            assert result["outcome"] == "success", result
            assert (await client.result("ping"))["microgrid"] == "connected"
            nursery.cancel_scope.cancel()
    assert during == [
        {"id": b, "status": "not_working", "reasons": ["microgrid_unreachable"]} for b in ALL
    ]
    assert sum("microgrid unreachable" in line for line in log.lines) == 1
    assert sum("microgrid reachable again" in line for line in log.lines) == 1
    assert not [line for line in log.lines if "reconnecting" in line or "failed:" in line]
    no_barrier_tripped(caplog_info)


# --- 3. faults one at a time --------------------------------------------------------------------


async def test_a_hanging_inverter_fails_its_battery_within_the_timeout_others_succeed(
    tmp_path: Path,
) -> None:
    with fleet(3) as sim:
        sim.set_fault(2001, command_hang=True)
        sock = tmp_path / "c.sock"
        async with running_daemon(sim, sock) as daemon, connect(sock) as client:
            start = trio.current_time()
            result = await client.result(
                "set_power", {"power_w": 3000, "batteries": ALL, "request_timeout_s": 0.5}
            )
            took = trio.current_time() - start
            assert took < 0.5 + PING_LIMIT_S, took
            assert result["outcome"] == "partial_failure", result
            assert result["failed_batteries"] == [1001]
            assert result["succeeded_batteries"] == [1002, 1003]
            assert sim.setpoint(2001) == 0.0
            assert_commanded(sim, (2002, 2003), result["succeeded_power_w"])
            # The timeout cancelled the call at the RPC: the inverter saw it cancelled.
            await sim_wait(
                sim, lambda s: [r.outcome for r in s.commands() if r.component_id == 2001] != []
            )
            assert [r.outcome for r in sim.commands() if r.component_id == 2001] == ["cancelled"]
            entry = await battery_status(client, 1001)
            assert entry["status"] in {"uncertain", "working"}  # blocked for 1 s, then back
            assert daemon.tracker.state(1002).status is Status.WORKING


async def test_ten_percent_of_inverters_erroring_fail_only_their_batteries(
    tmp_path: Path,
) -> None:
    with Simulator(uniform_fleet(20, seed=7), telemetry_hz=HZ) as sim:
        erring = {2002: 1002, 2011: 1011}
        for inverter in erring:
            sim.set_fault(inverter, command_error="UNAVAILABLE")
        batteries = list(sim.battery_ids)
        sock = tmp_path / "c.sock"
        async with running_daemon(sim, sock) as daemon, connect(sock) as client:
            result = await client.result(
                "set_power", {"power_w": 20 * 1000, "batteries": batteries}
            )
            assert result["outcome"] == "partial_failure", result
            assert result["failed_batteries"] == sorted(erring.values())
            assert len(result["succeeded_batteries"]) == 18
            assert result["failed_power_w"] + result["succeeded_power_w"] == pytest.approx(20_000)
            for inverter in sim.inverter_ids:
                assert (sim.setpoint(inverter) == 0.0) == (inverter in erring), inverter
            status = await client.result("get_status")
            blocked = set(status["uncertain"]) | (set(batteries) - set(status["working"]))
            assert blocked <= set(erring.values())
            for battery in erring.values():
                entry = await battery_status(client, battery)
                if entry["status"] == "uncertain":
                    assert "blocked_after_failure" in entry["reasons"]
            assert daemon.tracker.state(1001).status is Status.WORKING


async def test_a_nan_burst_makes_the_battery_not_working_with_why_then_it_recovers(
    tmp_path: Path,
) -> None:
    with fleet(3) as sim:
        sock = tmp_path / "c.sock"
        async with (
            running_daemon(sim, sock) as daemon,
            connect(sock) as client,
            pinging(sock),
        ):
            for burst in range(2):
                sim.set_fault(1001, nan_metrics={"soc", "capacity"})
                await wait_until(daemon, state_is(1001, Status.NOT_WORKING, Reason.NAN_SOC))
                entry = await battery_status(client, 1001)
                assert entry["status"] == "not_working"
                assert {"nan_soc", "nan_capacity"} <= set(entry["reasons"]), (burst, entry)
                assert daemon.tracker.state(1002).status is Status.WORKING
                result = await client.result("set_power", {"power_w": 2000, "batteries": ALL})
                assert result["outcome"] == "success", result
                assert "1001" not in result["distribution"]
                sim.set_fault(1001, nan_metrics=())
                await wait_until(daemon, working(1001))
                assert (await battery_status(client, 1001))["reasons"] == []


async def test_a_battery_entering_an_error_state_mid_request(tmp_path: Path) -> None:
    with fleet(3) as sim:
        sim.set_fault(2001, command_latency_s=0.3)
        sock = tmp_path / "c.sock"
        async with running_daemon(sim, sock) as daemon, connect(sock) as client:
            request = await client.send("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
            await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
            sim.set_fault(1001, error_state=True)  # while its inverter handles the command
            reply = await client.reply_to(request)
            assert reply["result"]["outcome"] in {"success", "partial_failure"}, reply
            await wait_until(daemon, state_is(1001, Status.NOT_WORKING, Reason.BATTERY_ERROR_STATE))
            entry = await battery_status(client, 1001)
            assert "battery_error_state" in entry["reasons"]
            result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
            assert result["outcome"] == "success", result
            assert result["distribution"] == {"1002": 2000.0}
            assert daemon.tracker.state(1002).status is Status.WORKING
            sim.set_fault(1001, error_state=False)
            await wait_until(daemon, working(1001))


async def test_a_silent_stream_goes_stale_is_replaced_and_recovers(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    with fleet(3) as sim:
        sock = tmp_path / "c.sock"
        config = quick(sim, stream_silence_s=0.5)  # silence shows within half a second
        async with (
            watching_log() as log,
            running_daemon(sim, sock, config) as daemon,
            connect(sock) as client,
            pinging(sock),
        ):
            sim.set_fault(1002, stream_silence=True)
            await wait_until(daemon, state_is(1002, Status.NOT_WORKING, Reason.STALE_BATTERY_DATA))
            entry = await battery_status(client, 1002)
            assert entry["status"] == "not_working"
            assert "stale_battery_data" in entry["reasons"]
            # data_age_s counts from the receipt, staleness from the (earlier) sampling time.
            assert entry.get("data_age_s", MAX_AGE_S) >= MAX_AGE_S - 0.1
            await log.wait_for("battery 1002: telemetry stream silent for 0.5 s; reconnecting")
            assert working(1001, 1003)(daemon)
            # The silent stream was replaced, not added to: one stream open, the new one.
            await sim_wait(sim, lambda s: s.open_streams(1002) == 1)
            sim.set_fault(1002, stream_silence=False)
            await wait_until(daemon, working(1002))
            await log.wait_for("battery 1002: telemetry back after")
            result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
            assert result["outcome"] == "success", result
    no_barrier_tripped(caplog_info)


class Jumping:
    """A reading rewrite that shifts sample timestamps by each offset in turn, forever."""

    def __init__(self, *offsets_s: float) -> None:
        self.offsets_s = offsets_s
        self.sent = 0

    def __call__(self, reading: Telemetry) -> Telemetry:
        offset = self.offsets_s[self.sent % len(self.offsets_s)]
        self.sent += 1
        return attrs.evolve(reading, sampled_at=reading.sampled_at + offset)


async def test_sample_timestamps_jumping_back_and_forth_are_judged_sanely(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    with fleet(3) as sim:
        sock = tmp_path / "c.sock"
        config = config_for(sim, status={"max_data_age_s": 2.0})
        async with (
            running_daemon(sim, sock, config) as daemon,
            connect(sock) as client,
            pinging(sock),
        ):
            assert await client.result("subscribe_status") == {"subscribed": True}
            # Clock skew well inside max_data_age, both ways: the battery stays working.
            jitter = Jumping(+0.5, -0.5)
            sim.rewrite_readings(1001, jitter)
            await sim_wait(sim, lambda _: jitter.sent >= 2 * HZ)  # two seconds of it
            assert daemon.tracker.state(1001).status is Status.WORKING

            # Samples a day in the future are not fresher than their arrival: when they stop,
            # the battery goes stale after max_data_age, as with honest timestamps.
            sim.rewrite_readings(1001, Jumping(+86_400.0))
            await sim_wait(sim, lambda _: True)
            sim.set_fault(1001, stream_silence=True)
            silent = trio.current_time()
            await wait_until(daemon, state_is(1001, Status.NOT_WORKING, Reason.STALE_BATTERY_DATA))
            assert trio.current_time() - silent < 2.0 + PING_LIMIT_S
            sim.set_fault(1001, stream_silence=False)

            # An hour back and a day forward in turn: never trusted as fresh for longer than
            # the fresh half allows, and the daemon neither crashes nor blocks anyone else.
            swinging = Jumping(-3600.0, +86_400.0)
            sim.rewrite_readings(1001, swinging)
            await sim_wait(sim, lambda _: swinging.sent >= HZ)
            assert working(1002, 1003)(daemon)
            result = await client.result("set_power", {"power_w": 2000, "batteries": [1002, 1003]})
            assert result["outcome"] == "success", result

            # An hour back only, advancing: the microgrid's clock is behind; skew, not
            # staleness (spec/status.md).
            sim.rewrite_readings(1001, None)  # honest first: the skew of the swinging ends
            await wait_until(daemon, lambda d: d.tracker.state(1001).reasons == frozenset())
            sim.rewrite_readings(1001, Jumping(-3600.0))
            await wait_until(daemon, state_is(1001, Status.WORKING, Reason.CLOCK_SKEW))
            entry = await battery_status(client, 1001)
            assert entry["clock_offset_s"] == pytest.approx(3600.0, abs=1.0)
            sim.rewrite_readings(1001, None)
            await wait_until(daemon, lambda d: d.tracker.state(1001).reasons == frozenset())
    no_barrier_tripped(caplog_info)


async def test_swinging_timestamps_do_not_make_a_battery_flap(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    # Was a strict xfail (a finding): freshness was judged per message, so samples alternately
    # an hour old and a day ahead flipped the battery on every message.
    with fleet(3) as sim:
        sock = tmp_path / "c.sock"
        config = config_for(sim, status={"max_data_age_s": 2.0})
        async with (
            watching_log() as log,
            running_daemon(sim, sock, config) as daemon,
            connect(sock) as client,
        ):
            await wait_until(daemon, working(*ALL))
            assert await client.result("subscribe_status") == {"subscribed": True}
            before = len(log.lines)
            swinging = Jumping(-3600.0, +86_400.0)
            sim.rewrite_readings(1001, swinging)
            notification = await status_changed(client)  # the reason appears, status stays
            assert notification["params"] == {
                "id": 1001,
                "status": "working",
                "reasons": ["clock_skew"],
            }
            await sim_wait(sim, lambda _: swinging.sent >= 3 * HZ)  # three seconds of it
            assert daemon.tracker.state(1001).status is Status.WORKING
            await log.wait_for("clock skew on battery 1001")
            changes = [line for line in log.lines[before:] if line.startswith("battery 1001: ")]
            skews = [line for line in log.lines[before:] if "clock skew" in line]
            result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
            assert result["outcome"] == "success", result
            assert 1001 in result["succeeded_batteries"]
    assert changes == []
    assert len(skews) == 1, skews  # once per component, not per message
    no_barrier_tripped(caplog_info)


async def test_a_microgrid_clock_30_s_behind_is_skew_and_the_fleet_works(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    # Issue 21, item 1: `faketime -f -30s distributord sim` made the whole fleet not_working
    # ("stale data" beside a data age of 0.1 s) with nothing in the log about clocks.
    with fleet(3) as sim:
        for component in (*ALL, 2001, 2002, 2003):
            sim.set_fault(component, clock_offset_s=-30.0)
        sock = tmp_path / "c.sock"
        config = config_for(sim, status={"max_data_age_s": 10.0})
        async with (
            watching_log() as log,
            running_daemon(sim, sock, config) as daemon,
            connect(sock) as client,
        ):
            await wait_until(daemon, working(*ALL))
            await log.wait_for("clock skew on")
            status = await client.result("get_status")
            assert status["working"] == ALL
            for entry in status["batteries"]:
                assert entry["reasons"] == ["clock_skew"]
                assert entry["clock_offset_s"] == pytest.approx(30.0, abs=1.0)
                assert entry["data_age_s"] < 1.0
            result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
            assert result["outcome"] == "success", result
            scrape = await scrape_metrics(daemon)
            assert 'distributord_battery_clock_offset_seconds{battery="1001"} 30.' in scrape
            for component in (*ALL, 2001, 2002, 2003):  # the clock is set right
                sim.set_fault(component, clock_offset_s=0.0)
            await wait_until(daemon, lambda d: all(not d.tracker.state(b).reasons for b in ALL))
            await log.wait_for("clock skew ended on")
    began = [line for line in log.lines if line.startswith("clock skew on")]
    ended = [line for line in log.lines if line.startswith("clock skew ended")]
    named = [int(n) for line in began for n in re.findall(r"\b[12]00[123]\b", line)]
    assert sorted(named) == [*ALL, 2001, 2002, 2003], began  # each component once
    assert all("30.0 s behind our clock" in line for line in began), began
    assert len(ended) == 1, ended
    no_barrier_tripped(caplog_info)


# --- 4. hostile telemetry, every version --------------------------------------------------------


def rewrite_battery(**fields: Any) -> Callable[[Telemetry], Telemetry]:
    def rewrite(reading: Telemetry) -> Telemetry:
        assert isinstance(reading, BatteryTelemetry)
        return attrs.evolve(reading, **fields)

    return rewrite


YEAR_10000 = 253_402_300_800.0
"""Unix time of 10000-01-01: the first instant past what a ``Timestamp`` may hold."""

HOSTILE: dict[str, Callable[[Telemetry], Telemetry]] = {
    "huge soc": rewrite_battery(soc_pct=1e38),
    "infinite capacity": rewrite_battery(capacity_wh=math.inf),
    "nan everything": rewrite_battery(soc_pct=math.nan, capacity_wh=math.nan, power_w=math.nan),
    "inverted soc bounds": rewrite_battery(soc_bounds=(90.0, 10.0)),
    "after year 9999": rewrite_battery(sampled_at=YEAR_10000 + 86_400.0),
    "before year 1": rewrite_battery(sampled_at=-62_135_596_800.0 - 86_400.0),
    "another id": rewrite_battery(component_id=1002, soc_pct=99.9),
    "empty": rewrite_battery(
        soc_pct=None,
        soc_bounds=None,
        capacity_wh=None,
        power_w=None,
        power_ranges=None,
        states=(),
        errors=(),
    ),
}


MARK_SOC = 42.4242
"""A valid SoC that the hostile power-bounds readings carry, so that a test sees them arrive."""

HOSTILE_BOUNDS: dict[str, Callable[[Telemetry], Telemetry]] = {
    "inverted power bounds": rewrite_battery(soc_pct=MARK_SOC, power_ranges=((5000.0, -5000.0),)),
    "huge power bounds": rewrite_battery(soc_pct=MARK_SOC, power_ranges=((-1e38, math.inf),)),
    "nan power bounds": rewrite_battery(soc_pct=MARK_SOC, power_ranges=((math.nan, math.nan),)),
}
"""Bad power bounds of a battery are unknown, not fatal: its inverter's bounds stand in
(``spec/microgrid-api.md``, "a NaN inclusion bound may be replaced by the same bound of the
other component of the pair"), so the battery stays working within the inverter's limits."""


async def wait_reported(
    client: Client, battery_id: int, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Ask ``get_status`` until the battery's entry satisfies ``predicate`` (paced by replies)."""
    with trio.fail_after(LIMIT_S):
        while not predicate(entry := await battery_status(client, battery_id)):
            pass
    return entry


def unknown_enums(battery_id: int) -> Callable[[str, Any], Any]:
    """A message rewrite: every enum in ``battery_id``'s stream a number no version defines."""

    def scramble(message: Any) -> None:
        for field, value in message.ListFields():
            if field.enum_type is not None:
                if field.is_repeated:
                    value.append(4242)
                else:
                    setattr(message, field.name, 4242)
            elif field.message_type is not None:
                for item in value if field.is_repeated else (value,):
                    scramble(item)

    def rewrite(version: str, response: Any) -> Any:
        fields = response.ListFields()
        if len(fields) != 1 or fields[0][0].message_type is None:
            return response  # not a telemetry message (a set-power reply)
        inner = fields[0][1]
        if battery_id not in {
            getattr(inner, "component_id", None),
            getattr(inner, "electrical_component_id", None),
        }:
            return response
        copy = type(response)()
        copy.CopyFrom(response)
        scramble(copy)
        return copy

    return rewrite


@pytest.mark.parametrize("api", API_VERSIONS)
async def test_hostile_telemetry_is_judged_and_harms_no_other_battery(
    api: str, tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    with Simulator(uniform_fleet(3, seed=7), telemetry_hz=HZ, apis=(api,)) as sim:
        sock = tmp_path / "c.sock"
        async with (
            running_daemon(sim, sock, quick(sim)) as daemon,
            connect(sock) as client,
            pinging(sock),
        ):
            assert daemon.link.version == api
            honest_soc = (await battery_status(client, 1002))["soc_pct"]
            cases: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
                (
                    name,
                    lambda r=rewrite: sim.rewrite_readings(1001, r),  # type: ignore[misc]
                    lambda: sim.rewrite_readings(1001, None),
                )
                for name, rewrite in HOSTILE.items()
            ]
            cases.append(
                (
                    "unknown enum numbers",
                    lambda: sim.rewrite_messages(unknown_enums(1001)),
                    lambda: sim.rewrite_messages(None),
                )
            )
            for name, start, stop in cases:
                start()
                with trio.fail_after(LIMIT_S):
                    await wait_until(daemon, state_is(1001, Status.NOT_WORKING))
                entry = await battery_status(client, 1001)
                assert entry["status"] == "not_working", (name, entry)
                assert entry["reasons"], (name, entry)
                for field in ("soc_pct", "capacity_wh"):
                    value = entry.get(field)
                    assert value is None or 0.0 <= value <= 1e12, (name, entry)
                assert working(1002, 1003)(daemon), name
                # Another component's id did not leak into 1002 (its SoC moves only slowly).
                soc = (await battery_status(client, 1002))["soc_pct"]
                assert abs(soc - honest_soc) < 1.0, (name, soc, honest_soc)
                result = await client.result("set_power", {"power_w": 2000, "batteries": ALL})
                assert result["outcome"] == "success", (name, result)
                assert set(result["distribution"]) == {"1002", "1003"}, (name, result)
                stop()
                await wait_until(daemon, working(1001))
            for name, rewrite in HOSTILE_BOUNDS.items():
                sim.rewrite_readings(1001, rewrite)
                entry = await wait_reported(
                    client, 1001, lambda e: e.get("soc_pct") == pytest.approx(MARK_SOC)
                )
                assert entry["status"] == "working", (name, entry)
                assert entry["bounds"] == {  # the inverter's
                    "inclusion_lower_w": -5000.0,
                    "exclusion_lower_w": 0.0,
                    "exclusion_upper_w": 0.0,
                    "inclusion_upper_w": 5000.0,
                }, name
                result = await client.result("set_power", {"power_w": 6000, "batteries": ALL})
                assert result["outcome"] == "success", (name, result)
                assert 0.0 < result["distribution"]["1001"] <= 5000.0, (name, result)
                sim.rewrite_readings(1001, None)
                await wait_reported(client, 1001, lambda e: e.get("soc_pct") != MARK_SOC)
            assert (await client.result("ping"))["microgrid"] == "connected"
    # Every hostile message went out and was judged: no stream broke on the way (a rewrite
    # that raised on the simulator's side would break it, and pass for a stale battery).
    assert "battery 1001: telemetry stream" not in caplog_info.text
    no_barrier_tripped(caplog_info)


# --- 5. kill -9 with setpoints standing --------------------------------------------------------

LIFETIME_S = 10
"""``setpoints.lifetime_s``: the API's minimum."""

LIFETIME_SCALE = 0.5
"""The simulator holds a setpoint 5 s (10 s × 0.5): longer than the daemon's refresh period
(10/3 s, unscaled), so a live daemon keeps it standing, and a dead one loses it within 5 s."""


async def test_kill_9_leaves_every_inverter_at_0_w_within_a_lifetime_and_a_new_daemon_serves(
    tmp_path: Path,
) -> None:
    scenario = uniform_fleet(3, seed=7)
    with Simulator(scenario, telemetry_hz=HZ, lifetime_scale=LIFETIME_SCALE) as sim:
        config = config_file(tmp_path, f"[setpoints]\nlifetime_s = {LIFETIME_S}\n")
        sock = tmp_path / "c.sock"
        args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
        async with daemon_process(args, tmp_path) as (process, notify, log):
            while "3 working" not in (await notify.wait_for("STATUS"))["STATUS"]:
                pass
            async with connect(sock) as client:
                result = await client.result("set_power", {"power_w": 3000, "batteries": ALL})
                assert result["outcome"] == "success", result
            assert_commanded(sim, sim.inverter_ids, 3000.0)
            process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == -signal.SIGKILL
        scaled_s = LIFETIME_S * LIFETIME_SCALE
        await sim_wait(
            sim, lambda s: all(s.setpoint(i) == 0.0 for i in s.inverter_ids), limit_s=LIMIT_S
        )
        at_zero = time.monotonic() - killed
        print(f"every inverter at 0 W {at_zero:.2f} s after kill -9 (lifetime {scaled_s:g} s)")
        assert at_zero <= scaled_s + 0.5
        last = {
            i: max(
                r.received_at for r in sim.commands() if r.component_id == i and r.outcome == "ok"
            )
            for i in sim.inverter_ids
        }
        assert all(at <= killed for at in last.values())  # nothing commanded after the kill
        assert sock.exists()  # the dead daemon left its socket behind

        (tmp_path / "notify").unlink()
        async with daemon_process(args, tmp_path) as (process, notify, log):
            await notify.wait_for("READY", "1")
            await log.wait_for("replacing stale control socket")
            async with connect(sock) as client:
                assert (await client.result("ping"))["version"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == 0
            assert "Traceback" not in log.text
