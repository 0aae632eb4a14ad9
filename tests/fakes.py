"""A fake microgrid: the :class:`~distributord.shell.link.MicrogridClient` protocol, in memory.

Each test decides how every inverter answers its commands (:attr:`FakeMicrogrid.behaviour`):
at once or after a delay (``Answer``), with an error (``Answer(error=...)``), once the test
says so (``Answer(held=event)``), not at all until cancelled (``Hang``), or by breaking the
whole batch with an unexpected exception (``Crash``).
A behaviour is read when a command is sent, so changing it affects later commands only.

Every batch is recorded (:attr:`FakeMicrogrid.batches`) with its trio time, its lifetime and
each command's setpoint and end: when it ended and how (answered, failed, cancelled). Delays are
``trio.sleep`` calls: under ``MockClock`` that is simulated time, not synchronisation.

Reactive commands (``set_reactive_powers``) are recorded apart, in :attr:`FakeMicrogrid.reactive`
(a :class:`FakeCommands` with the same knobs and records: ``fake.reactive.behaviour``,
``fake.reactive.batches``, ``fake.reactive.sent()``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from distributord.core.errors import CommandError
from distributord.core.topology import Topology

if TYPE_CHECKING:
    from distributord.api.adapter import Decoder
    from distributord.shell.link import MessageStream, Tail


@attrs.frozen(kw_only=True)
class Answer:
    """Answer after ``after_s`` seconds: with ``error`` if given, else the setpoint holds.

    With ``held``, the delay starts only once the test sets that event. With ``ramps``, an
    accepted command's stream goes on (v1alpha18/19): its tail is marked following and kept
    in :attr:`Command.tail`, for the test to end (``tail.end(FinalReply.FAILED)``) or to see
    abandoned.
    """

    after_s: float = 0.0
    error: CommandError | None = None
    held: trio.Event | None = None
    ramps: bool = False


@attrs.frozen(kw_only=True)
class Hang:
    """Never answer; the command ends only when it is cancelled."""


@attrs.frozen(kw_only=True)
class Crash:
    """The batch's call raises ``error`` at once (a bug, not the microgrid); nothing lands."""

    error: Exception


Behaviour = Answer | Hang | Crash


