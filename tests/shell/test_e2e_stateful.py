"""The whole daemon against the simulator, driven by a hypothesis state machine.

Each example builds a small random fleet (2 to 6 batteries with random SoC, limits, capacities
and some inverter exclusion zones), serves it from a :class:`Simulator` speaking one random
Microgrid API version over loopback gRPC, and runs the real daemon (``serve_daemon``) in
process on a real Unix socket, driven through that socket with the real protocol. The rules:

* ``set_power``: one request, or two or three pipelined on one connection, for random battery
  sets and powers (zero, tiny, beyond every bound, inside exclusion zones);
* ``inject_fault`` / ``heal``: a command error (``UNAVAILABLE``, ``OUT_OF_RANGE``), a hanging
  inverter (requests carry a short ``request_timeout_s``), NaN metrics, an error state;
* ``reload``: new ``setpoints.lifetime_s`` and exponent through the ``LiveValue`` the daemon
  reads its settings from;
* ``depart``: a client sends ``set_power`` and closes its socket before the reply, at times
  while an overlapping request holds its batteries;
* ``let_time_pass``: wait (on the simulator's record) until standing setpoints are re-sent.

The model is the daemon's contract since issue 18 (one setpoint ledger owns what each inverter
was sent and may hold). After every step the simulator's own record is held against it
(:meth:`E2EMachine.records_hold`):

* every command since the last step lies inside the commanded inverter's and battery's bounds
  as the scenario and the SoC the daemon could have seen define them; has a sign some request
  for that battery asked for; goes to no battery that ``get_status`` reported blocked (while a
  working battery of its set could take the power) or not working (while its fault lasted);
* no setpoint lapses on an inverter that had no fault and no failed command lately: wanted
  power is re-sent a third into the lifetime each command was sent with, whatever reloads
  did since (:meth:`~E2EMachine.check_no_lapse`, from the record's expiries);
* power nobody wants does not stand: a battery in no standing setpoint holds 0 W unless it had
  trouble lately (a 0 W request released it, or a request for an overlapping set freed it);
* ``get_status`` reports a setpoint where an inverter holds power, and only a power it may hold
  (applied, or of unknown outcome, while its lifetime may run), never a refused or expired one;
* the standing setpoints are the model's: a planned request ends those it overlaps and stands
  (0 W: stands for nothing); one refused before commanding (out of bounds, no usable battery)
  changes nothing.

Each reply is checked against the request and the record: conservation, shortfall reported,
``power_w: 0`` always released (``success`` or ``partial_failure``, never ``error``; a tiny
non-zero power reported as not placed), every command that succeeded applied with the
lifetime in force, and the failed batteries exactly those whose inverter was made to fail, or
refused at a SoC bound just reached, or out of time (the request ran to its deadline: a
raising command may wait for its round's lowering ones). Every request the loop took is
answered exactly once (wrapping the loop's ``submit`` and ``withdraw`` to watch them, also for
clients that left).

The simulator runs its setpoints' lifetimes at :data:`LIFETIME_SCALE` (a 10 s lifetime lasts
1 s) and the daemon is told (``serve_daemon``'s ``lifetime_scale``), so its ledger times refreshes
and expiries on the same clock and lapses would show within a run; SoC moves at :data:`SPEED`
so that a battery's bounds only change when a command moves it off a bound. The daemon and its
clients live in a trio run on a thread of their own (as in ``test_requestloop_stateful.py``);
each rule reaches it with ``trio.from_thread.run``. Nothing waits by sleeping: replies, the
simulator's ``wait_for`` and trio events order everything.

``DISTRIBUTORD_SOAK=1`` (or ``pytest -m slow``) runs the long soak profile.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import hypothesis
import pytest
import trio
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from distributord.core.arbitration.arbiter import Ask
from distributord.core.config import Config
from distributord.core.distribution import ZERO_POWER_W
from distributord.core.model import Request, Result, Timing
from distributord.core.session import Reply
from distributord.core.status import Status
from distributord.shell.control import bind_control_socket
from distributord.shell.daemon import Daemon, serve_daemon
from distributord.shell.live import LiveValue
from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario
from distributord.sim.server import API_VERSIONS, CommandRecord, Simulator
from tests.core.distribution.spec import Quantities, reachable_below
from tests.support import LIMIT_S, Client, config_for, connect, running_daemon, sim_wait

LIFETIME_SCALE = 0.1
"""A setpoint's lifetime runs this many times faster in the simulator (10 s → 1 s), so that
a run of a few seconds would see a standing setpoint lapse; the refresh (a third of it) still
has 0.67 s of slack on a loaded machine."""

LIFETIMES_S = (10, 15, 20)
"""``setpoints.lifetime_s`` values a reload picks from (the API accepts 10..900 s)."""

CLEAN_S = 2.5
"""How long an inverter must have gone without a fault, a failed command or a reported failure
before the model holds it to the ledger's promises (no lapse; power nobody wants released): longer
than the longest scaled lifetime (2 s), which bounds what a failure can leave standing, and than
the longest retry backoff (1 s here: ``min(1 s · 2^n, max(1 s, lifetime/3))``)."""

RELEASE_WAIT_S = 1.0
"""How long after a step power nobody wants may still stand on a clean inverter: its release goes
out in the round that freed it, and the step's replies come after that round; one backoff (1 s)
covers a release re-sent after a command was cancelled. A release that never came shows as a
wait that runs out, or as a lapse (the power expired instead)."""

NEAR_BOUND_PCT = 0.5
"""A battery this close to a SoC bound may be refused at it (a SoC race the daemon cannot see):
far more than the drift of a run at :data:`SPEED`, far less than the 2 % between an inner SoC and
its bounds."""

REFUSALS = frozenset({"OUT_OF_RANGE", "INVALID_ARGUMENT", "FAILED", "OVERRIDDEN"})
"""The simulator's verdicts that a command was not applied (refused, or accepted and then not
carried out): the daemon believes what was in force before."""

REPORT_SLACK_S = 0.5
"""How late the daemon may learn a command's answer (and so how long after the simulator's
answer plus the lifetime it may still report that setpoint, or before it reports one at all),
with a wide margin for a loaded machine."""


SPEED = 0.01
"""SoC moves at 1 % of real time: within a run it drifts by far less than the 2 % that separates
an inner SoC from its bounds, so only a battery that starts at a bound can reach one."""

TELEMETRY_HZ = 50.0
"""Fresh telemetry every 20 ms: the daemon's view of a battery lags the simulator by little."""

SEEN_LAG_S = 1.0
"""How old a state the daemon may still act on: telemetry in flight plus the sample period,
with a wide margin for a loaded CI machine."""

TIMEOUTS_S = (0.5, 1.0)
"""Request timeouts: short, so a hanging inverter costs little; long enough that a healthy
loopback command (a few ms) never runs out."""

FAILING = ("command_error", "command_hang")
"""Faults that make an inverter's commands fail."""

ID_BASE = 1000
"""Batteries are 1001.., inverters 2001.. (battery + 1000)."""

BLOCKER_HOLD_S = 0.3
"""How long a blocker's first command takes: the departing client's request must arrive, and
its client's departure be seen, while the blocker runs (within 50 ms, a loaded machine lost
that race: the request started before the daemon read the departure, and was applied, rightly)."""

WAIT_S = 10.0
"""Every wait on the simulator gives up (and fails the example) after this long."""


def _found(find: Callable[[Simulator], object], sim: Simulator) -> bool:
    return find(sim) is not None


