"""The request loop as a hypothesis state machine (issue 10's stateful test).

Hypothesis drives random arrivals for random, overlapping battery sets, random command
latencies, failures and hangs, reloads that change the lifetime, and the passing of time; a
shutdown ends every run. After every step the loop's promises are checked:

* every request taken is answered at most once (and, after the shutdown, exactly once);
* no two running requests share a battery;
* of the requests for one set, only the newest waits; every older one was answered;
* the requests queued and waiting never exceed ``queue_size``;
* a standing setpoint was last sent less than its lifetime ago.

The loop lives in a trio run on a thread of its own, under a ``MockClock`` that moves only
when a rule says so; each rule runs in it with ``trio.from_thread.run`` and lets every task
settle (``wait_all_tasks_blocked``) before the invariants are read. Client departures are the
control session's business (tests/shell/test_control.py), not the loop's.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from distributord.core.errors import CommandFailedError, CommandRejectedError
from distributord.core.model import Ignored, Request, Result, Timing
from distributord.core.status import Status
from distributord.shell.live import LiveValue
from distributord.shell.requestloop import RequestLoop
from distributord.shell.tracker import StatusTracker
from tests.fakes import Answer, Behaviour, FakeMicrogrid, Hang
from tests.shell.test_requestloop import CONFIG, PAIRS, TOPOLOGY, feed, wall
from tests.support import config_with

QUEUE_SIZE = 3
BATTERY_SETS = [frozenset(s) for s in ({1001}, {1002}, {1001, 1002}, {1002, 1003}, {1003, 1004})]
INVERTERS = sorted(PAIRS.values())


class LoopMachine(RuleBasedStateMachine):
    """One request loop, a fake microgrid, and everything it promised so far."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = trio.testing.MockClock()
        self.token: trio.lowlevel.TrioToken | None = None
        self.ready = threading.Event()
        self.requests: list[Request] = []
        self.answers: dict[int, list[Result]] = {}
        self.lifetime_s = 30
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(timeout=10)

    # -- the trio side ----------------------------------------------------------------------

    def _run(self) -> None:
        trio.run(self._main, clock=self.clock)

    async def _main(self) -> None:
        self.config = LiveValue(
            config_with(
                CONFIG,
                setpoints={"lifetime_s": self.lifetime_s},
                requests={"queue_size": QUEUE_SIZE},
            )
        )
        self.tracker = StatusTracker(PAIRS, self.config.view(lambda c: c.status), wall_clock=wall)
        for battery in PAIRS:
            feed(self.tracker, battery)
        self.fake = FakeMicrogrid(TOPOLOGY)
        self.loop = RequestLoop(self.fake, self.tracker, TOPOLOGY, self.config)
        self.stopped = trio.Event()
        self.loop_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tracker.serve)
            nursery.start_soon(self._serve_loop)
            await trio.testing.wait_all_tasks_blocked()
            self.token = trio.lowlevel.current_trio_token()
            self.ready.set()
            await self.stopped.wait()
            nursery.cancel_scope.cancel()

    async def _serve_loop(self) -> None:
        with self.loop_scope:
            await self.loop.serve()

    def in_trio(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``action`` in the loop's trio run, then let every task settle."""

        async def run() -> Any:
            result = await action()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(run, trio_token=self.token)

    # -- rules ------------------------------------------------------------------------------

    @rule(
        batteries=st.sampled_from(BATTERY_SETS),
        power=st.sampled_from([0.0, 500.0, -800.0, 2000.0]),
        timeout=st.sampled_from([1.0, 5.0]),
    )
    def submit(self, batteries: frozenset[int], power: float, timeout: float) -> None:
        request = Request(power_w=power, batteries=batteries, request_timeout_s=timeout)
        index = len(self.requests)

        def reply(result: Result, _: Timing) -> None:
            self.answers.setdefault(index, []).append(result)

        async def act() -> bool:
            return self.loop.submit(request, reply)

        self.requests.append(request)
        if not self.in_trio(act):
            self.answers[index] = []  # refused at the door (busy): never taken, never answered
            self.refused = {*getattr(self, "refused", set()), index}

    @rule(
        inverter=st.sampled_from(INVERTERS),
        behaviour=st.sampled_from(["fast", "slow", "hang", "fail", "refuse"]),
    )
    def behave(self, inverter: int, behaviour: str) -> None:
        behaviours: dict[str, Behaviour] = {
            "fast": Answer(),
            "slow": Answer(after_s=0.7),
            "hang": Hang(),
            "fail": Answer(error=CommandFailedError("UNAVAILABLE", "gone")),
            "refuse": Answer(error=CommandRejectedError("OUT_OF_RANGE", "no")),
        }
        self.fake.behaviour[inverter] = behaviours[behaviour]

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0, 11.0]))
    def wait(self, seconds: float) -> None:
        async def act() -> None:
            # In small steps, letting every task run in between, as time really passes.
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                self.clock.jump(min(0.25, end - trio.current_time()))
                await trio.testing.wait_all_tasks_blocked()

        self.in_trio(act)

    @rule(lifetime=st.sampled_from([10, 30, 60]))
    def reload(self, lifetime: int) -> None:
        self.lifetime_s = lifetime

        async def act() -> None:
            self.config.value = config_with(self.config.value, setpoints={"lifetime_s": lifetime})

        self.in_trio(act)

    # -- invariants -------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            loop = self.loop
            return {
                "now": trio.current_time(),
                "running": list(loop._running),
                "waiting": {s: j.request for s, j in loop._waiting.items()},
                "queued": loop.statistics().queued,
                "standing": loop.standing(),
                "batches": [
                    (b.sent_at, b.lifetime_s, dict(b.setpoints)) for b in self.fake.batches
                ],
                "working": {
                    b for b, s in self.tracker.states.items() if s.status is Status.WORKING
                },
            }

        return self.in_trio(read)  # type: ignore[no-any-return]

    @invariant()
    def promises_hold(self) -> None:
        if self.token is None:
            return
        state = self._snapshot()
        for index, results in self.answers.items():
            assert len(results) <= 1, f"request {index} answered {len(results)} times"
        running = state["running"]
        for i, a in enumerate(running):
            for b in running[i + 1 :]:
                assert a.isdisjoint(b), f"running at once: {sorted(a)} and {sorted(b)}"
        for batteries, request in state["waiting"].items():
            newest = max(i for i, r in enumerate(self.requests) if r is request)
            unanswered = [
                older
                for older in range(newest)
                if self.requests[older].batteries == batteries
                and older not in self._refused
                and not self.answers.get(older)
            ]
            # At most one older one is not answered yet: the one running for this set.
            assert len(unanswered) <= (1 if batteries in running else 0), unanswered
        assert state["queued"] + len(state["waiting"]) <= QUEUE_SIZE
        for batteries in state["standing"]:
            # Re-sent, to the batteries of the set that work (blocked ones are left out of
            # the re-distribution, and a set with none working has nothing to send).
            inverters = {PAIRS[b] for b in batteries if b in state["working"]}
            if not inverters:
                continue
            # Each command holds for the lifetime it was sent with (a reload changes the next).
            for inverter in inverters:
                last = max(
                    (
                        (t, life, sent[inverter])
                        for t, life, sent in state["batches"]
                        if inverter in sent
                    ),
                    default=None,
                )
                lapsed = last is not None and state["now"] - last[0] >= last[1]
                if last is None or (lapsed and last[2] == 0.0):
                    # Not sent yet: a request stands from when it is planned, and the commands
                    # that raise power wait for those that lower it. There is nothing to lapse:
                    # an inverter whose last command was 0 W holds 0 W when it ends. (Found by
                    # CI's derandomized run: a set raised from an old release of 2004 while the
                    # slow release of 2002 still gated the raise.)
                    assert batteries in state["running"], "a standing set never commanded"
                    continue
                assert not lapsed, "a standing setpoint lapsed"

    @property
    def _refused(self) -> set[int]:
        return getattr(self, "refused", set())

    def teardown(self) -> None:
        if self.token is None:
            return

        async def stop() -> None:
            self.loop.close()
            self.clock.jump(10.0)  # the drain deadline
            await trio.testing.wait_all_tasks_blocked()
            self.loop_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()

        self.in_trio(stop)
        trio.from_thread.run_sync(self.stopped.set, trio_token=self.token)
        self.thread.join(timeout=10)
        for index in range(len(self.requests)):
            if index in self._refused:
                continue
            results = self.answers.get(index, [])
            assert len(results) == 1, f"request {index} answered {len(results)} times"
            if isinstance(results[0], Ignored):
                newer = [
                    j
                    for j in range(index + 1, len(self.requests))
                    if self.requests[j].batteries == self.requests[index].batteries
                ]
                assert newer, "only a newer request for the same set supersedes one"