class End(enum.Enum):
    """How a command ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.define(kw_only=True)
class Command:
    """One inverter's command, as the fake saw it.

    Attributes:
        inverter: The inverter commanded.
        power_w: Its setpoint (W; var for a reactive command).
        sent_at: Trio time it was sent.
        ended_at: Trio time it ended (None while it runs).
        end: How it ended (None while it runs).
        error: The error it failed with, if any.
        tail: The rest of its reply stream, when it was accepted by an inverter that ramps.
    """

    inverter: int
    power_w: float
    sent_at: float
    ended_at: float | None = None
    end: End | None = None
    error: CommandError | None = None
    tail: Tail | None = None


@attrs.define(kw_only=True)
class Batch:
    """One call of ``set_active_powers`` (or of ``set_reactive_powers``: var, not W).

    Attributes:
        sent_at: Trio time of the call.
        lifetime_s: The lifetime it asked for.
        commands: Its commands, in the order given.
    """

    sent_at: float
    lifetime_s: int
    commands: list[Command]

    @property
    def setpoints(self) -> dict[int, float]:
        """Inverter id to the power it was sent."""
        return {command.inverter: command.power_w for command in self.commands}


class FakeCommands:
    """One kind of command (active or reactive power) of a :class:`FakeMicrogrid`, scripted.

    Attributes:
        behaviour: Inverter id to how it answers; inverters not in it answer at once.
        batches: Every batch sent, oldest first.
        most_in_flight: The most commands one inverter ever had running at once (a loop that
            never commands an inverter twice at a time keeps it at 1).
        commanded: Set when the first batch is sent.
        landed: Set when the first batch has ended without being cancelled.
    """

    def __init__(self) -> None:
        self.behaviour: dict[int, Behaviour] = {}
        self.batches: list[Batch] = []
        self.most_in_flight = 0
        self._in_flight: dict[int, int] = {}
        self.commanded = trio.Event()
        self.landed = trio.Event()

    @property
    def commands(self) -> list[Command]:
        """Every command sent, oldest first."""
        return [command for batch in self.batches for command in batch.commands]

    def sent(self) -> list[tuple[float, dict[int, float]]]:
        """Each batch as ``(trio time, {inverter: W})``: the usual thing to assert."""
        return [(batch.sent_at, batch.setpoints) for batch in self.batches]

    async def send(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Record the batch and run each command as its inverter's behaviour says."""
        tails = tails or {}
        now = trio.current_time()
        for inverter in setpoints:
            behaviour = self.behaviour.get(inverter)
            if isinstance(behaviour, Crash):
                raise behaviour.error
        batch = Batch(
            sent_at=now,
            lifetime_s=lifetime_s,
            commands=[Command(inverter=i, power_w=p, sent_at=now) for i, p in setpoints.items()],
        )
        self.batches.append(batch)
        self.commanded.set()
        async with trio.open_nursery() as nursery:
            for command in batch.commands:
                nursery.start_soon(
                    self._run, command, lifetime_s, land, tails.get(command.inverter)
                )
        self.landed.set()

    async def _run(
        self,
        command: Command,
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tail: Tail | None,
    ) -> None:
        inverter = command.inverter
        behaviour = self.behaviour.get(inverter, Answer())
        self._in_flight[inverter] = self._in_flight.get(inverter, 0) + 1
        self.most_in_flight = max(self.most_in_flight, self._in_flight[inverter])
        # A Crash was raised before the batch started; only Answer and Hang get here.
        error = behaviour.error if isinstance(behaviour, Answer) else None
        try:
            if isinstance(behaviour, Answer):
                if behaviour.held is not None:
                    await behaviour.held.wait()
                await trio.sleep(behaviour.after_s)
            else:
                await trio.sleep_forever()
        except trio.Cancelled:
            command.ended_at, command.end = trio.current_time(), End.CANCELLED
            raise
        finally:
            self._in_flight[inverter] -= 1
        command.ended_at = trio.current_time()
        if error is None:
            command.end = End.SUCCEEDED
            if isinstance(behaviour, Answer) and behaviour.ramps and tail is not None:
                tail.following = True
                command.tail = tail
            land(inverter, command.ended_at + lifetime_s)
        else:
            command.end, command.error = End.FAILED, error
            land(inverter, error)


class FakeMicrogrid(FakeCommands):
    """A :class:`~distributord.shell.link.MicrogridClient` whose commands a test scripts.

    Its own knobs and records (:class:`FakeCommands`) are the active power's; the reactive
    power's are :attr:`reactive`'s.

    Args:
        topology: What :meth:`topology` answers (it raises without one).

    Attributes:
        reactive: The reactive commands' knobs and records.
    """

    def __init__(self, topology: Topology | None = None) -> None:
        super().__init__()
        self._topology = topology
        self.reactive = FakeCommands()

    async def topology(self) -> Topology:
        """The topology given at construction."""
        if self._topology is None:
            raise NotImplementedError("FakeMicrogrid was given no topology")
        return self._topology

    def telemetry(self, component_id: int) -> AbstractAsyncContextManager[MessageStream[Any]]:
        """Not faked: tests feed the status tracker directly."""
        raise NotImplementedError("FakeMicrogrid has no telemetry; feed the tracker instead")

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """Not faked: tests feed the status tracker directly."""
        raise NotImplementedError("FakeMicrogrid has no telemetry; feed the tracker instead")

    set_active_powers = FakeCommands.send
    """Active commands: recorded here, answered as :attr:`behaviour` says."""

    async def set_reactive_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Reactive commands (var): recorded in :attr:`reactive`, answered as its behaviour says."""
        await self.reactive.send(setpoints, lifetime_s, land, tails)
