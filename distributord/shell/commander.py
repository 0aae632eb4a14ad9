"""The commander: carries out the setpoint ledger's decisions, one command per inverter.

Theory of operation
-------------------
The ledger (:mod:`distributord.core.ledger`) decides what each inverter must be sent and when;
this module sends it and tells the ledger what became of each command. It keeps three rules:

* **Each command flies on its own.** Every inverter's command runs in its own task, inside its
  own cancel scope with its own deadline, so a hanging inverter holds up nothing but itself:
  another inverter's refresh, or a request for other inverters, never waits for it. The
  deadline cancels the RPC (the server sees the call cancelled).
* **A newer command to an inverter cancels the older one** still in flight (the ledger keeps at
  most one in flight per inverter and marks the cancelled one's fate unknown, which it treats as
  possibly applied).
* **The ledger is told everything**, in the trio thread, as it happens: a command is recorded as
  sent before its RPC starts, and its fate (applied, refused, failed, unknown) when it ends, also
  when it is cancelled. Nothing about an inverter's setpoint is inferred from anywhere else.

Two kinds of work reach it. A client request's commands go out at once through :meth:`send`,
and the request waits for their fates (:meth:`wait`) up to its own deadline. Everything else
(refreshes of standing setpoints, releases of power nobody wants, retries) comes from
:meth:`serve`: it asks the ledger what is due, sends it with the background deadline, and sleeps
until the ledger's next due time or until told that something changed (:meth:`want`,
:meth:`drop`, a fate).

Fates are reported to the caller's ``on_fate`` (the status tracker and metrics): a command that
was superseded or cancelled by the shutdown is nobody's failure and is reported as such.

**Ramping inverters** (v1alpha18/19, ``spec/microgrid-api.md``). A command whose version answers
with a stream of replies lands on ``ACCEPTED``: for the request it succeeded, and the ledger
records it applied (``ACCEPTED``). The rest of its stream is read in the background (its
:class:`~distributord.shell.link.Tail`), until its final reply or until its lifetime ends
(then the call is cancelled), whichever is first; a newer command of ours to that inverter
abandons it before it goes out, so the ``OVERRIDDEN`` our own command causes is never heard.
The final reply goes to the ledger (``SUCCESS``: confirmed; ``FAILED`` or ``OVERRIDDEN``: not
in force, so the wanted power is due again after the ledger's backoff) and to the caller's
``on_late``, which blocks, counts and announces it.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio
import trio_util

from distributord.api.adapter import FinalReply
from distributord.core.errors import CommandError, CommandFailedError
from distributord.core.ledger import Due, Ledger, Owner, Sent, State, fate, raises
from distributord.shell.link import Late, MicrogridClient, Tail

logger = logging.getLogger(__name__)

GATE_FRACTION = 1.0 / 6.0
"""How long, as a share of the lifetime, a round's raising half waits for its lowering half: half
of the time until a refresh is due (a third), so a slow answer delays a refresh but never makes
it come after the setpoint it refreshes could run out."""


@attrs.define(eq=False)
class Flight:
    """One command on its way.

    Attributes:
        inverter: The inverter commanded.
        power_w: Its setpoint, W.
        batch: The batch it flies in.
        command: The ledger's record of it, once sent (None while it waits for its turn).
        outcome: Until when it holds (Unix time) or why it failed; None while it flies.
        bug: An exception the microgrid client raised (not the microgrid's doing).
        superseded: Whether a newer command to the same inverter cancelled it.
        tail: The rest of its reply stream, read in the background once it is accepted
            (v1alpha18/19; see :class:`~distributord.shell.link.Tail`).
        tag: What the caller says it belongs to (the request loop: the client's request).
        successor: The command that carries on for it, when it was cancelled only because its
            batch was (a newer command went to another inverter of the batch).
        done: Set when it has ended.
    """

    inverter: int
    power_w: float
    batch: Batch
    command: Sent | None = None
    outcome: float | CommandError | None = None
    bug: Exception | None = None
    superseded: bool = False
    tail: Tail | None = None
    tag: object = None
    successor: Flight | None = None
    done: trio.Event = attrs.Factory(trio.Event)

    async def settled(self) -> Flight:
        """Wait until it, or the command carrying on for it, has ended; that one."""
        flight = self
        while True:
            await flight.done.wait()
            if flight.successor is None:
                return flight
            flight = flight.successor

    def last(self) -> Flight:
        """It, or the command carrying on for it (as far as known now)."""
        flight = self
        while flight.successor is not None:
            flight = flight.successor
        return flight

    @property
    def background(self) -> bool:
        """Whether no client waits for it."""
        return self.batch.background

    @property
    def error(self) -> CommandError | None:
        """Why it failed, or None if it landed (only meaningful once done)."""
        return self.outcome if isinstance(self.outcome, CommandError) else None


@attrs.define(eq=False)
class Batch:
    """Commands sent together: one crossing into the gRPC loop, one deadline, one cancel scope.

    Attributes:
        deadline: When those still flying are cancelled (trio time).
        background: Whether no client waits for them.
        after: Commands these replace: they are cancelled, and these are sent once they ended.
        gate: Commands these wait for, until ``gate_until`` (the lowering half of a round).
        flights: Inverter to its command.
    """

    deadline: float
    background: bool
    after: list[Flight] = attrs.Factory(list)
    gate: list[Flight] = attrs.Factory(list)
    gate_until: float = -math.inf
    flights: dict[int, Flight] = attrs.Factory(dict)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


def _predecessors(flight: Flight) -> list[Flight]:
    """``flight``, and, if it was never sent, the commands to its inverter it was waiting for.

    A command cancelled while it waited for its turn ends at once, while the one it waited for
    may still be flying: a command that replaces it waits for that one too.
    """
    chain = [flight]
    if flight.command is None:
        for prior in flight.batch.after:
            if prior.inverter == flight.inverter:
                chain.extend(_predecessors(prior))
    return chain


Fate = Callable[[Flight], None]
"""Told of each command that ended (``flight.outcome`` set, or ``superseded``)."""

LateFate = Callable[[Flight, Late], None]
"""Told how the reply stream of a command that landed on ``ACCEPTED`` ended, when it ended
before the command's lifetime and no newer command of ours replaced it first (a final reply,
``END`` without one, or the error that broke it); ``NONE`` when the lifetime ended first."""


class Commander:
    """Sends what the ledger decides (see the module docstring).

    Args:
        client: The microgrid.
        lifetime_s: The ``request_lifetime`` to send, read at each command (a reload changes it).
        held_s: How long the ledger takes a command sent now to hold (the lifetime, unless a
            test's simulator runs its lifetimes faster than the clock).
        background_timeout_s: The deadline of a command no client waits for, read at each one.
        on_fate: Told of each command that ended.
        on_late: Told how an accepted command's reply stream ended (:data:`LateFate`).
        ledger: The ledger (a new one if not given).
    """

    def __init__(
        self,
        client: MicrogridClient,
        *,
        lifetime_s: Callable[[], int],
        held_s: Callable[[], float],
        background_timeout_s: Callable[[], float],
        on_fate: Fate = lambda flight: None,
        on_late: LateFate = lambda flight, late: None,
        ledger: Ledger | None = None,
    ) -> None:
        self._client = client
        self._lifetime_s = lifetime_s
        self._held_s = held_s
        self._background_timeout_s = background_timeout_s
        self._on_fate = on_fate
        self._on_late = on_late
        self.ledger = ledger or Ledger()
        self._flights: dict[int, Flight] = {}
        self._following: dict[int, Flight] = {}  # accepted commands whose replies are read
        self.finals = trio_util.AsyncValue(0)
        """Accepted commands whose reply streams ended (``on_late`` was told), so far."""
        self._silent: set[int] = set()  # inverters whose last command ran into its deadline
        self._changed = trio_util.AsyncBool(False)  # the ledger changed: see what is due
        self._nursery: trio.Nursery | None = None

    # -- what the requests want ----------------------------------------------------------------

    def want(self, owner: Owner, powers: Mapping[int, float]) -> None:
        """``owner`` wants exactly ``powers`` (inverter → W); see :meth:`Ledger.want`."""
        self.ledger.want(owner, powers)
        self._changed.value = True

    def drop(self, owner: Owner) -> None:
        """``owner`` wants nothing any more; its power is released."""
        self.ledger.drop(owner)
        self._changed.value = True

    def due(self, inverters: Iterable[int]) -> list[Due]:
        """What the ledger says is due now among ``inverters``."""
        return self.ledger.due(trio.current_time(), inverters)

    def belief(self, inverter: int) -> float | None:
        """The power ``inverter`` is believed to hold now (:meth:`Ledger.belief`)."""
        return self.ledger.belief(inverter, trio.current_time())

    # -- sending -------------------------------------------------------------------------------

    def send(self, powers: Mapping[int, float], *, deadline: float) -> dict[int, Flight]:
        """Send each inverter its power now, cancelling a command still in flight to it."""
        return self._send(powers, deadline=deadline, background=False)

    @staticmethod
    async def wait(flights: Iterable[Flight], *, deadline: float) -> None:
        """Wait until every flight (or the one carrying on for it) has ended, or ``deadline``."""
        with trio.move_on_at(deadline):
            for flight in flights:
                await flight.settled()

    @staticmethod
    async def cancel(flights: Iterable[Flight]) -> None:
        """Cancel the batches of those still flying and wait until each has ended."""
        for flight in flights:
            while not flight.last().done.is_set():
                flight.last().batch.scope.cancel()
                await flight.last().done.wait()

    def raises(self, inverter: int, power_w: float) -> bool:
        """Whether ``power_w`` moves ``inverter`` away from zero from anything it may hold now."""
        return raises(power_w, self.ledger.possible(inverter, trio.current_time()))

    def _responsive(self, inverter: int) -> bool:
        """Whether the inverter's last command that ended was answered in time."""
        return inverter not in self._silent

    def _send(
        self, powers: Mapping[int, float], *, deadline: float, background: bool
    ) -> dict[int, Flight]:
        """Send a round: first what lowers or keeps an inverter's power, then what raises it.

        What raises waits until what lowers has ended, so that the site does not hold more than
        it did before the round or will after it. The wait is bounded (:data:`GATE_FRACTION` of
        the lifetime, and the round's deadline) and does not count commands to inverters that
        did not answer their last one: a hanging inverter must not hold back the others until
        their setpoints lapse.
        """
        raising = {i: p for i, p in powers.items() if self.raises(i, p)}
        first = {i: p for i, p in powers.items() if i not in raising}
        gating = [i for i in first if self._responsive(i)]
        flights = self._batch(first, deadline=deadline, background=background, gate=[])
        gate = [flights[i] for i in gating]
        gate_until = min(deadline, trio.current_time() + self._held_s() * GATE_FRACTION)
        return flights | self._batch(
            raising, deadline=deadline, background=background, gate=gate, gate_until=gate_until
        )

    def _batch(
        self,
        powers: Mapping[int, float],
        *,
        deadline: float,
        background: bool,
        gate: list[Flight],
        gate_until: float = -math.inf,
    ) -> dict[int, Flight]:
        if not powers:
            return {}
        assert self._nursery is not None, "the commander is not serving"
        # A newer command cancels the one in flight to that inverter. A batch is cancelled as a
        # whole, so the others still flying in it are sent again, at what is wanted of them now
        # (never at what the cancelled batch carried: that may be a decision since replaced).
        again: dict[tuple[float, bool], list[Flight]] = {}
        after: list[Flight] = []
        for inverter in powers:
            older = self._flights.get(inverter)
            if older is None:
                continue
            # Sent once it has ended, and what it waited for: never two at once to one inverter.
            after.extend(_predecessors(older))
            if older.batch.scope.cancel_called:
                continue
            older.batch.scope.cancel()
            for other in older.batch.flights.values():
                if not other.done.is_set():
                    other.superseded = True
                    if other.inverter not in powers:
                        key = (older.batch.deadline, older.batch.background)
                        again.setdefault(key, []).append(other)
        batch = Batch(
            deadline=deadline, background=background, after=after, gate=gate, gate_until=gate_until
        )
        for inverter, power in powers.items():
            flight = Flight(inverter=inverter, power_w=power, batch=batch)
            flight.tail = Tail(functools.partial(self._late, flight))
            batch.flights[inverter] = self._flights[inverter] = flight
        batch.scope.deadline = deadline
        try:
            self._nursery.start_soon(self._fly, batch)
        except RuntimeError:  # the commander has stopped serving: the daemon is stopping
            for flight in batch.flights.values():
                self._end(flight)
            return dict(batch.flights)
        if not after and not gate:
            self._launch(batch)
        for (other_deadline, other_background), others in again.items():
            wanted = {f.inverter: self.ledger.wanted(f.inverter) or 0.0 for f in others}
            carried = self._send(wanted, deadline=other_deadline, background=other_background)
            for other in others:  # whoever waits for one (a client, a gate) waits for its heir
                other.successor = carried[other.inverter]
        return dict(batch.flights)

    def _launch(self, batch: Batch) -> None:
        """The batch's commands are being sent now: the ledger records them."""
        now = trio.current_time()
        held_s = self._held_s()
        for flight in batch.flights.values():
            if not flight.done.is_set():
                # Our own newer command: the older one's stream is abandoned before this goes
                # out, so its OVERRIDDEN (ours) is never taken for someone else's.
                older = self._following.pop(flight.inverter, None)
                if older is not None and older.tail is not None:
                    older.tail.abandon()
                flight.command = self.ledger.sent(flight.inverter, flight.power_w, held_s, now=now)

    async def _fly(self, batch: Batch) -> None:
        flights = batch.flights

        def land(inverter: int, outcome: float | CommandError) -> None:
            flight = flights[inverter]
            flight.outcome = outcome
            self._end(flight)

        try:
            with batch.scope:
                if batch.after or batch.gate:
                    with trio.move_on_at(batch.gate_until):
                        for flight in batch.gate:
                            await flight.settled()
                    for flight in batch.after:
                        await flight.done.wait()  # cancelled: it ends at once
                    self._launch(batch)
                sending = {i: f.power_w for i, f in flights.items() if f.command is not None}
                if sending:
                    # Cancelled before it started (a newer command came): nothing goes out.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    tails = {i: f.tail for i, f in flights.items() if f.tail is not None}
                    await self._client.set_active_powers(sending, self._lifetime_s(), land, tails)
        except Exception as bug:  # a bug in the client, not the microgrid's answer
            logger.exception("commands to inverters %s failed unexpectedly", sorted(flights))
            for flight in flights.values():
                if not flight.done.is_set():
                    flight.bug = bug
                    flight.outcome = CommandFailedError("INTERNAL", repr(bug))
        finally:
            for flight in flights.values():
                if not flight.done.is_set():
                    self._end(flight)

    def _end(self, flight: Flight) -> None:
        now = trio.current_time()
        command = flight.command
        if flight.outcome is None:
            if flight.superseded:
                reason = "superseded by a newer command to the same inverter"
            elif command is None:
                reason = "cancelled before it was sent"
            elif now >= flight.batch.deadline:
                reason = f"no answer within {flight.batch.deadline - command.sent_at:g} s"
            else:
                reason = "cancelled: the daemon is stopping"
            flight.outcome = CommandFailedError("DEADLINE", reason)
            state = State.UNKNOWN
            if command is not None and not flight.superseded and now >= flight.batch.deadline:
                self._silent.add(flight.inverter)
        else:
            state = State.UNKNOWN if flight.bug is not None else fate(flight.outcome)
            self._silent.discard(flight.inverter)
        tail = flight.tail
        if tail is not None:
            if tail.following and command is not None and state is State.CONFIRMED:
                state = State.ACCEPTED  # applied; its final reply is awaited
                self._start_following(flight, command.holds_at_least_until)
            else:
                tail.abandon()  # failed, cancelled, superseded: nothing of its stream matters
        if command is not None:
            flight.command = self.ledger.answered(command, state, now=now)
        if self._flights.get(flight.inverter) is flight:
            del self._flights[flight.inverter]
        flight.done.set()
        self._changed.value = True
        self._on_fate(flight)

    # -- accepted commands' reply streams -------------------------------------------------------

    def _start_following(self, flight: Flight, until: float) -> None:
        """Read the accepted command's replies in the background, until ``until`` at most."""
        tail = flight.tail
        assert tail is not None
        if tail.abandoned:
            return
        try:
            assert self._nursery is not None
            self._nursery.start_soon(self._follow, flight, until)
        except RuntimeError:  # the commander has stopped serving: the daemon is stopping
            tail.abandon()
            return
        self._following[flight.inverter] = flight

    async def _follow(self, flight: Flight, until: float) -> None:
        """Read an accepted command's replies until its final reply or ``until`` (its lifetime).

        At ``until`` the stream is abandoned (the call cancelled at the RPC): the setpoint has
        run out, nothing it could still say matters.
        """
        tail = flight.tail
        assert tail is not None
        try:
            with trio.move_on_at(until):
                await tail.finished.wait()
        finally:  # its lifetime ended, or the commander stops: the call is cancelled
            tail.abandon()
            ran_out = self._following.get(flight.inverter) is flight
            if ran_out:
                del self._following[flight.inverter]
        if ran_out:
            self.finals.value += 1
            self._on_late(flight, FinalReply.NONE)

    def _late(self, flight: Flight, late: Late) -> None:
        """An accepted command's reply stream ended: the ledger and ``on_late`` learn how."""
        if self._following.get(flight.inverter) is not flight:
            return  # not followed (any more): nothing it says counts
        del self._following[flight.inverter]
        command = flight.command
        state = (
            {
                FinalReply.SUCCESS: State.CONFIRMED,
                FinalReply.FAILED: State.FAILED,  # the inverter says it did not apply it
                FinalReply.OVERRIDDEN: State.FAILED,  # someone else's command replaced it
            }.get(late)
            if isinstance(late, FinalReply)
            else None
        )
        if command is not None and state is not None:
            flight.command = self.ledger.answered(command, state, now=trio.current_time())
            self._changed.value = True  # a failed setpoint may be due again (after its backoff)
        self.finals.value += 1
        self._on_late(flight, late)

    def following(self, inverter: int) -> bool:
        """Whether an accepted command's reply stream to ``inverter`` is being read."""
        return inverter in self._following

    # -- the background ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what falls due, until cancelled; commands in flight are cancelled with it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                now = trio.current_time()
                self._changed.value = False
                powers: dict[int, float] = {}
                for due in self.ledger.due(now):
                    turn = self._flights.get(due.inverter)
                    if turn is not None and turn.power_w == due.power_w:
                        continue  # already on its way, waiting for its turn in a round
                    if due.release:
                        logger.info(
                            "inverter %d may hold power that no request wants: sending 0 W",
                            due.inverter,
                        )
                    powers[due.inverter] = due.power_w
                self._send(powers, deadline=now + self._background_timeout_s(), background=True)
                # Commands waiting for their turn in a round are not due again meanwhile.
                waiting = {i for i, f in self._flights.items() if f.command is None}
                with trio.move_on_at(self.ledger.next_due(now, skip=waiting)):
                    await self._changed.wait_value(True)
