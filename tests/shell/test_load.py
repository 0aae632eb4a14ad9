"""The load benchmark: its mix of sets, its figures, and short and long runs against a daemon."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from bench import load
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import running_daemon

# --- the mix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("clients", "batteries"), [(5, 7), (8, 10), (32, 20), (33, 40)])
def test_the_mix_has_every_kind_of_set(clients: int, batteries: int) -> None:
    ids = list(range(1001, 1001 + batteries))
    plan = load.plan_sets(clients, ids)
    assert [a.client for a in plan.clients] == list(range(clients))
    sets = {kind: [set(a.batteries) for a in plan.clients if a.kind == kind] for kind in load.KINDS}
    assert len(sets["disjoint"]) == max(1, clients // 4)
    assert len(sets["overlapping"]) == max(2, clients // 4)
    everyone = [set(a.batteries) for a in plan.clients]
    assert all(s and s <= set(ids) and not s & set(plan.slow) for s in everyone)
    for mine in sets["disjoint"]:  # shared with no one
        assert sum(not mine.isdisjoint(other) for other in everyone) == 1
    for mine in sets["identical"]:  # shared whole with at least one other, overlapping no other
        assert sum(mine == other for other in everyone) >= 2
        assert all(mine == other or mine.isdisjoint(other) for other in everyone)
    overlapping = sets["overlapping"]
    assert len({frozenset(s) for s in overlapping}) == len(overlapping)  # all different
    for mine in overlapping:
        assert any(mine != other and not mine.isdisjoint(other) for other in overlapping)


def test_too_few_batteries_or_clients_for_a_mix_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 17 batteries"):
        load.plan_sets(32, range(1001, 1017))
    with pytest.raises(ValueError, match="at least 5 clients"):
        load.plan_sets(4, range(1001, 1021))


# --- figures ----------------------------------------------------------------------------------


def test_histogram_quantiles_are_within_a_bucket() -> None:
    histogram = load.Histogram()
    samples = [k / 1000 for k in range(1, 1001)]  # 1 ms .. 1 s
    for s in samples:
        histogram.add(s)
    assert histogram.count == 1000
    for q in (0.5, 0.99):
        exact = samples[int(q * len(samples))]
        assert math.isclose(histogram.quantile(q), exact, rel_tol=load.HISTOGRAM_RATIO - 1)
    assert math.isnan(load.Histogram().quantile(0.5))


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ({"id": 1, "result": {"outcome": "success"}}, "success"),
        (
            {"id": 1, "result": {"outcome": "ignored", "message": "superseded by a newer one"}},
            "ignored",
        ),
        ({"id": 1, "result": {"outcome": "ignored", "message": "why not"}}, "ignored (other)"),
        ({"id": 1, "error": {"code": -32001, "message": "overloaded"}}, load.BUSY),
        ({"id": 1}, "malformed"),
    ],
)
def test_outcomes(message: dict[str, object], outcome: str) -> None:
    assert load.outcome_of(message) == outcome


def test_rss_growth_is_measured_from_the_end_of_the_warm_up() -> None:
    samples = [(0.0, 50.0), (60.0, 90.0), (120.0, 100.0), (300.0, 101.0), (480.0, 104.0)]
    growth = load.rss_growth(samples, 480.0)
    assert growth["warm_up_s"] == 120.0
    assert growth["warm_rss_mb"] == 100.0
    assert growth["end_rss_mb"] == 104.0
    assert math.isclose(growth["growth_pct"], 4.0)
    assert growth["ok"]


# --- the client's bookkeeping ------------------------------------------------------------------


class EagerDaemon:
    """A connection whose reply is there before ``send`` returns.

    As a daemon on another core's can be: the reader may take it before the writer runs again.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._replies, self._inbox = trio.open_memory_channel[dict[str, Any]](math.inf)

    async def send(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        request_id = next(self._ids)
        reply = {"jsonrpc": "2.0", "id": request_id, "result": {"outcome": "success"}}
        self._replies.send_nowait(reply)
        await trio.lowlevel.checkpoint()  # the reader is runnable now, in the same batch
        return request_id

    async def receive(self) -> dict[str, Any]:
        return await self._inbox.receive()


@asynccontextmanager
async def eager() -> AsyncIterator[load.Connection]:
    yield EagerDaemon()


async def test_a_reply_read_before_its_send_returns_is_matched() -> None:
    # The first version recorded a request after send() returned: 23 of 71,569 replies of a
    # 60 s run were "unknown" and their requests "missing".
    tally = load.Tally()
    assignment = load.Assignment(client=0, kind="disjoint", batteries=(1001,))
    with trio.fail_after(5):
        await load.run_client(eager, assignment, tally, deadline=trio.current_time() + 0.2, depth=2)
    assert tally.sent > 100
    assert tally.exactly_once(), tally.summary()


# --- a short run against an in-process daemon -------------------------------------------------

SHORT_CLIENTS = 8
SHORT_SECONDS = 5.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(10, seed=7), telemetry_hz=5.0) as simulator:
        yield simulator


