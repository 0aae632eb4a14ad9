"""The setpoint ledger: what each inverter was sent, what it must be assumed to hold, and when.

Theory of operation
-------------------
Decisions are made in layers (``spec/README.md``): arbitration decides *who gets what*, the
distribution *what each battery gets*, and this ledger *what each inverter must be sent, and
when*. It is the one owner of the truth about the inverters' setpoints; the shell executes its
decisions and reports every command's fate back to it, and replies, ``get_status`` and the
metrics read their setpoints from it. It is pure: time is passed in, nothing here sleeps, sends
or reads a clock.

Per inverter it keeps:

* the commands that may still be in force, newest last (:class:`Sent`): power, the lifetime it
  was sent with, when it was sent and answered, and its :class:`State`;
* the power the live requests **want** for it, and which request (the *owner*) wants it.

The rules it keeps, and why:

1. **An unknown outcome is a possible success.** A command that may have been applied (in
   flight, ``ACCEPTED`` without a final reply, cancelled mid-flight, timed out, broken by a
   transport error) is assumed applied until *its own* lifetime ends, counted from the last
   moment the inverter could have received it. A command the API refused or that the inverter
   reported it did not apply changes nothing: what was in force before still is.
2. **Each command expires by its own lifetime.** A refresh is due a third of the way into the
   lifetime the command in force was *sent with* (a reload that changes the lifetime acts on
   the next command, never on the ones already sent). The earliest the inverter can drop a
   command is ``sent_at + lifetime``: the inverter received it no earlier than it was sent.
3. **Per inverter, never per request.** Each inverter's next command is decided from its own
   entry only, so a slow or hanging inverter never holds back another's refresh, and a request
   that changes some inverters' wants leaves every other inverter's schedule as it was.
4. **Release is absolute.** An inverter that may hold non-zero power that nobody wants is due a
   0 W command at once (retried after failures); a 0 W that landed is not refreshed (the API's
   lifetime brings an idle inverter to standby anyway, ``spec/microgrid-api.md``).
5. **At most one command in flight per inverter.** While one is in flight nothing new is due
   unless the wanted power changed: then the new command is due at once and the shell cancels
   the old one (:meth:`Ledger.due` says which it supersedes).
6. **Failures back off.** After a command that failed, was refused or whose outcome is unknown,
   sending the same power again waits ``retry_first_s``, doubling on each further failure up to
   a third of the lifetime; a command that lands resets it (``ACCEPTED`` does not, its final
   ``SUCCESS`` does: an inverter that fails after every ramp is not commanded every second). A
   refusing inverter is not hammered, a release is retried as long as the daemon lives, and a
   new decision (another power) goes out at once.

What is reported as an inverter's setpoint (:meth:`Ledger.belief`) is the newest command that
may be in force and is not in flight, while its lifetime may still run: never the last reply
alone.

A **lapse** (:meth:`Ledger.lapses`, the metrics' ``distributord_setpoint_lapses_total``) is
non-zero power that may have been in force running out by its lifetime: every non-zero command
that may be in force is past the moment it could last hold, and no command sent before then is
still in flight (one that may yet land in time). No refresh or release of it was confirmed in
time, so the inverter may have fallen back to 0 W on its own, the API's fail-safe, not the
daemon's decision. Each such power is counted once, when the ledger first sees it run out (on
any command sent or answered to that inverter, or when the count is read), before it is pruned.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Container, Hashable, Iterable, Iterator, Mapping

import attrs

from distributord.core.errors import CommandError, CommandOverriddenError, CommandRejectedError

REFRESH_AT = 1.0 / 3.0
"""A standing setpoint is re-sent this far into the lifetime it was sent with: two more tries fit
before it could run out, so one slow or lost command does not let it lapse."""

RETRY_FIRST_S = 1.0
"""The wait before retrying an inverter after a failed command: the status tracker's shortest
blocking window, so a retry does not come before the battery could be used again."""

Owner = Hashable
"""Who wants power from an inverter: the request loop uses the battery set of a request."""


class State(enum.Enum):
    """What is known of a command's fate."""

    SENDING = "sending"
    """In flight, no answer yet: it may be applied at any moment."""

    ACCEPTED = "accepted"
    """The API applied it (v1alpha18/19 ``ACCEPTED``), its final reply is still awaited."""

    CONFIRMED = "confirmed"
    """The API applied it and said until when it holds."""

    REFUSED = "refused"
    """The API refused it (out of range, invalid): not applied."""

    FAILED = "failed"
    """The API or inverter said it was not applied (``FAILED``, ``OVERRIDDEN``, a refusal of
    another kind)."""

    UNKNOWN = "unknown"
    """It ended without a verdict (timed out, cancelled, no final reply, a transport error): it
    may have been applied."""