def f32(value: float) -> float:
    """``value`` as the 32-bit float the Microgrid API carries."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def inverter_of(battery: int) -> int:
    return battery + ID_BASE


def battery_of(inverter: int) -> int:
    return inverter - ID_BASE


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


# --- fleets ---------------------------------------------------------------------------------

# Limits and SoC bounds are whole numbers, exact in float32: the telemetry carries them as
# float32, and a limit that rounded up on the wire would make the daemon's largest command one
# the simulator refuses (the scenario's fault, not the daemon's).


@st.composite
def batteries(draw: st.DrawFn, battery_id: int) -> BatterySpec:
    lower = draw(st.sampled_from([0.0, 10.0, 20.0]))
    upper = draw(st.sampled_from([80.0, 90.0, 100.0]))
    where = draw(st.sampled_from(["lower", "upper", "inside", "inside"]))
    if where == "lower":
        soc = lower
    elif where == "upper":
        soc = upper
    else:
        soc = round(draw(st.floats(lower + 2.0, upper - 2.0)), 1)
    return BatterySpec(
        id=battery_id,
        soc_pct=soc,
        soc_lower_pct=lower,
        soc_upper_pct=upper,
        capacity_wh=draw(st.sampled_from([5_000.0, 10_000.0, 20_000.0, 98_000.0])),
        power_limit_w=draw(st.sampled_from([1_000.0, 2_500.0, 5_000.0, 10_000.0])),
    )


@st.composite
def inverters(draw: st.DrawFn, battery_id: int) -> InverterSpec:
    limit = draw(st.sampled_from([1_000.0, 3_000.0, 5_000.0, 8_000.0]))
    exclusion = draw(st.sampled_from([0.0, 0.0, 0.0, 100.0, 300.0, 1_500.0]))
    return InverterSpec(
        id=inverter_of(battery_id),
        batteries=(battery_id,),
        power_limit_w=limit,
        exclusion_w=min(exclusion, limit),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = range(ID_BASE + 1, ID_BASE + 1 + draw(st.integers(2, 6)))
    return Scenario(
        batteries=tuple(draw(batteries(b)) for b in ids),
        inverters=tuple(draw(inverters(b)) for b in ids),
        speed=SPEED,
        telemetry_hz=TELEMETRY_HZ,
    )


POWERS = st.one_of(
    st.sampled_from(
        [0.0, 1e-12, -1e-10, 1e-3, -0.5, 50.0, -99.0, 150.0, -299.0, 301.0, -1_000.0, 1e6, -1e9]
    ),
    st.integers(-40_000, 40_000).map(float),
    st.floats(-40_000.0, 40_000.0, allow_nan=False),
)
"""Zero, tiny, inside and beyond exclusion zones, far beyond every bound, and anything."""

PICKS = st.frozensets(st.integers(0, 5), min_size=1, max_size=6)
"""Battery sets as indices, taken modulo the fleet's size."""


# --- the daemon on a thread -----------------------------------------------------------------


@attrs.define(eq=False)
class Taken:
    """A request the loop took, and what became of it (seen by wrapping the loop)."""

    request: Request
    results: list[Result] = attrs.field(factory=list)
    withdrawn: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)


