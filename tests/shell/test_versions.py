"""The daemon against servers that speak one Microgrid API version each (issue 11).

Unconfigured (``microgrid.api = "auto"``), pointed at a simulator that serves only v1alpha18,
only v1alpha19 or only v1, the daemon must negotiate that version, manage every battery
(including one behind a precharger and a breaker), command it in that version, and report
command outcomes as the spec says: on v1alpha18/19 a command succeeds on ``ACCEPTED`` (issue 21:
inverters ramp, the final reply may come long after); a later ``FAILED`` blocks the battery, a
later ``OVERRIDDEN`` (another controller's command won) gives it the reason ``overridden``
without blocking; ``REJECTED`` is a refusal that does not block; a gRPC error is a failed
command (``tests/shell/test_ramping.py`` has the rest).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import trio

from distributord.core.errors import CommandError, NoApiVersionError
from distributord.core.status import Reason, Status
from distributord.shell.link import Backoff, MicrogridLink, Telemetry, discover, open_link
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, config_for, connect, running_daemon, sim_wait, wait_until

VERSIONS = ["v1alpha18", "v1alpha19", "v1"]

SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=40.0),
        BatterySpec(id=1002, soc_pct=40.0),
        BatterySpec(id=1003, soc_pct=40.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,)),
        InverterSpec(id=2002, batteries=(1002,), between=("precharger", "breaker")),
        InverterSpec(id=2003, batteries=(1003,), between=("relay", "fuse")),
    ),
)


@pytest.fixture(params=VERSIONS)
def only(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A simulator that serves one version only."""
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=(request.param,)) as simulator:
        yield simulator