LoopMachine.TestCase.settings = settings(
    # A thousand examples in CI's profile (issue 10 asks for at least that); each is one trio
    # run on a thread with ~30 steps, about 20 ms.
    max_examples=max(settings().max_examples // 2, 50),
    stateful_step_count=30,
    deadline=None,
)
TestLoopMachine = LoopMachine.TestCase


def test_a_raise_gated_behind_a_slow_release_is_not_a_lapse() -> None:
    # CI's derandomized run found this sequence: 2004's last command, a 0 W release 34 s ago,
    # had run out while {1003, 1004}'s raise of 2004 waited for 2002's slow release. An
    # inverter whose last command was 0 W holds 0 W when it ends: the invariant now says so.
    machine = LoopMachine()
    steps: list[tuple[str, dict[str, Any]]] = [
        ("submit", {"batteries": frozenset({1003, 1004}), "power": 0.0, "timeout": 1.0}),
        *(("wait", {"seconds": s}) for s in (0.1, 11.0, 11.0, 11.0, 0.1, 0.1, 0.1)),
        ("behave", {"behaviour": "slow", "inverter": 2002}),
        ("submit", {"batteries": frozenset({1002, 1003}), "power": 500.0, "timeout": 1.0}),
        ("wait", {"seconds": 1.0}),
        ("submit", {"batteries": frozenset({1003, 1004}), "power": 500.0, "timeout": 1.0}),
    ]
    try:
        machine.promises_hold()
        for name, arguments in steps:
            getattr(machine, name)(**arguments)
            machine.promises_hold()
    finally:
        machine.teardown()