class Host:
    """The daemon and one client in a trio run on a thread of their own."""

    def __init__(self, live: LiveValue[Config], path: Path) -> None:
        self.live = live
        self.path = path
        self.token: trio.lowlevel.TrioToken | None = None
        self.failure: BaseException | None = None
        self.leftovers: list[dict[str, Any]] = []
        self.taken: list[Taken] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-daemon", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=3 * LIMIT_S)
        if self.failure is not None:
            raise self.failure
        assert self.token is not None, "the daemon did not start"

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:  # handed to the thread that waits for us
            self.failure = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        sock = bind_control_socket(str(self.path))
        self._stop = trio.Event()
        self._taken_more = trio.Event()
        async with trio.open_nursery() as nursery:
            self.daemon: Daemon = await nursery.start(
                functools.partial(serve_daemon, self.live, sock, lifetime_scale=LIFETIME_SCALE)
            )
            with trio.fail_after(LIMIT_S):
                await self.daemon.tracker.board.wait_value(
                    lambda _: all(
                        s.status is Status.WORKING for s in self.daemon.tracker.states.values()
                    )
                )
            self._watch(self.daemon)
            stream = await trio.open_unix_socket(str(self.path))
            self.client = Client(stream)
            self.token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            self.daemon.stop()
        # The daemon drained and closed the connection: whatever it still sent is left over.
        async with stream:
            with trio.fail_after(LIMIT_S):
                while True:
                    try:
                        self.leftovers.append(await self.client.receive())
                    except trio.EndOfChannel:
                        break

    def _watch(self, daemon: Daemon) -> None:
        """Wrap the loop's ``submit`` and ``withdraw`` to see every request's fate."""
        loop = daemon.loop
        submit, withdraw = loop.submit, loop.withdraw

        def watched_submit(ask: Ask | Request, reply: Reply) -> bool:
            request = ask.request if isinstance(ask, Ask) else ask
            taken = Taken(request=request)

            def watched_reply(result: Result, timing: Timing) -> None:
                taken.results.append(result)
                taken.done.set()
                reply(result, timing)

            if not submit(ask, watched_reply):
                return False
            self.taken.append(taken)
            self._taken_more.set()
            self._taken_more = trio.Event()
            return True

        def watched_withdraw(request: Request) -> bool:
            withdrawn = withdraw(request)
            if withdrawn:
                for taken in self.taken:
                    if taken.request is request:
                        taken.withdrawn = True
                        taken.done.set()
            return withdrawn

        # The control server calls these through the loop object; the instance attributes
        # take precedence over the methods.
        setattr(loop, "submit", watched_submit)  # noqa: B010
        setattr(loop, "withdraw", watched_withdraw)  # noqa: B010

    async def wait_taken(self, count: int) -> None:
        """Wait until the loop has taken ``count`` requests in all."""
        while len(self.taken) < count:
            await self._taken_more.wait()

    def run(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``action`` in the daemon's trio run (bounded) and return what it returns."""

        async def bounded() -> Any:
            with trio.fail_after(3 * LIMIT_S):
                return await action()

        return trio.from_thread.run(bounded, trio_token=self.token)

    def stop(self) -> None:
        if self.token is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(timeout=3 * LIMIT_S)
        assert not self._thread.is_alive(), "the daemon did not stop"
        if self.failure is not None:
            raise self.failure


# --- what the test knows --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Snapshot:
    """A ``get_status`` answer: sent at ``sent``, received at ``received`` (monotonic)."""

    sent: float
    received: float
    batteries: dict[int, dict[str, Any]]

    def status(self, battery: int) -> str:
        return str(self.batteries[battery]["status"])


@attrs.frozen(kw_only=True)
class Standing:
    power_w: float
    adjust: bool
    since: float


@attrs.frozen(kw_only=True)
class Sent:
    """A set_power the test sent, and its reply."""

    params: dict[str, Any]
    sent: float
    reply: dict[str, Any]
    lifetime_s: int
    failing: frozenset[int]
    """Inverters whose commands fail when it is sent."""


class E2EMachine(RuleBasedStateMachine):
    """One simulator, one daemon, and what the test knows of both."""

    def __init__(self) -> None:
        super().__init__()
        self.host: Host | None = None
        self.sim: Simulator | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="e2e-")

    # -- start -------------------------------------------------------------------------------

    @initialize(
        scenario=scenarios(),
        api=st.sampled_from(API_VERSIONS),
        lifetime=st.sampled_from(LIFETIMES_S),
        exponent=st.sampled_from([0.0, 1.0, 2.0]),
    )
    def start(self, scenario: Scenario, api: str, lifetime: int, exponent: float) -> None:
        self.scenario = scenario
        self.api = api
        self.ids = [b.id for b in scenario.batteries]
        self.bspec = {b.id: b for b in scenario.batteries}
        self.ispec = {battery_of(i.id): i for i in scenario.inverters}
        self.faults: dict[int, Faults] = {}
        self.fault_changed: dict[int, float] = {}
        self.standing: dict[frozenset[int], Standing] = {}
        # Signs of power some request asked of a battery: this step's and the previous one's
        # (a cancelled command of the previous step may be recorded in this one).
        self.claims: dict[int, set[int]] = {b: set() for b in self.ids}
        self.claims_before: dict[int, set[int]] = {b: set() for b in self.ids}
        self.claim_sets: dict[int, list[frozenset[int]]] = {b: [] for b in self.ids}
        self.claim_sets_before: dict[int, list[frozenset[int]]] = {b: [] for b in self.ids}
        self.lifetimes: list[tuple[float, int]] = []
        # Error codes injected on each battery's inverter during this step and the previous.
        self.codes: dict[int, set[str]] = {b: set() for b in self.ids}
        self.codes_before: dict[int, set[str]] = {b: set() for b in self.ids}
        self.exponent = exponent
        self.snapshots: list[Snapshot] = []
        # Batteries whose command failed in this step (a reply said so, or the simulator did
        # not answer "ok"): the daemon may have blocked them since the last snapshot.
        self.failed_in_step: set[int] = set()
        # When a fault on each battery or its inverter began and ended (inf: still on), and
        # when a reply said a battery's command failed: what excuses a lapse or power left.
        self.fault_spans: dict[int, list[list[float]]] = {b: [] for b in self.ids}
        self.reported_failures: dict[int, list[float]] = {b: [] for b in self.ids}
        self.seen = 0
        self.lapses_seen_until = -math.inf
        self.sim = Simulator(scenario, lifetime_scale=LIFETIME_SCALE, apis=(api,))
        self.sim.__enter__()
        started = time.monotonic()
        self.bound_since: dict[tuple[int, int], float | None] = {}
        for b, spec in self.bspec.items():
            self.bound_since[b, 1] = started if spec.soc_pct >= spec.soc_upper_pct else None
            self.bound_since[b, -1] = started if spec.soc_pct <= spec.soc_lower_pct else None
        self.live = LiveValue(self._config(lifetime))
        self.lifetimes.append((started, lifetime))
        note(f"api={api} lifetime={lifetime} exponent={exponent}")
        for b in self.ids:
            note(f"battery {b}: {self.bspec[b]} inverter {self.ispec[b]}")
        self.host = Host(self.live, Path(self.tmp.name) / "control.sock")
        self.snapshot()

    def _config(self, lifetime: int) -> Config:
        assert self.sim is not None
        return config_for(
            self.sim, distribution={"exponent": self.exponent}, setpoints={"lifetime_s": lifetime}
        )

    @property
    def lifetime(self) -> int:
        return self.lifetimes[-1][1]

    def batteries(self, picks: Iterable[int]) -> list[int]:
        return sorted({self.ids[i % len(self.ids)] for i in picks})

    def failing(self) -> frozenset[int]:
        return frozenset(
            b
            for b, f in self.faults.items()
            if b in self.ispec and (f.command_error is not None or f.command_hang)
        )

    # -- rules -------------------------------------------------------------------------------

    @rule(
        picks=st.lists(PICKS, min_size=1, max_size=3),
        powers=st.lists(POWERS, min_size=3, max_size=3),
        timeout=st.sampled_from(TIMEOUTS_S),
        adjust=st.sampled_from([True, True, True, False]),
    )
    def set_power(
        self, picks: list[frozenset[int]], powers: list[float], timeout: float, adjust: bool
    ) -> None:
        assert self.host is not None
        calls = [
            {
                "power_w": power,
                "batteries": self.batteries(pick),
                "request_timeout_s": timeout,
                "adjust_power": adjust,
            }
            for pick, power in zip(picks, powers, strict=False)
        ]
        for params in calls:
            self._claim(params)
        failing = self.failing()
        host = self.host

        async def act() -> list[tuple[float, dict[str, Any]]]:
            sent = []
            for params in calls:
                sent.append((time.monotonic(), await host.client.send("set_power", params)))
            return [(at, await host.client.reply_to(rid)) for at, rid in sent]

        replies = host.run(act)
        done = [
            Sent(
                params=params,
                sent=at,
                reply=reply,
                lifetime_s=self.lifetime,
                failing=failing,
            )
            for params, (at, reply) in zip(calls, replies, strict=True)
        ]
        for index, one in enumerate(done):
            later = [o.params["batteries"] for o in done[index + 1 :]]
            self.check_reply(one, superseded_possible=one.params["batteries"] in later)

    def _claim(self, params: dict[str, Any]) -> None:
        batteries = frozenset(params["batteries"])
        for b in batteries:
            self.claims[b].add(sign(params["power_w"]))
            self.claim_sets[b].append(batteries)

    def check_reply(self, sent: Sent, *, superseded_possible: bool) -> None:
        """The reply keeps the protocol's promises; the record shows what it says it did."""
        params, reply = sent.params, sent.reply
        assert "result" in reply, f"a set_power got a protocol error: {reply}"
        result = reply["result"]
        note(f"set_power {params} -> {result}")
        power, batteries = params["power_w"], frozenset(params["batteries"])
        assert result["power_w"] == power
        assert result["batteries"] == sorted(batteries)
        outcome = result["outcome"]
        event(f"outcome: {outcome}")
        if abs(power) <= ZERO_POWER_W:
            # Release is absolute: 0 W is never refused, whatever the batteries' status (only
            # unknown ids are, and the harness asks for none).
            event(f"release: {outcome}")
            assert outcome in {"success", "partial_failure", "ignored"}, f"0 W answered {outcome}"
        match outcome:
            case "success" | "partial_failure":
                self.check_distribution(sent, result)
                self.hold(batteries, power, params["adjust_power"], sent.sent)
            case "out_of_bounds":
                self.check_out_of_bounds(power, params["adjust_power"], result["bounds"])
            case "error":
                # Refused before anything was commanded (no usable battery): nothing changes.
                assert result["message"]
            case "ignored":
                assert superseded_possible, "ignored, but no newer request for the same set"
            case _:
                raise AssertionError(f"unknown outcome {outcome!r}")

    def check_distribution(self, sent: Sent, result: dict[str, Any]) -> None:
        power = sent.params["power_w"]
        requested = frozenset(sent.params["batteries"])
        distribution = {int(b): float(w) for b, w in result["distribution"].items()}
        succeeded = frozenset(result["succeeded_batteries"])
        failed = frozenset(result.get("failed_batteries", []))
        self.failed_in_step |= failed
        assert set(distribution) <= requested
        assert succeeded | failed == set(distribution), "every commanded battery is accounted"
        assert not succeeded & failed
        assert (result["outcome"] == "partial_failure") == bool(failed)
        # Signs: every setpoint 0 or the request's; the excess likewise, and no larger.
        excess = result["excess_power_w"]
        for b, w in distribution.items():
            assert w == 0.0 or sign(w) == sign(power), f"battery {b} got {w} W for {power} W"
        assert excess == 0.0 or sign(excess) == sign(power)
        assert abs(excess) <= abs(power)
        # Never over, exactly (in the daemon's doubles; the wire's float32 is checked below).
        total = sum((Fraction(w) for w in distribution.values()), Fraction(0))
        assert abs(total) <= abs(Fraction(power)), f"commanded {float(total)} W for {power} W"
        # Every shortfall is reported: what succeeded, failed and was left adds up.
        failed_w = result.get("failed_power_w", 0.0)
        tolerance = 1e-6 * max(1.0, abs(power))
        assert math.isclose(result["succeeded_power_w"], sum(distribution[b] for b in succeeded))
        assert abs(failed_w - sum(distribution[b] for b in failed)) <= tolerance
        # What unused batteries (blocked, not working) were measured at is taken off the
        # request first (spec/distribution.md), towards zero and never past it.
        compensated = result.get("compensated_power_w", 0.0)
        assert compensated == 0.0 or sign(compensated) == sign(power)
        assert abs(compensated) <= abs(power)
        target = power - compensated
        assert abs(result["succeeded_power_w"] + failed_w + excess - target) <= tolerance, (
            "succeeded + failed + excess != requested less what unused batteries carry"
        )
        if abs(power) <= ZERO_POWER_W:
            # A release: 0 W to each battery; a non-zero power this small is reported as not
            # placed, not as 0 (spec/distribution.md).
            assert all(w == 0.0 for w in distribution.values())
            assert excess == power
        # The failed batteries are exactly those whose inverter was made to fail, or that the
        # simulator refused at a SoC bound the daemon had not seen reached yet, or whose command
        # ran out of time on a loaded machine.
        # A 0 W share that stands from before is not sent again (spec/microgrid-api.md): it
        # fails only if it was sent.
        expected = {
            b for b in distribution if b in sent.failing and (distribution[b] != 0.0 or b in failed)
        }
        assert expected <= failed, f"failures not reported: {sorted(expected - failed)}"
        for b in failed:
            self.reported_failures[b].append(sent.sent)
        self.check_commands_recorded(sent, distribution, succeeded)
        commands_s = result["timing"]["commands_ms"] / 1000.0
        ran_out = commands_s >= 0.99 * sent.params["request_timeout_s"]
        for b in sorted(failed - expected):
            if self.near_bound(b, sign(distribution[b])):
                event("an unforced failure: refused at a SoC bound just reached")
            elif ran_out:
                event("an unforced failure: ran out of time")
            else:
                # Found so: a command cancelled with its batch by another request's
                # (test_a_request_for_a_freed_battery_does_not_fail_the_request_that_freed_it).
                raise AssertionError(
                    f"battery {b} failed after {commands_s:.3f} s of {sent.params}, with no "
                    "fault, no SoC bound and before the deadline"
                )
        self.check_no_waste(target, distribution, excess, result.get("reasons", {}))
        self.check_weights(power, distribution, result.get("reasons", {}))

    def check_commands_recorded(
        self, sent: Sent, distribution: dict[int, float], succeeded: frozenset[int]
    ) -> None:
        """Every command that succeeded was applied, as float32, with the lifetime in force.

        A failed command need not have reached the simulator (one cancelled while it waited
        for its turn in the round never did). The wire's values add up to no more than the
        request, to float32's rounding.
        """
        assert self.sim is not None

        def record_of(b: int) -> Callable[[Simulator], CommandRecord | None]:
            def find(sim: Simulator) -> CommandRecord | None:
                wanted = f32(distribution[b])
                # Recorded as they end: one received before ``sent`` (a hanging command the
                # daemon cancelled since) may come after the one sought.
                for r in reversed(sim.commands()):
                    if r.finished_at < sent.sent:
                        break
                    if (
                        r.component_id == inverter_of(b)
                        and r.power_w == wanted
                        and r.outcome == "ok"
                        and r.received_at >= sent.sent
                    ):
                        return r
                return None

            return find

        for b in sorted(succeeded):
            find = record_of(b)
            if distribution[b] == 0.0 and find(self.sim) is None:
                # A 0 W share that stands from before is not sent again: what the inverter
                # last applied before this request was 0 W, or had run out by the reply.
                self.check_zero_stands(b, sent)
                continue
            assert self.sim.wait_for(functools.partial(_found, find), WAIT_S), (
                f"the simulator never applied battery {b}'s {distribution[b]} W"
            )
            record = find(self.sim)
            assert record is not None
            assert record.lifetime_s == sent.lifetime_s, "not the lifetime in force"
            assert record.api == self.api
        wire = math.fsum(f32(w) for w in distribution.values())
        power = sent.params["power_w"]
        # Sent as float32 rounded toward zero (planning.as_sent): never over on the wire either
        # (test_the_commands_on_the_wire_never_add_up_to_more_than_the_request).
        assert abs(wire) <= abs(power)

    def check_zero_stands(self, b: int, sent: Sent) -> None:
        """``b`` got a 0 W share that was not sent: nothing it applied before may still hold."""
        assert self.sim is not None
        applied = [
            r
            for r in self.sim.commands()
            if r.component_id == inverter_of(b) and r.outcome == "ok" and r.received_at < sent.sent
        ]
        if not applied:
            return
        last = max(applied, key=lambda r: r.received_at)
        runs_out = last.finished_at + (last.lifetime_s or 60) * LIFETIME_SCALE
        assert last.power_w == 0.0 or runs_out <= self.sim.now(), (
            f"battery {b}'s 0 W share was not sent while {last.power_w} W may hold"
        )

    def near_bound(self, b: int, direction: int) -> bool:
        """Whether battery ``b`` was at its SoC bound in ``direction`` lately (a legit race).

        Also when it is within :data:`NEAR_BOUND_PCT` of it: a battery that started at a bound
        and took a little power the other way has left it, and may be back since.
        """
        assert self.sim is not None
        if direction == 0:
            return False  # 0 W is within every bound
        spec = self.bspec[b]
        soc = self.sim.soc(b)
        bound = spec.soc_upper_pct if direction > 0 else spec.soc_lower_pct
        near = abs(soc - bound) <= NEAR_BOUND_PCT
        return near or self.bound_since[b, direction] is not None

    def check_out_of_bounds(self, power: float, adjust: bool, bounds: dict[str, float]) -> None:
        low, excl_low = bounds["inclusion_lower_w"], bounds["exclusion_lower_w"]
        excl_high, high = bounds["exclusion_upper_w"], bounds["inclusion_upper_w"]
        assert low <= excl_low <= 0.0 <= excl_high <= high
        assert abs(power) > ZERO_POWER_W, "0 W is always accepted"
        inside_exclusion = excl_low < power < excl_high
        if adjust:
            assert inside_exclusion, f"{power} W refused although adjust_power is on: {bounds}"
        else:
            allowed = low <= power <= excl_low or excl_high <= power <= high
            assert not allowed, f"{power} W refused although within {bounds}"

    def check_no_waste(
        self, power: float, distribution: dict[int, float], excess: float, reasons: dict[str, str]
    ) -> None:
        """The shortfall is what the commanded pairs could not reach, exactly (spec oracle)."""
        if "search_budget_ended" in reasons.values() or abs(power) <= ZERO_POWER_W:
            return
        direction = sign(power)
        items = []
        for b in distribution:
            soc_spec, inverter = self.bspec[b], self.ispec[b]
            state = self.host_soc(b)
            if state is None:
                return  # at a bound the daemon may see either side of: no exact oracle
            available = state[0] if direction > 0 else state[1]
            cap = min(soc_spec.power_limit_w, inverter.power_limit_w) if available > 0 else 0.0
            items.append(
                Quantities(
                    available=available,
                    cap=cap,
                    minimum=inverter.exclusion_w,
                    capacity=soc_spec.capacity_wh,
                )
            )
        reachable = reachable_below(abs(power), items)
        delivered = abs(power) - abs(excess)
        assert abs(delivered - reachable) <= 1e-6 * max(1.0, abs(power)), (
            f"delivered {delivered} W of {abs(power)} W; {reachable} W was reachable"
        )

    def host_soc(self, b: int) -> tuple[float, float] | None:
        """``(charge headroom, discharge headroom)`` as the daemon must see them, or None.

        None when the battery has left a bound it started at (the daemon's view may lag).
        """
        assert self.sim is not None
        spec = self.bspec[b]
        soc = self.sim.soc(b)
        at_edge = spec.soc_pct in (spec.soc_lower_pct, spec.soc_upper_pct)
        if at_edge and soc != spec.soc_pct:
            return None
        # A battery that started at a bound and took any power has left it, if only for a
        # moment (0.001 W lifts it off; a discharge then brings it back): the daemon may have
        # read either side.
        inverter = self.ispec[b].id
        if at_edge and any(
            r.component_id == inverter and r.power_w != 0.0 and r.outcome == "ok"
            for r in self.sim.commands()
        ):
            return None
        return max(0.0, spec.soc_upper_pct - soc), max(0.0, soc - spec.soc_lower_pct)

    def check_weights(
        self, power: float, distribution: dict[int, float], reasons: dict[str, str]
    ) -> None:
        """Pairs placed by weight share one ratio ``x / (capacity · a^e)``.

        With the exponent in force (after a reload too), on the SoC the daemon last read.
        """
        assert self.host is not None
        fleet = self.host.daemon.tracker.fleet
        ratios = []
        for b, w in distribution.items():
            if reasons.get(str(b)) != "proportional" or w == 0.0:
                continue
            snap = fleet.batteries[b]
            a = (
                snap.soc_upper_pct - snap.soc_pct
                if power > 0
                else snap.soc_pct - snap.soc_lower_pct
            )
            if not a >= 1.0:
                # At or next to a bound (a drift the tolerance does not cover), or a NaN SoC
                # arrived since the daemon planned on the last valid one: no exact oracle.
                return
            ratios.append(abs(w) / (self.bspec[b].capacity_wh * a**self.exponent))
        if len(ratios) > 1:
            assert max(ratios) <= min(ratios) * (1 + 1e-3), f"not proportional: {ratios}"

    def hold(self, batteries: frozenset[int], power: float, adjust: bool, sent: float) -> None:
        """The daemon's rule for standing setpoints, after a request sent at ``sent`` applied."""
        for other in [s for s in self.standing if s != batteries and s & batteries]:
            del self.standing[other]
        if abs(power) <= ZERO_POWER_W:
            self.standing.pop(batteries, None)
        else:
            self.standing[batteries] = Standing(power_w=power, adjust=adjust, since=sent)

    @rule(
        pick=st.integers(0, 5),
        on=st.sampled_from(["battery", "inverter"]),
        kind=st.sampled_from(
            ["unavailable", "out_of_range", "hang", "nan_soc", "nan_power", "error_state"]
        ),
    )
    def inject_fault(self, pick: int, on: str, kind: str) -> None:
        assert self.sim is not None
        b = self.ids[pick % len(self.ids)]
        faults: dict[str, Any]
        match kind:
            case "unavailable":
                faults, on = {"command_error": "UNAVAILABLE"}, "inverter"
            case "out_of_range":
                faults, on = {"command_error": "OUT_OF_RANGE"}, "inverter"
            case "hang":
                faults, on = {"command_hang": True}, "inverter"
            case "nan_soc":
                faults, on = {"nan_metrics": frozenset({"soc"})}, "battery"
            case "nan_power":
                faults = {"nan_metrics": frozenset({"power"})}
            case _:
                faults = {"error_state": True}
        component = b if on == "battery" else inverter_of(b)
        # Faults are kept under the battery's id for its inverter, its negative for itself.
        key = b if on == "inverter" else -b
        now = time.monotonic()
        if b not in self.faults and -b not in self.faults:
            self.fault_spans[b].append([now, math.inf])
        self.faults[key] = attrs.evolve(self.faults.get(key, Faults()), **faults)
        self.fault_changed[b] = now
        if "command_error" in faults:
            self.codes[b].add(faults["command_error"])
        note(f"fault on {component}: {faults}")
        self.sim.set_fault(component, **faults)

    @precondition(lambda self: bool(getattr(self, "faults", None)))
    @rule(pick=st.integers(0, 11))
    def heal(self, pick: int) -> None:
        assert self.sim is not None
        keys = sorted(self.faults)
        key = keys[pick % len(keys)]
        del self.faults[key]
        b = abs(key)
        now = time.monotonic()
        self.fault_changed[b] = now
        if b not in self.faults and -b not in self.faults:
            self.fault_spans[b][-1][1] = now
        component = inverter_of(b) if key > 0 else b
        note(f"healed {component}")
        self.sim.clear_faults(component)

    @rule(lifetime=st.sampled_from(LIFETIMES_S), exponent=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    def reload(self, lifetime: int, exponent: float) -> None:
        assert self.host is not None
        self.exponent = exponent
        config = self._config(lifetime)

        async def act() -> None:
            self.live.value = config

        self.host.run(act)
        self.lifetimes.append((time.monotonic(), lifetime))
        note(f"reload: lifetime {lifetime} s, exponent {exponent}")

    @rule(
        pick=PICKS,
        power=POWERS,
        busy=st.booleans(),
        timeout=st.sampled_from(TIMEOUTS_S),
    )
    def depart(self, pick: frozenset[int], power: float, busy: bool, timeout: float) -> None:
        """A client sends set_power and closes its socket before the reply.

        With ``busy``, an overlapping request of ours holds the batteries meanwhile (its first
        inverter answers slowly), so the departing request has to wait: per the protocol it
        must then not be applied.
        """
        assert self.host is not None
        assert self.sim is not None
        host, sim = self.host, self.sim
        batteries = self.batteries(pick)
        params = {"power_w": power, "batteries": batteries, "request_timeout_s": timeout}
        self._claim(params)
        blocker: dict[str, Any] | None = None

        async def held() -> dict[int, float]:
            return dict(host.daemon.loop.statistics().setpoints)

        # The blocker (0 W) commands only batteries that hold a setpoint other than 0 W: one of
        # those answers slowly (a battery at 0 W already would be sent nothing to hold it up).
        holding = host.run(held)
        slowed = [b for b in batteries if holding.get(b, 0.0) != 0.0 and b not in self.failing()]
        slow = inverter_of(slowed[0] if slowed else batteries[0])
        if busy and slowed:
            blocker = {
                "power_w": 0.0,
                "batteries": batteries,
                "request_timeout_s": 1.0,
                "adjust_power": True,
            }
            self._claim(blocker)
            sim.set_fault(slow, command_latency_s=BLOCKER_HOLD_S)
        failing = self.failing()
        taken_before = len(host.taken)

        async def act() -> tuple[float, dict[str, Any] | None, bool]:
            blocker_id = None
            holding = False
            at = time.monotonic()
            async with trio.open_nursery() as nursery:
                if blocker is not None:
                    blocker_id = await host.client.send("set_power", blocker)
                    answered = threading.Event()

                    async def mark_answered() -> None:
                        await host.wait_taken(taken_before + 1)
                        await host.taken[taken_before].done.wait()
                        answered.set()

                    nursery.start_soon(mark_answered)
                    # The blocker holds the batteries once its slow command is at the simulator;
                    # it may also have been answered without a command (no usable battery).
                    await trio.to_thread.run_sync(
                        sim.wait_for,
                        lambda s: s.pending_commands(slow) > 0 or answered.is_set(),
                        WAIT_S,
                    )
                    holding = not answered.is_set()
                stream = await trio.open_unix_socket(str(host.path))
                async with stream:
                    await Client(stream).send("set_power", params)
                reply = None if blocker_id is None else await host.client.reply_to(blocker_id)
                # Wait for the departed request's fate: answered, or withdrawn.
                await host.wait_taken(taken_before + 1 + (blocker is not None))
                for taken in host.taken[taken_before:]:
                    await taken.done.wait()
            return at, reply, holding

        at, reply, holding = host.run(act)
        event(f"blocker holding: {holding}")
        if blocker is not None:
            sim.set_fault(slow, command_latency_s=0.0)
            assert reply is not None
            self.check_reply(
                Sent(
                    params=blocker, sent=at, reply=reply, lifetime_s=self.lifetime, failing=failing
                ),
                superseded_possible=False,
            )
        departed = host.taken[taken_before + (blocker is not None) :]
        for taken in departed:
            assert len(taken.results) + taken.withdrawn == 1, "fate not exactly once"
            event(f"departed, busy={blocker is not None}: withdrawn={taken.withdrawn}")
            if taken.withdrawn:
                continue
            result = taken.results[0]
            applied = type(result).__name__ in {"Success", "PartialFailure"}
            for b in getattr(result, "failed_batteries", ()):
                self.reported_failures[b].append(at)
            # Fixed (test_a_request_whose_client_left_while_it_waited_is_not_applied): a request
            # whose batteries were busy when its client left is withdrawn, never applied.
            assert not (applied and holding), "a departed client's request applied"
            if applied:
                self.hold(frozenset(batteries), power, True, at)

    @rule()
    def let_time_pass(self) -> None:
        """Wait until every inverter of a steady standing set that holds power was re-sent it.

        A third of a lifetime at most: what a refresh comes too late for shows as a lapse, which
        :meth:`check_no_lapse` judges on every inverter after every step. One that holds 0 W
        needs nothing (a 0 W that landed is not refreshed).
        """
        assert self.sim is not None
        steady = [b for s in self.steady_sets() for b in s]
        if not steady:
            return
        start = len(self.sim.commands())
        inverters = {inverter_of(b) for b in steady}

        def refreshed(sim: Simulator) -> bool:
            new = sim.commands()[start:]
            return all(
                any(r.component_id == i and r.outcome == "ok" for r in new)
                or sim.setpoint(i) == 0.0
                for i in inverters
            )

        within = 3 * self.lifetime * LIFETIME_SCALE + 1.0
        began = time.monotonic()
        waited = self.sim.wait_for(refreshed, within)
        note(f"waited {time.monotonic() - began:.3f} s for refreshes of {sorted(inverters)}")
        assert waited, "standing setpoints not re-sent in time"
        event("waited for refreshes")

    # -- after every step --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        assert self.host is not None
        host = self.host

        async def act() -> tuple[float, dict[str, Any], float]:
            sent = time.monotonic()
            result = await host.client.result("get_status")
            return sent, result, time.monotonic()

        sent, result, received = host.run(act)
        snapshot = Snapshot(
            sent=sent,
            received=received,
            batteries={entry["id"]: entry for entry in result["batteries"]},
        )
        self.snapshots.append(snapshot)
        del self.snapshots[:-50]
        return snapshot

    def clean_since(self, b: int, since: float) -> bool:
        """No fault on battery ``b`` or its inverter now, and none changed after ``since``."""
        return (
            b not in self.faults and -b not in self.faults and self.fault_changed.get(b, 0) < since
        )

    def steady_sets(self) -> list[frozenset[int]]:
        """Standing sets (adjust_power on) whose batteries all worked, fault-free, since held."""
        out = []
        for batteries, standing in self.standing.items():
            if not standing.adjust:
                continue
            snaps = [s for s in self.snapshots if s.sent >= standing.since]
            if not snaps:
                continue
            if all(
                self.clean_since(b, standing.since)
                and all(s.status(b) == "working" for s in snaps)
                and b in self.ispec
                for b in batteries
            ):
                out.append(batteries)
        return out

    @invariant()
    def records_hold(self) -> None:
        if self.host is None or self.sim is None:
            return
        previous = self.snapshots[-1] if self.snapshots else None
        records = self.sim.commands()
        new = records[self.seen :]
        self.seen = len(records)
        # When a battery was moved off a bound (an accepted command the other way).
        self.left_bound: dict[tuple[int, int], float] = {}
        for r in new:
            if r.outcome == "ok" and r.power_w != 0.0:
                key = (battery_of(r.component_id), -sign(r.power_w))
                self.left_bound[key] = min(self.left_bound.get(key, math.inf), r.received_at)
        self.failed_in_step |= {battery_of(r.component_id) for r in new if r.outcome != "ok"}
        for record in new:
            self.check_record(record, previous)
        self.failed_in_step = set()
        self.update_bounds(new)
        self.check_reported(self.snapshot())
        self.check_released()
        self.check_no_lapse()
        self.check_standing_model()
        self.claims_before, self.claims = self.claims, {b: set() for b in self.ids}
        self.claim_sets_before, self.claim_sets = self.claim_sets, {b: [] for b in self.ids}
        self.codes_before = self.codes
        self.codes = {
            b: ({f.command_error} if (f := self.faults.get(b)) and f.command_error else set())
            for b in self.ids
        }
        for batteries, standing in self.standing.items():
            for b in batteries:
                self.claims[b].add(sign(standing.power_w))
                self.claim_sets[b].append(batteries)

    def check_record(self, record: CommandRecord, snapshot: Snapshot | None) -> None:
        b = battery_of(record.component_id)
        assert b in self.bspec, f"a command to {record.component_id}, not a battery's inverter"
        bspec, ispec = self.bspec[b], self.ispec[b]
        p = record.power_w
        what = f"{p} W to inverter {record.component_id} ({record.outcome})"
        assert record.api == self.api
        assert math.isfinite(p), what
        # The lifetime in force when it was sent (around a reload, either).
        allowed = self.lifetimes_between(record.received_at - 1.0, record.received_at + 1.0)
        assert record.lifetime_s in allowed, f"{what}: lifetime {record.lifetime_s} s"
        if p == 0.0:
            return
        # Bounds as the scenario defines them.
        direction = sign(p)
        assert abs(p) <= min(bspec.power_limit_w, ispec.power_limit_w), f"{what}: over the limit"
        assert abs(p) >= ispec.exclusion_w, f"{what}: inside the exclusion zone"
        since = self.bound_since[b, direction]
        left = self.left_bound.get((b, direction), math.inf)
        assert (
            since is None or record.received_at < since + SEEN_LAG_S or left < record.received_at
        ), f"{what}: the battery has been at its SoC bound since {since}"
        # A sign some request for this battery asked for.
        assert direction in self.claims[b] | self.claims_before[b], (
            f"{what}: no request asked battery {b} for that sign"
        )
        # The simulator accepted it unless told to refuse, or a SoC bound was just reached.
        if record.outcome not in {"ok", "cancelled"}:
            injected = record.outcome in self.codes[b] | self.codes_before[b]
            assert injected or self.near_bound(b, direction), f"{what}: refused by the simulator"
        if snapshot is None or record.received_at < snapshot.received:
            return
        # Blocked or broken batteries take no power (unless their set had nothing better).
        entry = snapshot.batteries[b]
        if entry["status"] == "not_working":
            broken_fault = self.faults.get(-b)
            stays_broken = (
                broken_fault is not None
                and (broken_fault.error_state or "soc" in broken_fault.nan_metrics)
                and self.fault_changed.get(b, 0) < snapshot.sent
            )
            assert not stays_broken, f"{what}: battery {b} is not working"
        blocked_until = entry.get("blocked_until_s")
        if (
            entry["status"] == "uncertain"
            and blocked_until is not None
            and record.received_at < snapshot.sent + blocked_until
        ):
            if self.unblocked(b, snapshot.sent, record.received_at):
                event("a command after a success ended a blocking window")
                return
            sets = self.claim_sets[b] + self.claim_sets_before[b]
            event("a command inside a blocking window")
            assert not all(self.has_working_other(s, b, snapshot) for s in sets), (
                f"{what}: battery {b} is blocked and its set had a working battery"
            )

    def unblocked(self, b: int, start: float, end: float) -> bool:
        """Whether a command that landed between ``start`` and ``end`` unblocked battery ``b``.

        A success ends a blocking window; an error (not a refusal) opens one again. A call
        that was cancelled may or may not have (a deadline blocks, a newer command does not):
        it is taken not to. A release reaches a blocked battery too (0 W goes wherever power
        may stand), so a window often ends early.
        """
        assert self.sim is not None
        inverter = inverter_of(b)
        unblocked = False
        for r in self.sim.commands():
            if r.component_id != inverter or not start <= r.finished_at < end:
                continue
            if r.outcome == "ok":
                unblocked = True
            elif r.outcome not in REFUSALS | {"cancelled"}:
                unblocked = False
        return unblocked

    def lifetimes_between(self, start: float, end: float) -> set[int]:
        """The lifetimes in force at some time between ``start`` and ``end``."""
        before = [L for t, L in self.lifetimes if t <= start]
        return {*before[-1:], *(L for t, L in self.lifetimes if start < t <= end)}

    def has_working_other(self, batteries: frozenset[int], b: int, snapshot: Snapshot) -> bool:
        """Whether another battery of the set worked throughout (so ``b`` was not needed).

        Not one whose command failed since the snapshot: the daemon may have blocked it too
        (a timeout on a loaded machine fails a healthy command), and then both are uncertain.
        """
        return any(
            c != b
            and snapshot.status(c) == "working"
            and self.clean_since(c, snapshot.sent)
            and c not in self.failed_in_step
            for c in batteries
        )

    def troubled(self, b: int, start: float, end: float) -> bool:
        """Whether something between ``start`` and ``end`` excuses power lost or left on ``b``.

        A fault on the battery or its inverter, a command the simulator did not apply, or a reply
        that said the battery's command failed (a healthy command can run out of time on a loaded
        machine, and its outcome is then unknown to the daemon).
        """
        assert self.sim is not None
        if any(a <= end and z >= start for a, z in self.fault_spans[b]):
            return True
        if any(start - max(TIMEOUTS_S) <= t <= end for t in self.reported_failures[b]):
            return True
        inverter = inverter_of(b)
        return any(
            r.component_id == inverter
            and r.outcome != "ok"
            and r.received_at <= end
            and r.finished_at >= start
            for r in self.sim.commands()
        )

    def check_no_lapse(self) -> None:
        """No setpoint lapses while the daemon lives, on an inverter that had no trouble.

        Judged on the simulator's own record (an expiry of a non-zero setpoint), for every
        inverter: power that is wanted is re-sent a third into the lifetime each command was
        sent with, and power nobody wants is released with a 0 W command, never left to expire.
        """
        assert self.sim is not None
        record = self.sim.record()
        for lapse in record.lapses(since=self.lapses_seen_until):
            b = battery_of(lapse.inverter_id)
            if self.troubled(b, lapse.at - CLEAN_S, lapse.at):
                event("a lapse after a fault or a failure")
                continue
            log = record.log(lapse.inverter_id)
            recent = [e for e in log.events if e.at >= lapse.at - CLEAN_S]
            raise AssertionError(
                f"battery {b}'s {lapse.power_w} W lapsed at {lapse.at} with no fault or "
                f"failure since {lapse.at - CLEAN_S}: {recent}"
            )
        self.lapses_seen_until = record.time

    def check_released(self) -> None:
        """Power nobody wants does not stand (release is absolute; freed batteries get 0 W).

        A battery in no standing set is wanted by no one: a 0 W request released it, or a
        request for an overlapping set freed it (its 0 W went out in that request's round), or
        it was never commanded. Unless it had trouble lately, its inverter holds 0 W.
        """
        assert self.sim is not None
        wanted = frozenset().union(*self.standing)
        now = time.monotonic()
        unwanted = [
            inverter_of(b)
            for b in self.ids
            if b not in wanted and not self.troubled(b, now - CLEAN_S, now)
        ]

        def released(sim: Simulator) -> bool:
            return all(sim.setpoint(i) == 0.0 for i in unwanted)

        if not self.sim.wait_for(released, RELEASE_WAIT_S):
            held = {i: self.sim.setpoint(i) for i in unwanted}
            raise AssertionError(f"power nobody wants still stands: {held}")
        if unwanted:
            event("unwanted power released")

    def check_reported(self, snapshot: Snapshot) -> None:
        """``get_status`` reports what each inverter may hold, not the last success (finding 9).

        A setpoint is reported only while a command to that inverter may still be in force, not
        for ever after the last success (:meth:`check_believable`). And an inverter that held
        the same non-zero power throughout the answer's window, and :data:`REPORT_SLACK_S`
        before (the daemon learns of a command a little after it lands), has one.
        """
        assert self.sim is not None
        for b, entry in snapshot.batteries.items():
            if "setpoint_w" in entry:
                self.check_believable(b, entry["setpoint_w"], snapshot)
        start = snapshot.sent - REPORT_SLACK_S
        if self.lifetime_lowered_since(start - CLEAN_S):
            return  # a newer command may be believed to end before an older one it replaced
        record = self.sim.record()
        for b, entry in snapshot.batteries.items():
            inverter = inverter_of(b)
            if record.log(inverter).start > start:
                continue
            steps = record.timeline([inverter], start=start, end=snapshot.received)
            if len(steps) == 1 and steps[0][1] != 0.0:
                assert "setpoint_w" in entry, (
                    f"battery {b} holds {steps[0][1]} W, get_status reports no setpoint: {entry}"
                )

    def check_believable(self, b: int, reported: float, snapshot: Snapshot) -> None:
        """A setpoint reported for ``b`` is a command to its inverter that may still be in force.

        The power of a command that reached the inverter within a lifetime before the answer
        (applied, or of an outcome the daemon could not know); or, when the newest command that
        reached it was refused, or one was on its way then, possibly a command the daemon
        cancelled before the simulator received it (a newer decision superseded it): that one
        counts as possibly applied and leaves no record.
        """
        assert self.sim is not None
        inverter = inverter_of(b)

        def recent(sim: Simulator) -> list[CommandRecord]:
            return [
                r
                for r in sim.commands()
                if r.component_id == inverter
                and r.received_at <= snapshot.received
                and r.finished_at + (r.lifetime_s or 60) * LIFETIME_SCALE + REPORT_SLACK_S
                >= snapshot.sent
            ]

        def believable(sim: Simulator) -> bool:
            return any(r.power_w == reported for r in recent(sim))

        # A call the daemon cancelled is recorded when the simulator sees it end: wait a little.
        if self.sim.wait_for(believable, REPORT_SLACK_S):
            return
        mine = [r for r in self.sim.commands() if r.component_id == inverter]
        refused = bool(mine) and mine[-1].outcome in REFUSALS
        under_way = self.sim.pending_commands(inverter) > 0 or any(
            r.received_at >= snapshot.sent - REPORT_SLACK_S for r in mine
        )
        assert refused or under_way, (
            f"get_status reports {reported} W for battery {b}, not a command its inverter may "
            f"hold: {mine[-5:]}"
        )
        event("a reported setpoint the simulator never received (cancelled in flight)")

    def lifetime_lowered_since(self, since: float) -> bool:
        """Whether a reload after ``since`` made the lifetime shorter."""
        return any(
            t > since and new < old
            for (_, old), (t, new) in zip(self.lifetimes, self.lifetimes[1:], strict=False)
        )

    def check_standing_model(self) -> None:
        assert self.host is not None
        host = self.host

        async def act() -> dict[frozenset[int], float]:
            return {s: r.power_w for s, r in host.daemon.loop.standing().items()}

        daemon_view = host.run(act)
        mine = {s: standing.power_w for s, standing in self.standing.items()}
        assert daemon_view == mine, f"standing setpoints: daemon {daemon_view}, test {mine}"

    def update_bounds(self, new: list[CommandRecord]) -> None:
        """Track since when each battery has certainly sat at a SoC bound."""
        assert self.sim is not None
        now = time.monotonic()
        moved = {
            (battery_of(r.component_id), -sign(r.power_w))
            for r in new
            if r.outcome == "ok" and r.power_w != 0.0
        }
        for b, spec in self.bspec.items():
            soc = self.sim.soc(b)
            for direction, at in ((1, soc >= spec.soc_upper_pct), (-1, soc <= spec.soc_lower_pct)):
                if not at:
                    self.bound_since[b, direction] = None
                elif (b, direction) in moved or self.bound_since[b, direction] is None:
                    # It may have left and come back within the step: from now on, for sure.
                    self.bound_since[b, direction] = now

    # -- the end ---------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.host is not None:
                host, self.host = self.host, None
                host.stop()
                for taken in host.taken:
                    answers = len(taken.results) + taken.withdrawn
                    assert answers == 1, f"{taken.request} answered {answers} times"
                replies = [m for m in host.leftovers if "id" in m]
                assert not replies, f"replies nobody asked for (twice?): {replies}"
        finally:
            if self.sim is not None:
                self.sim.__exit__(None, None, None)
            self.tmp.cleanup()


SOAK = bool(os.environ.get("DISTRIBUTORD_SOAK"))

E2EMachine.TestCase.settings = hypothesis.settings(
    # 500 steps in the default run, 10 to 40 s: each example starts a simulator and a daemon
    # (~0.1 s) and a step costs a few ms, or a request timeout when an inverter hangs.
    max_examples=200 if SOAK else 25,
    stateful_step_count=40 if SOAK else 20,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
# In the default run (CI's derandomized profile included). It was kept out for a while: run
# after run on a loaded machine it found races in the harness's own model (a blocker that
# answered before it held anything, a battery with nothing to lapse, a NaN SoC read after
# planning, a set's other battery blocked since the last snapshot), each fixed here. Since
# the last fix, CI's profile (9 times, 7 beside two or three CPU hogs) and 210 random examples
# passed.
TestE2E = E2EMachine.TestCase


@pytest.mark.slow
class TestE2ESoak(E2EMachine.TestCase):  # type: ignore[misc,valid-type]
    """The soak profile: a thousand examples of fifty steps (about an hour)."""

    settings = hypothesis.settings(
        max_examples=1000,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


# --- what the harness found (all fixed) --------------------------------------------------------

DEPARTURE_TRIALS = 16
"""Each trial shows the race below with probability about 1/2 (trio's scheduling order), so
sixteen pass by chance once in 65,000 runs."""


async def test_a_request_whose_client_left_while_it_waited_is_not_applied(
    tmp_path: Path,
) -> None:
    # Found by E2EMachine.depart(busy=True); a reproducer:
    #   state.start(scenario=<any fleet>, api=<any>, lifetime=10, exponent=1.0)
    #   state.depart(pick=frozenset({0}), power=1000.0, busy=True, timeout=1.0)
    # -> the departed request's Success reaches the loop's reply (and the simulator).
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0),),
        inverters=(InverterSpec(id=2001, batteries=(1001,)),),
        telemetry_hz=TELEMETRY_HZ,
    )
    with Simulator(scenario) as sim:
        async with (
            running_daemon(sim, tmp_path / "c.sock"),
            connect(tmp_path / "c.sock") as client,
        ):
            applied = []
            for trial in range(DEPARTURE_TRIALS):
                sim.set_fault(2001, command_latency_s=0.05)  # the running request holds 1001
                running = await client.send("set_power", {"power_w": 0.0, "batteries": [1001]})
                await sim_wait(sim, lambda s: s.pending_commands(2001) > 0)
                power = 1000.0 + trial
                async with connect(tmp_path / "c.sock") as leaving:
                    await leaving.send("set_power", {"power_w": power, "batteries": [1001]})
                await client.reply_to(running)
                sim.clear_faults(2001)
                # Anything still queued for 1001 runs before this; then look.
                await client.result("set_power", {"power_w": 0.0, "batteries": [1001]})
                applied += [r.power_w for r in sim.commands() if r.power_w == power]
    assert applied == [], f"applied for clients that had left: {applied}"