async def test_it_negotiates_manages_every_battery_and_commands_in_that_version(
    only: Simulator, tmp_path: Path
) -> None:
    (version,) = only.apis
    config = config_for(only)
    assert config.microgrid.api == "auto"
    async with (
        running_daemon(only, tmp_path / "c.sock", config) as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        assert daemon.link.version == version
        assert dict(daemon.topology.pairs) == {1001: 2001, 1002: 2002, 1003: 2003}
        assert (await client.result("ping"))["microgrid_api"] == version
        assert (await client.result("get_status"))["microgrid_api"] == version
        result = await client.result(
            "set_power", {"power_w": 3000, "batteries": [1001, 1002, 1003]}
        )
        assert result["outcome"] == "success", result
    assert {only.setpoint(i) for i in (2001, 2002, 2003)} == {1000.0}


@pytest.fixture
def alpha() -> Iterator[Simulator]:
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


async def test_a_failed_final_reply_blocks_the_battery_after_the_request_succeeded(
    alpha: Simulator, tmp_path: Path
) -> None:
    # Before issue 21 the request waited for the final reply and failed; now ACCEPTED is the
    # request's success and the FAILED that follows blocks the battery.
    alpha.set_fault(2002, final_reply="FAILED")
    async with (
        running_daemon(alpha, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success", result
        await wait_until(
            daemon, lambda d: Reason.BLOCKED_AFTER_FAILURE in d.tracker.state(1002).reasons
        )
    assert alpha.setpoint(2002) == 0.0


async def test_no_final_reply_is_a_success_whose_stream_is_followed(
    alpha: Simulator, tmp_path: Path
) -> None:
    alpha.set_fault(2002, final_reply="NONE")
    async with (
        running_daemon(alpha, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result(
            "set_power", {"power_w": 2000, "batteries": [1001, 1002], "request_timeout_s": 0.5}
        )
        assert result["outcome"] == "success", result
        assert daemon.loop.commander.following(2002)  # until its lifetime ends
        assert daemon.tracker.state(1002).status is Status.WORKING
    # The daemon stopped: the call it was still reading was cancelled at the RPC.
    await sim_wait(
        alpha,
        lambda s: [r.outcome for r in s.commands() if r.component_id == 2002] == ["cancelled"],
    )


async def test_a_rejected_command_is_a_refusal_that_does_not_block(
    alpha: Simulator, tmp_path: Path
) -> None:
    alpha.set_fault(2002, command_error="OUT_OF_RANGE")  # v1alpha18 answers REJECTED
    async with (
        running_daemon(alpha, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "partial_failure", result
        assert result["failed_batteries"] == [1002]
        assert daemon.tracker.state(1002).status is Status.WORKING


async def test_an_overridden_command_is_reported_and_does_not_block(
    alpha: Simulator, tmp_path: Path
) -> None:
    # Another controller's command replaced ours (our own newer commands abandon the older
    # streams first): the battery says so (reason overridden); it is not blocked.
    alpha.set_fault(2002, final_reply="OVERRIDDEN")
    async with (
        running_daemon(alpha, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success", result
        await wait_until(daemon, lambda d: Reason.OVERRIDDEN in d.tracker.state(1002).reasons)
        assert daemon.tracker.state(1002).status is Status.WORKING
    assert alpha.setpoint(2002) == 0.0


async def test_a_pinned_version_the_server_lacks_is_named_not_called_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    with Simulator(SCENARIO, apis=("v1",)) as only_v1:
        async with open_link(only_v1.address, api="v1alpha19") as link:
            with pytest.raises(NoApiVersionError) as caught:
                await link.topology()
    assert str(caught.value) == (
        f"no supported Microgrid API version at {only_v1.address}: tried v1alpha19"
    )


@contextmanager
def serving_nothing() -> Iterator[str]:
    """A gRPC server with no services at all (every method UNIMPLEMENTED); its address."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(LIMIT_S)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(LIMIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LIMIT_S)
        loop.close()


async def test_a_server_with_none_of_the_versions_gets_one_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    said = trio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "no supported" in record.getMessage():
                said.set()  # discovery logs from the trio thread

    watch = Watch()
    logging.getLogger("distributord.shell.link").addHandler(watch)
    try:
        with serving_nothing() as address:
            async with open_link(address) as link:
                with trio.fail_after(LIMIT_S):
                    with pytest.raises(NoApiVersionError):
                        await link.topology()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(discover, link)  # retries, and says so once
                        await said.wait()
                        nursery.cancel_scope.cancel()
    finally:
        logging.getLogger("distributord.shell.link").removeHandler(watch)
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [
        f"no supported Microgrid API version at {address}: tried v1alpha18, v1alpha19, v1; "
        "retrying with backoff"
    ]


async def test_a_server_restarted_with_another_version_is_negotiated_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found in review: the version was settled once for good, so a site whose API server came
    # back speaking another version left every stream and command failing UNIMPLEMENTED.
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    sink = Sink()
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",)) as first:
        port = int(first.address.rsplit(":", 1)[1])
        address = first.address
        async with open_link(address) as link:
            await discover(link)
            assert link.version == "v1alpha18"
            assert await command(link, 2001, 500.0) > 0
            async with trio.open_nursery() as nursery:
                await nursery.start(watch, link, sink)
                await sink.heard.wait()
                first.__exit__(None, None, None)  # the server goes away...
                with Simulator(SCENARIO, telemetry_hz=20.0, port=port, apis=("v1",)) as second:
                    # ...and comes back on the same port, speaking v1 only. The telemetry
                    # task's next stream gets UNIMPLEMENTED; discovery (here, by hand) finds v1.
                    with trio.fail_after(LIMIT_S):
                        await discover(link, backoff=Backoff(first_s=0.05, cap_s=0.2))
                    assert await command(link, 2001, 700.0) > 0
                    assert link.version == "v1"
                    assert second.setpoint(2001) == 700.0
                    sink.heard = trio.Event()
                    with trio.fail_after(LIMIT_S):
                        await sink.heard.wait()  # telemetry flows again, decoded as v1
                    nursery.cancel_scope.cancel()
    assert "no longer serves API v1alpha18; negotiating again" in caplog.text
    assert "speaks API v1 (negotiated)" in caplog.text


async def command(link: MicrogridLink, inverter_id: int, power_w: float) -> float:
    """One command, as the commander sends it (a batch of one): until when it holds."""
    landed: dict[int, float | CommandError] = {}
    await link.set_active_powers({inverter_id: power_w}, 60, landed.__setitem__)
    outcome = landed[inverter_id]
    assert isinstance(outcome, float), outcome
    return outcome


class Sink:
    """Counts snapshots; ``heard`` is set by the next one."""

    def __init__(self) -> None:
        self.heard = trio.Event()

    def snapshot(self, snapshot: object) -> None:
        self.heard.set()

    def gap(self, component_id: int, reason: str) -> None:
        pass


async def watch(link: MicrogridLink, sink: Sink, *, task_status: trio.TaskStatus[None]) -> None:
    telemetry = Telemetry(
        link,
        1001,
        battery=True,
        sink=sink,
        max_data_age_s=10.0,
        silence_s=5.0,
        backoff=Backoff(first_s=0.05, cap_s=0.2),
    )
    await telemetry.serve(task_status=task_status)