APPLIED = frozenset({State.ACCEPTED, State.CONFIRMED})
"""States in which the command is known to be in force."""

MAYBE_APPLIED = frozenset({State.SENDING, State.ACCEPTED, State.CONFIRMED, State.UNKNOWN})
"""States in which the command may be in force."""


UNDECIDED_CODES = frozenset(
    {
        "ABORTED",
        "CANCELLED",
        "DATA_LOSS",
        "DEADLINE",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "NO_FINAL_REPLY",
        "UNAVAILABLE",
        "UNKNOWN",
    }
)
"""Failures that do not say whether the command was applied: the call broke, timed out or ended
without a verdict (``NO_FINAL_REPLY``: after ``ACCEPTED`` it was applied, before it, it may have
been). Every other code is the server's verdict on the command: not applied."""


def fate(outcome: float | CommandError) -> State:
    """What a command's outcome (until when it holds, or why it failed) says of its fate."""
    if not isinstance(outcome, CommandError):
        return State.CONFIRMED
    if isinstance(outcome, CommandRejectedError):
        return State.REFUSED
    if isinstance(outcome, CommandOverriddenError) or outcome.code not in UNDECIDED_CODES:
        return State.FAILED
    return State.UNKNOWN


def raises(power_w: float, held: Iterable[float]) -> bool:
    """Whether ``power_w`` moves an inverter away from zero from any power it may hold."""
    return any(
        abs(power_w) > abs(h) or (power_w != 0.0 and (power_w > 0.0) != (h > 0.0)) for h in held
    )


@attrs.frozen(kw_only=True)
class Sent:
    """One command sent to an inverter.

    Attributes:
        seq: Its number; unique and increasing across the ledger.
        inverter: The inverter commanded.
        power_w: The setpoint, W (as on the wire).
        lifetime_s: The ``request_lifetime`` it was sent with, s.
        sent_at: When it was sent.
        state: What is known of its fate.
        answered_at: When its fate was learnt (None while in flight).
    """

    seq: int
    inverter: int
    power_w: float
    lifetime_s: float
    sent_at: float
    state: State = State.SENDING
    answered_at: float | None = None

    @property
    def applied(self) -> bool:
        """Whether it is known to be in force (until its lifetime ends)."""
        return self.state in APPLIED

    @property
    def maybe_applied(self) -> bool:
        """Whether it may be in force (until its lifetime ends)."""
        return self.state in MAYBE_APPLIED

    @property
    def holds_at_least_until(self) -> float:
        """The earliest moment it can run out, if it was applied: received no earlier than sent."""
        return self.sent_at + self.lifetime_s

    @property
    def may_hold_until(self) -> float:
        """The latest moment it can still be in force.

        It was received no later than it was answered; in flight, it may be received at any time.
        """
        if self.answered_at is None:
            return math.inf
        return self.answered_at + self.lifetime_s

    @property
    def refresh_at(self) -> float:
        """When, if it is in force and still wanted, it is re-sent (rule 2)."""
        return self.sent_at + self.lifetime_s * REFRESH_AT


@attrs.frozen(kw_only=True)
class Due:
    """An inverter that needs a command now.

    Attributes:
        inverter: The inverter.
        power_w: What to send it.
        supersedes: The command in flight that this one replaces (the shell cancels it), if any.
        release: Whether this sends 0 W to power that nobody wants.
    """

    inverter: int
    power_w: float
    supersedes: int | None = None
    release: bool = False