async def test_a_short_load_is_answered_exactly_once(sim: Simulator, tmp_path: Path) -> None:
    # 8 clients × depth 4 = 32 outstanding at most, under the default queue of 64: no busy
    # answers either. The window is the load's length; the drain after it has its own bound.
    with trio.fail_after(SHORT_SECONDS + load.DRAIN_S + 15):
        async with running_daemon(sim, tmp_path / "c.sock"):
            ids = await load.battery_ids(str(tmp_path / "c.sock"))
            plan = load.plan_sets(SHORT_CLIENTS, ids)
            window = await load.drive(tmp_path / "c.sock", plan, seconds=SHORT_SECONDS)
    total = window.total()
    assert total.clients == SHORT_CLIENTS
    assert set(window.tallies) == set(load.KINDS)
    assert total.sent > 0
    assert total.sent == total.answered
    assert total.exactly_once(), total.summary()
    assert set(total.outcomes) <= load.EXPECTED, total.outcomes
    for kind, tally in window.tallies.items():
        assert tally.outcomes["success"] > 0, kind  # every class had requests applied


async def test_a_client_that_never_reads_is_dropped_and_the_others_are_answered(
    sim: Simulator, tmp_path: Path
) -> None:
    with trio.fail_after(SHORT_SECONDS + load.DRAIN_S + 15):
        async with running_daemon(sim, tmp_path / "c.sock"):
            plan = load.plan_sets(5, await load.battery_ids(str(tmp_path / "c.sock")))
            # Without a pause between requests: far more replies unread than the daemon
            # keeps for a connection, whatever the machine's speed.
            window = await load.drive(
                tmp_path / "c.sock",
                plan,
                seconds=SHORT_SECONDS,
                slow_client=True,
                slow_hz=math.inf,
            )
    # Whether the daemon pushes back (stops reading it) or drops it is its own rule; either
    # way everyone else is answered, each request once.
    assert window.total().exactly_once(), window.total().summary()
    assert window.slow is not None
    assert window.slow.sent > 0
    assert window.slow.dropped <= window.slow.connections <= window.slow.dropped + 1


# --- the runs: daemon and simulator processes (pytest -m slow) -------------------------


def _check(report: dict[str, object]) -> None:
    print(load.render(report))  # the tables, with -s
    assert report["ok"], load.render(report)


@pytest.mark.slow
def test_32_clients_for_60_s() -> None:
    report = load.run(clients=32, seconds=60)
    _check(report)


@pytest.mark.slow
def test_a_slow_client_costs_the_others_little() -> None:
    report = load.run(clients=32, seconds=20, slow_client=True)
    _check(report)
    effect = report["slow_effect"]
    assert effect is not None
    assert effect["ok"], load.render(report)


@pytest.mark.slow
def test_a_soak_does_not_grow_the_daemon() -> None:
    report = load.run(clients=32, soak_minutes=10)
    _check(report)
    assert report["soak"]["ok"], load.render(report)