async def test_the_commands_on_the_wire_never_add_up_to_more_than_the_request(
    tmp_path: Path,
) -> None:
    # Found by E2EMachine.check_commands_recorded (without its float32 slack); a reproducer:
    #   state.start(scenario=<3 equal batteries>, api=<any>, lifetime=10, exponent=1.0)
    #   state.set_power(picks=[frozenset({0, 1, 2})], powers=[1000.0, 0.0, 0.0], ...)
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=1001 + k, soc_pct=50.0) for k in range(3)),
        inverters=tuple(InverterSpec(id=2001 + k, batteries=(1001 + k,)) for k in range(3)),
        telemetry_hz=TELEMETRY_HZ,
    )
    with Simulator(scenario) as sim:
        async with (
            running_daemon(sim, tmp_path / "c.sock"),
            connect(tmp_path / "c.sock") as client,
        ):
            result = await client.result(
                "set_power", {"power_w": 1000.0, "batteries": [1001, 1002, 1003]}
            )
    assert result["outcome"] == "success"
    assert sum(result["distribution"].values()) <= 1000.0  # in the daemon: never over
    received = [r.power_w for r in sim.commands() if r.outcome == "ok"]
    assert len(received) == 3
    assert sum(received) <= 1000.0, f"the microgrid received {received}: {sum(received)} W"


