"""Every protocol method, its errors and its notifications, through the library's trio face.

The real daemon on the simulator, over a real Unix socket (tests/support.py); the asyncio face
runs the same connection code (tests/client/test_aio.py drives it against a daemon too).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import trio

from distributord import __version__
from distributord.client import (
    Acting,
    Allotment,
    BoundsChange,
    Code,
    DaemonError,
    GrantReason,
    HelloRefusedError,
    Limits,
    MicrogridState,
    Outcome,
    ProposalChange,
    ProposalEnd,
    Reason,
    Status,
    UnreachableError,
    Why,
)
from distributord.client.trio import Client, open_client
from distributord.shell.daemon import Daemon
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, sim_wait

BATTERIES = [1001, 1002, 1003, 1004]


# --- queries --------------------------------------------------------------------------------


async def test_ping(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        ping = await client.ping()
    assert ping.version == __version__
    assert ping.uptime_s > 0
    assert ping.microgrid is MicrogridState.CONNECTED
    assert ping.microgrid_api == "v1alpha18"
    assert ping.unreachable_for_s is None


async def test_get_status_and_list_components(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        await client.set_power(1000.0, [1001])
        status = await client.get_status()
        components = await client.list_components()
    assert status.working == frozenset(BATTERIES)
    assert status.uncertain == frozenset()
    assert status.microgrid is MicrogridState.CONNECTED
    first = status.batteries[1001]
    assert first.inverter_id == 2001
    assert first.status is Status.WORKING
    assert first.reasons == frozenset()
    assert first.setpoint_w == 1000.0
    assert first.bounds is not None
    assert first.bounds.inclusion_upper_w == 5000.0
    assert first.soc_pct is not None
    assert first.data_age_s is not None
    assert first.blocked_until_s is None
    assert [(p.battery_id, p.inverter_id) for p in components.pairs] == [
        (b, b + 1000) for b in BATTERIES
    ]
    assert components.left_out == ()


# --- commands -----------------------------------------------------------------------------


async def test_set_power_success(sim: Simulator, client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        result = await client.set_power(-4000.0, [1001, 1002])
    assert result.outcome is Outcome.SUCCESS
    assert result.ok
    assert result.batteries == frozenset({1001, 1002})
    assert result.succeeded_batteries == frozenset({1001, 1002})
    assert result.succeeded_power_w == pytest.approx(-4000)
    assert sum(result.distribution.values()) == pytest.approx(-4000)
    for battery, power in result.distribution.items():
        assert sim.setpoint(sim.inverter_of(battery)) == pytest.approx(power)
    assert set(result.reasons.values()) <= set(Allotment)
    assert result.timing is not None
    assert 0 < result.timing.commands_ms <= result.timing.total_ms


async def test_out_of_bounds_and_error_outcomes_are_results(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        pinned = await client.set_power(1e9, [1001], adjust_power=False)
        unknown = await client.set_power(1000.0, [1001, 9999])
    assert pinned.outcome is Outcome.OUT_OF_BOUNDS
    assert pinned.bounds is not None
    assert pinned.bounds.inclusion_upper_w == 5000.0
    assert unknown.outcome is Outcome.ERROR
    assert unknown.message is not None
    assert "9999" in unknown.message


async def test_a_partial_failure_and_the_failed_battery_blocked(
    sim: Simulator, client: Client
) -> None:
    sim.set_fault(2002, command_error="UNAVAILABLE")
    with trio.fail_after(LIMIT_S):
        result = await client.set_power(2000.0, [1001, 1002])
        status = await client.get_status()
    assert result.outcome is Outcome.PARTIAL_FAILURE
    assert result.failed_batteries == frozenset({1002})
    assert result.failed_power_w is not None
    assert status.batteries[1002].status is Status.UNCERTAIN
    assert Reason.BLOCKED_AFTER_FAILURE in status.batteries[1002].reasons
    assert status.batteries[1002].blocked_until_s is not None


# --- arbitration ----------------------------------------------------------------------------


async def test_hello_propose_get_proposals_withdraw(daemon: Daemon, path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with open_client(path) as fcr, open_client(path) as trade:
            assert await fcr.hello("fcr") == Acting(program="fcr", priority=90, limits=Limits())
            acting = await trade.hello("trade")
            assert acting.priority == 10
            assert acting.limits.max_charge_w == 3000.0
            assert acting.limits.batteries is None
            result = await trade.propose([1001, 1002], power_w=8000.0)
            assert result.outcome is Outcome.SUCCESS
            assert result.arbitration is not None
            assert result.arbitration.program == "trade"
            assert result.arbitration.granted_w == 3000.0  # its max_charge_w
            assert result.arbitration.reasons == (GrantReason.CLAMPED,)
            limiter = await fcr.propose([1001, 1002], upper_w=1000.0)
            assert limiter.outcome is Outcome.SUCCESS
            proposals = {p.program: p for p in await fcr.get_proposals()}
            assert set(proposals) == {"fcr", "trade"}
            assert proposals["fcr"].power_w is None
            assert proposals["fcr"].upper_w == 1000.0
            assert proposals["trade"].power_w == 8000.0
            assert proposals["trade"].batteries == frozenset({1001, 1002})
            assert proposals["trade"].held_batteries == frozenset({1001, 1002})
            assert proposals["trade"].until_disconnect is False
            assert await fcr.withdraw() == (frozenset({1001, 1002}),)
            assert await trade.withdraw([1001, 1002]) == (frozenset({1001, 1002}),)
            assert await trade.get_proposals() == ()


async def test_bounds_changes_follow_one_set(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        async with client.bounds_changes([1001, 1002]) as changes:
            first = await changes.__anext__()
            assert isinstance(first, BoundsChange)
            assert first.batteries == frozenset({1001, 1002})
            assert first.program == "default"
            assert first.bounds.inclusion_upper_w == 10000.0
            await client.set_power(3000.0, [1001, 1002])
            async for change in changes:
                if change.target_w == 3000.0:
                    break


async def test_proposal_events_tell_the_owner(daemon: Daemon, path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with open_client(path, program="trade") as trade, open_client(path) as peak:
            await peak.hello("peak")
            events = trade.proposal_events()
            await trade.propose([1001, 1002], power_w=2000.0)
            await peak.propose([1002, 1003], power_w=1000.0)
            changed = await events.__anext__()
            assert isinstance(changed, ProposalChange)
            assert changed.batteries == frozenset({1001, 1002})
            assert changed.preempted_by is not None
            assert (changed.preempted_by.program, changed.preempted_by.priority) == ("peak", 50)
            await trade.propose([1003, 1004], power_w=500.0, ttl_s=0.2)
            async for event in events:
                if isinstance(event, ProposalEnd) and event.batteries == {1003, 1004}:
                    assert event.why is Why.EXPIRED
                    break


async def test_status_changes_and_command_failures(sim: Simulator, client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        async with client.status_changes() as changes, client.command_failures() as failures:
            await client.subscribe_status()  # what the iterators do when first awaited
            sim.set_fault(2003, final_reply="FAILED")
            result = await client.set_power(1000.0, [1003])
            assert result.outcome is Outcome.SUCCESS  # ACCEPTED: the failure comes after
            failure = await failures.__anext__()
            assert (failure.battery, failure.inverter, failure.reply) == (1003, 2003, "FAILED")
            assert failure.power_w == pytest.approx(1000.0)
            assert failure.program == "default"
            sim.set_fault(1002, error_state=True)
            async for change in changes:
                if change.id == 1002 and change.status is Status.NOT_WORKING:
                    assert Reason.BATTERY_ERROR_STATE in change.reasons
                    break


# --- errors ---------------------------------------------------------------------------------


async def test_bad_arguments_get_the_daemons_error_code(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        with pytest.raises(DaemonError) as negative:
            await client.set_power(1000.0, [-1])
        with pytest.raises(DaemonError) as late_timeout:
            await client.set_power(1000.0, [1001], request_timeout_s=600)
        with pytest.raises(DaemonError) as bad_subscription:
            await client.subscribe_bounds([9999])
        with pytest.raises(DaemonError) as no_method:
            await client.result("set_powr")
        with pytest.raises(DaemonError) as no_power:
            await client.propose([1001])
        # NaN is not JSON: refused before it goes out, as the daemon would refuse it.
        with pytest.raises(DaemonError) as nan:
            await client.set_power(math.nan, [1001])
        with pytest.raises(DaemonError) as infinite_ttl:  # found in review: a bare ValueError
            await client.propose([1001], power_w=1.0, ttl_s=math.inf)
        assert (await client.ping()).microgrid is MicrogridState.CONNECTED  # still usable
    for error, field in (
        (negative, "batteries"),
        (late_timeout, "request_timeout_s"),
        (bad_subscription, "batteries"),
        (no_power, "power_w"),
        (nan, "power_w"),
        (infinite_ttl, "ttl_s"),
    ):
        assert error.value.code == Code.INVALID_PARAMS
        data = error.value.data
        assert isinstance(data, dict)
        assert data["field"] == field
    assert no_method.value.code == Code.METHOD_NOT_FOUND
    assert "set_powr" in str(no_method.value.message)


async def test_hello_refused(client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        with pytest.raises(HelloRefusedError) as refused:
            await client.hello("nobody")
        with pytest.raises(DaemonError) as malformed:
            await client.hello("-not a name")
    assert refused.value.code == Code.NOT_AUTHORISED
    assert refused.value.program == "nobody"
    assert malformed.value.code == Code.INVALID_PARAMS


async def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match="cannot connect to distributord at"):
        async with open_client(tmp_path / "nothing.sock"):
            pass  # pragma: no cover - it does not connect


async def test_a_daemon_that_closes_the_connection(daemon: Daemon, client: Client) -> None:
    with trio.fail_after(LIMIT_S):
        changes = client.status_changes()
        await client.subscribe_status()
        daemon.stop()
        with pytest.raises(UnreachableError, match="closed the connection"):
            await changes.__anext__()
        with pytest.raises(UnreachableError):
            await client.ping()


# --- cancellation -------------------------------------------------------------------------


async def test_a_cancelled_call_leaves_the_connection_usable(
    sim: Simulator, client: Client
) -> None:
    sim.set_fault(2001, command_hang=True)
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(client.set_power, request_timeout_s=1.0), 1000.0, [1001]
            )
            await sim_wait(sim, lambda s: s.pending_commands(2001) > 0)
            nursery.cancel_scope.cancel()  # the call is cancelled while it waits for its reply
        sim.clear_faults(2001)
        assert (await client.ping()).microgrid is MicrogridState.CONNECTED
        # The same set: it runs after the abandoned one, whose reply comes first and is dropped.
        result = await client.set_power(2000.0, [1001])
    assert result.outcome is Outcome.SUCCESS
    assert client.receive_nowait() is None  # nothing was left behind