@attrs.define
class _Entry:
    """One inverter's page of the ledger."""

    commands: list[Sent] = attrs.Factory(list)
    owner: Owner | None = None
    wanted: float | None = None  # None: nobody wants power from it
    failures: int = 0
    retry_at: float = -math.inf
    lapsed: int = 0  # the newest command counted in a lapse (its seq)

    def in_flight(self) -> Sent | None:
        last = self.commands[-1] if self.commands else None
        return last if last is not None and last.state is State.SENDING else None

    def in_force(self) -> Iterator[Sent]:
        """The commands that may be in force, newest first, down to the newest known applied."""
        for command in reversed(self.commands):
            if command.maybe_applied:
                yield command
            if command.applied:
                return


@attrs.frozen(kw_only=True)
class LedgerStatistics:
    """Counts over the ledger, for the metrics.

    Attributes:
        in_flight: Commands without an answer.
        holding: Inverters that may hold non-zero power.
        unwanted: Inverters that may hold non-zero power nobody wants (a release is due).
    """

    in_flight: int
    holding: int
    unwanted: int


class Ledger:
    """The setpoint ledger (see the module docstring).

    Args:
        retry_first_s: The first wait after a failed command (rule 6).
    """

    def __init__(self, *, retry_first_s: float = RETRY_FIRST_S) -> None:
        self._retry_first_s = retry_first_s
        self._entries: dict[int, _Entry] = {}
        self._owned: dict[Owner, dict[int, float]] = {}
        self._seq = 0
        self._lapses = 0

    def _entry(self, inverter: int) -> _Entry:
        entry = self._entries.get(inverter)
        if entry is None:
            entry = self._entries[inverter] = _Entry()
        return entry

    # -- what the live requests want -------------------------------------------------------------

    def want(self, owner: Owner, powers: Mapping[int, float]) -> None:
        """``owner`` now wants exactly ``powers`` (inverter → W).

        What it wanted before and no longer lists is wanted by nobody. An inverter another owner
        wanted passes to ``owner``.
        """
        before = self._owned.pop(owner, {})
        for inverter in before.keys() - powers.keys():
            entry = self._entries[inverter]
            if entry.owner == owner:
                entry.owner, entry.wanted = None, None
        for inverter, power in powers.items():
            entry = self._entry(inverter)
            if entry.owner is not None and entry.owner != owner:
                self._owned[entry.owner].pop(inverter, None)
            entry.owner, entry.wanted = owner, power
        if powers:
            self._owned[owner] = dict(powers)

    def drop(self, owner: Owner) -> None:
        """``owner`` wants nothing any more (its power is released)."""
        self.want(owner, {})

    def wanted(self, inverter: int) -> float | None:
        """The power wanted for ``inverter``; None when nobody wants power from it."""
        entry = self._entries.get(inverter)
        return None if entry is None else entry.wanted

    def owner(self, inverter: int) -> Owner | None:
        """Who wants power from ``inverter``, if anyone."""
        entry = self._entries.get(inverter)
        return None if entry is None else entry.owner

    # -- commands and their fates ----------------------------------------------------------------

    def sent(self, inverter: int, power_w: float, lifetime_s: float, *, now: float) -> Sent:
        """A command is being sent now; it is in flight until :meth:`answered`.

        A command still in flight to that inverter is superseded: the caller cancels it, and
        its fate is unknown until the caller says otherwise.
        """
        entry = self._entry(inverter)
        self._note_lapse(entry, now)
        previous = entry.in_flight()
        if previous is not None:
            entry.commands[-1] = attrs.evolve(previous, state=State.UNKNOWN, answered_at=now)
        self._seq += 1
        command = Sent(
            seq=self._seq, inverter=inverter, power_w=power_w, lifetime_s=lifetime_s, sent_at=now
        )
        entry.commands.append(command)
        self._prune(entry, now)
        return command

    def answered(self, command: Sent, state: State, *, now: float) -> Sent:
        """``command``'s fate is known (or, with :attr:`State.UNKNOWN`, known to stay unknown).

        A fate learnt for a command that was superseded meanwhile still counts: an older command
        that was applied, or refused, tells what may be in force under the newer one.
        """
        assert state is not State.SENDING, "an answer is not a send"
        entry = self._entries[command.inverter]
        index = next((i for i, c in enumerate(entry.commands) if c.seq == command.seq), None)
        if index is None:
            return command  # pruned: it can no longer be in force
        self._note_lapse(entry, now)  # what ran out while this was in flight
        known = entry.commands[index]
        answered = attrs.evolve(known, state=state, answered_at=now)
        entry.commands[index] = answered
        if index == len(entry.commands) - 1:  # the newest decides the backoff
            if state is State.ACCEPTED:
                # Applied, its final reply to come: nothing to retry now (a pending retry would
                # hold back its refresh), but the count stays, so a FAILED then backs off further.
                entry.retry_at = -math.inf
            elif state in APPLIED:
                entry.failures, entry.retry_at = 0, -math.inf
            else:
                entry.failures += 1
                wait = self._retry_first_s * 2.0 ** min(entry.failures - 1, 30)
                entry.retry_at = now + min(wait, max(self._retry_first_s, known.lifetime_s / 3.0))
        self._prune(entry, now)
        return answered

    def _prune(self, entry: _Entry, now: float) -> None:
        """Keep the commands that may still matter: those that may be in force, the newest.

        A lapse among those dropped is counted first.
        """
        self._note_lapse(entry, now)
        keep = {id(c) for c in entry.in_force() if c.may_hold_until > now}
        if entry.commands:
            keep.add(id(entry.commands[-1]))
        if len(keep) != len(entry.commands):
            entry.commands = [c for c in entry.commands if id(c) in keep]

    # -- decisions -------------------------------------------------------------------------------

    def _due_at(self, entry: _Entry, now: float) -> tuple[float, float] | None:
        """When the inverter next needs a command, and what; None if it needs none."""
        wanted = entry.wanted
        flying = entry.in_flight()
        target = 0.0 if wanted is None else wanted
        if flying is not None:
            if flying.power_w == target:
                return None  # under way
            return (now, target)  # the want changed: supersede at once (rule 5)
        newest = entry.commands[-1] if entry.commands else None
        # The backoff holds back a repeat of the command that failed, not a new decision.
        retry_at = entry.retry_at if newest is not None and newest.power_w == target else now
        if wanted is None or wanted == 0.0:
            # Release anything that may still be in force (rule 4); an explicit 0 W that never
            # held power needs no command.
            if not any(c.power_w != 0.0 and c.may_hold_until > now for c in entry.in_force()):
                return None
            return (max(now, retry_at), 0.0)
        if newest is not None and newest.applied and newest.power_w == wanted:
            return (max(newest.refresh_at, retry_at), wanted)
        return (max(now, retry_at), wanted)

    def due(self, now: float, inverters: Iterable[int] | None = None) -> list[Due]:
        """The inverters that need a command at ``now`` (all, or those of ``inverters``)."""
        result: list[Due] = []
        for inverter in self._entries if inverters is None else inverters:
            entry = self._entries.get(inverter)
            if entry is None:
                continue
            when = self._due_at(entry, now)
            if when is None or when[0] > now:
                continue
            flying = entry.in_flight()
            result.append(
                Due(
                    inverter=inverter,
                    power_w=when[1],
                    supersedes=None if flying is None else flying.seq,
                    release=entry.wanted is None,
                )
            )
        return result

    def next_due(self, now: float, skip: Container[int] = ()) -> float:
        """When :meth:`due` next has something, or a belief changes (inf: not until told)."""
        soonest = math.inf
        for inverter, entry in self._entries.items():
            if inverter in skip:
                continue
            when = self._due_at(entry, now)
            if when is not None:
                soonest = min(soonest, when[0])
            for command in entry.in_force():
                # Power that may run out changes what is reported and what needs a release.
                if command.may_hold_until > now:
                    soonest = min(soonest, command.may_hold_until)
        return soonest

    # -- what is believed --------------------------------------------------------------------------

    def belief(self, inverter: int, now: float) -> float | None:
        """The power ``inverter`` is believed to hold now; None when nothing may be in force.

        That is the newest answered command that may be in force (one in flight may not have
        landed yet), while its lifetime may still run.
        """
        entry = self._entries.get(inverter)
        if entry is None:
            return None
        for command in entry.in_force():
            if command.state is State.SENDING:
                continue
            return command.power_w if command.may_hold_until > now else None
        return None

    def belief_until(self, inverter: int, now: float) -> float | None:
        """Until when :meth:`belief` holds what it says now (None when it says nothing)."""
        entry = self._entries.get(inverter)
        if entry is None:
            return None
        for command in entry.in_force():
            if command.state is not State.SENDING:
                return command.may_hold_until if command.may_hold_until > now else None
        return None

    def possible(self, inverter: int, now: float) -> set[float]:
        """Every power ``inverter`` may hold now (0 W when it may hold nothing)."""
        entry = self._entries.get(inverter)
        if entry is None:
            return {0.0}
        powers: set[float] = set()
        nothing = True  # it may hold no setpoint at all
        for command in entry.in_force():
            if command.may_hold_until <= now:
                continue
            powers.add(command.power_w)
            if command.applied and command.holds_at_least_until > now:
                nothing = False  # it surely holds this one (or a newer one)
        if nothing:
            powers.add(0.0)
        return powers

    def may_hold_power(self, inverter: int, now: float) -> bool:
        """Whether ``inverter`` may hold non-zero power now (by what this ledger has seen)."""
        entry = self._entries.get(inverter)
        return entry is not None and any(
            c.power_w != 0.0 and c.may_hold_until > now for c in entry.in_force()
        )

    def known_idle(self, inverter: int, now: float) -> bool:
        """Whether ``inverter`` is known to hold no power: a 0 W landed, or what it held ran out.

        An inverter the ledger has never commanded is not known idle (a daemon that restarted
        does not know what its predecessor left standing).
        """
        entry = self._entries.get(inverter)
        return (
            entry is not None
            and bool(entry.commands)
            and not self.may_hold_power(inverter, now)
            and entry.in_flight() is None
        )

    def zero_stands(self, inverter: int, now: float) -> bool:
        """Whether a 0 W share for ``inverter`` needs no command: its 0 W was sent already.

        True when the newest command sent to it is a 0 W with a verdict and no power may be in
        force beside it (``spec/microgrid-api.md``: a 0 W share is sent once, when the share
        becomes 0, and is not sent again while it stays 0). A 0 W the inverter refused or did
        not apply leaves it so too: no power may be in force, and a repeat would only hammer
        it. A 0 W still in flight (a release under way), or one that ended without a verdict
        (it may never have reached the inverter), does not: the next request sends its own.
        """
        last = self.last(inverter)
        if last is None or last.power_w != 0.0 or last.state in (State.SENDING, State.UNKNOWN):
            return False
        return not self.may_hold_power(inverter, now)

    def last(self, inverter: int) -> Sent | None:
        """The newest command sent to ``inverter``."""
        entry = self._entries.get(inverter)
        return entry.commands[-1] if entry is not None and entry.commands else None

    def _note_lapse(self, entry: _Entry, now: float) -> None:
        """Count the inverter's non-zero power if it has run out by ``now`` (module docstring)."""
        answered = [c for c in entry.in_force() if c.state is not State.SENDING]
        powered = [c for c in answered if c.power_w != 0.0]
        if not powered or max(c.seq for c in powered) <= entry.lapsed:
            return  # nothing non-zero may be in force, or it was counted already
        ran_out_at = max(c.may_hold_until for c in powered)
        if ran_out_at > now:
            return  # it may still hold
        flying = entry.in_flight()
        if flying is not None and flying.sent_at < ran_out_at:
            return  # sent in time: it may have landed in time too (its answer decides)
        entry.lapsed = max(c.seq for c in powered)
        self._lapses += 1

    def lapses(self, now: float) -> int:
        """Lapses since the start (module docstring), counting any that ran out by ``now``."""
        for entry in self._entries.values():
            self._note_lapse(entry, now)
        return self._lapses

    def statistics(self, now: float) -> LedgerStatistics:
        """Counts over the ledger at ``now``."""
        in_flight = holding = unwanted = 0
        for inverter, entry in self._entries.items():
            in_flight += entry.in_flight() is not None
            if self.may_hold_power(inverter, now):
                holding += 1
                unwanted += entry.wanted is None or entry.wanted == 0.0
        return LedgerStatistics(in_flight=in_flight, holding=holding, unwanted=unwanted)