async def test_a_request_for_a_freed_battery_does_not_fail_the_request_that_freed_it(
    tmp_path: Path,
) -> None:
    # Found by E2EMachine.set_power (pipelined requests) once the setpoint ledger came; a
    # reproducer: a standing setpoint for [1001, 1002]; then [1001] at -200 W and [1002] at
    # +300 W, sent together. The first ends the standing setpoint and frees 1002: its 0 W goes
    # out in one batch with 1001's -200 W. The second sends 1002 +300 W, which cancels that
    # whole batch; 1001's command was re-sent and applied, but the first request waited on the
    # cancelled one and answered partial_failure, 1001 failed ("DEADLINE"), at once.
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=1001 + k, soc_pct=50.0) for k in range(2)),
        inverters=tuple(InverterSpec(id=2001 + k, batteries=(1001 + k,)) for k in range(2)),
        telemetry_hz=TELEMETRY_HZ,
    )
    with Simulator(scenario) as sim:
        async with (
            running_daemon(sim, tmp_path / "c.sock"),
            connect(tmp_path / "c.sock") as client,
        ):
            await client.result("set_power", {"power_w": -1000.0, "batteries": [1001, 1002]})
            # 1001's command is still on its way when the second request arrives.
            sim.set_fault(2001, command_latency_s=0.2)
            freeing = await client.send("set_power", {"power_w": -200.0, "batteries": [1001]})
            taking = await client.send("set_power", {"power_w": 300.0, "batteries": [1002]})
            result = (await client.reply_to(freeing))["result"]
            assert (await client.reply_to(taking))["result"]["outcome"] == "success"
            await sim_wait(sim, lambda s: s.setpoint(2001) == -200.0)
    assert result["outcome"] == "success", f"1001's -200 W was applied, yet: {result}"


async def test_a_round_raises_only_once_it_lowered_though_another_request_cancels_its_batch(
    tmp_path: Path,
) -> None:
    # The same bug's safety side: the cancelled flights ended at once, and they were what the
    # round's raising half waited for. [1001, 1002, 1003] at +3000 W stands; [1001, 1004] at
    # +2000 W frees 1002 and 1003 (1003 answers slowly) and raises 1004; [1002] at +100 W,
    # sent with it, cancels that first batch: 1004's +1000 W landed before 1003's release, and
    # the four inverters held 3,100 W for 0.2 s, more than before (3,000) or after (2,100).
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=1001 + k, soc_pct=50.0) for k in range(4)),
        inverters=tuple(InverterSpec(id=2001 + k, batteries=(1001 + k,)) for k in range(4)),
        telemetry_hz=TELEMETRY_HZ,
    )
    inverters = [2001, 2002, 2003, 2004]
    with Simulator(scenario, lifetime_scale=LIFETIME_SCALE) as sim:
        # A 60 s lifetime: the raising half waits up to 60 × 0.1 / 6 = 1 s for the lowering (the
        # slow release takes 0.2 s, with room for a loaded machine).
        config = config_for(sim, setpoints={"lifetime_s": 60})
        async with (
            running_daemon(sim, tmp_path / "c.sock", config, lifetime_scale=LIFETIME_SCALE),
            connect(tmp_path / "c.sock") as client,
        ):
            standing = {"power_w": 3000.0, "batteries": [1001, 1002, 1003]}
            assert (await client.result("set_power", standing))["outcome"] == "success"
            start = sim.now()
            sim.set_fault(2003, command_latency_s=0.2)
            freeing = await client.send("set_power", {"power_w": 2000.0, "batteries": [1001, 1004]})
            taking = await client.send("set_power", {"power_w": 100.0, "batteries": [1002]})
            await client.reply_to(freeing)
            await client.reply_to(taking)
            await sim_wait(sim, lambda s: s.setpoint(2003) == 0.0)
            record = sim.record()
    steps = record.timeline(inverters, start=start)
    assert math.isclose(steps[-1][1], 2100.0, abs_tol=0.01), f"held: {steps}"
    assert record.max_total(inverters, start=start) <= 3000.0, f"held: {steps}"
