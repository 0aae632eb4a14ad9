"""Who holds which battery: the live proposals, their buckets, preemption, refusal and return.

Theory of operation
-------------------
Several programs share the fleet (``spec/arbitration.md``). Each asks through *proposals*; this
module keeps the live ones (:class:`Registry`) and decides, from them alone, which bucket holds
which battery. What a bucket then commands (the merge of its proposals) is ``merge.py``'s
business; executing it, telling the programs and writing the audit lines is the shell's. It is
pure: time is passed in as ``now``, nothing here sleeps, sends or reads a clock.

The rules it keeps, and why:

1. **A bucket is an exact battery set.** Proposals on the same set are merged, whoever made them.
2. **A program's new proposal on the same set replaces its previous one** (``replaced``); on a
   set that overlaps without being equal it ends the older one entirely (``superseded``): a
   program never competes with itself.
3. **Equal priority, another program, an overlapping unequal set: refused**, naming the live
   proposal in the way (the oldest, if several) and its set: no silent take-over. Nothing
   changes on a refusal. The check is pairwise, proposal against proposal, whatever else shares
   either bucket.
4. **A battery is held by the bucket with the highest top priority among the buckets that
   contain it** (a bucket's top priority is its highest proposal's). The rule is per battery, so
   it is a function of the live proposals only, never of their history: the same live proposals
   give the same holdings whatever order they came in. It follows that:

   * a lower bucket keeps the batteries no higher bucket claims, and gets the others back when
     the higher bucket ends (or its top proposal leaves it);
   * a bucket preempted on *all* its batteries holds none: its proposals stay live and hold
     nothing (the merge sees an empty bucket), and get their batteries back in the same way;
   * in a chain (A over B over C) each battery goes to the highest bucket that contains it: B
     keeps what A does not claim, even the batteries it shares with C; C keeps only what neither
     A nor B claims. No bucket is "out" as a whole because it lost some batteries.

   Rules 2 and 3 make two overlapping unequal buckets never tie on their top priority (their top
   proposals would be of one program, superseded, or of two programs at equal priority,
   refused). Should one ever be built by hand, the bucket whose top proposal is older holds.
5. **Every battery in some live proposal's set is held** (by rule 4, by exactly one bucket), so
   a battery is *freed* exactly when the last live proposal containing it ends: the shell then
   commands it 0 W explicitly and releases it (never a lapse by lifetime).
6. **Lifetimes.** Standing until replaced or withdrawn; with ``ttl_s`` a proposal has expired
   once ``now >= created_at + ttl_s`` (:meth:`Registry.expire`); with ``until_disconnect`` it
   ends when its connection closes (:meth:`Registry.disconnect`). A proposal's age is its arrival
   order (``sequence``); ``created_at`` only counts its lifetime.

Every change returns its events (:data:`Event`), which the shell turns into notifications, audit
lines and commands: :class:`ProposalEnded` for each proposal that ended, with why;
:class:`ProposalPreempted` and :class:`ProposalReturned` for each proposal that was live before
and after the change and whose bucket lost or regained batteries; :class:`BatteriesFreed` for the
batteries no live proposal holds any more. A new proposal is told nothing through events: the
decision (:class:`Accepted`) says what its bucket holds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable
from typing import TypeAlias

import attrs

Batteries: TypeAlias = frozenset[int]
"""A battery set, by component id."""

Connection: TypeAlias = Hashable
"""The shell's name for a control connection (whatever it likes, as long as it hashes)."""


def _is_positive_or_none(
    _: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    # ``not value > 0`` also refuses NaN.
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _is_not_empty(_: object, attribute: attrs.Attribute[Batteries], value: Batteries) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must name at least one battery")


@attrs.frozen(kw_only=True)
class Proposal:
    """One live proposal: what a program asks of a battery set (``spec/arbitration.md``).

    Attributes:
        program: The program that made it.
        priority: The program's priority when it was made (higher wins).
        batteries: The exact battery set: its bucket.
        power_w: What the program wants for the set, or ``None`` (a limiter: bounds only).
        lower_w: The lower limit it imposes on every lower priority, or ``None``.
        upper_w: The upper limit it imposes on every lower priority, or ``None``.
        ttl_s: Its lifetime from ``created_at``, or ``None`` (standing).
        until_disconnect: Whether it ends when its connection closes.
        connection: The connection that made it.
        created_at: When it was made (the shell's clock).
        sequence: Its arrival order in the registry: its age (smaller is older) and its identity.
    """

    program: str
    priority: int
    batteries: Batteries = attrs.field(validator=_is_not_empty)
    power_w: float | None = None
    lower_w: float | None = None
    upper_w: float | None = None
    ttl_s: float | None = attrs.field(default=None, validator=_is_positive_or_none)
    until_disconnect: bool = False
    connection: Connection
    created_at: float
    sequence: int

    @property
    def expires_at(self) -> float:
        """When it expires (``inf`` without ``ttl_s``)."""
        return math.inf if self.ttl_s is None else self.created_at + self.ttl_s


def _rank(proposal: Proposal) -> tuple[int, int]:
    """Sort key: higher priority first, then older first."""
    return (-proposal.priority, proposal.sequence)


@attrs.frozen(kw_only=True)
class Bucket:
    """The live proposals on one exact battery set, and the batteries they hold.

    Attributes:
        batteries: The set.
        proposals: Its live proposals, by priority (highest first), then by age (oldest first).
            Never empty.
        held: The batteries of the set that this bucket holds: those no bucket of a higher top
            priority contains. Possibly empty (preempted on all of them).
    """

    batteries: Batteries
    proposals: tuple[Proposal, ...]
    held: Batteries

    @property
    def top(self) -> Proposal:
        """Its highest proposal (the oldest, if several share the highest priority)."""
        return self.proposals[0]

    @property
    def priority(self) -> int:
        """Its top priority."""
        return self.top.priority


@attrs.frozen(kw_only=True)
class Holdings:
    """Who holds which battery: every bucket, highest top priority first (then oldest top).

    Attributes:
        buckets: One per battery set that has a live proposal.
    """

    buckets: tuple[Bucket, ...] = ()

    def bucket(self, batteries: Iterable[int]) -> Bucket | None:
        """The bucket on exactly this set, if it has a live proposal."""
        wanted = frozenset(batteries)
        return next((b for b in self.buckets if b.batteries == wanted), None)

    def holder(self, battery: int) -> Bucket | None:
        """The bucket that holds this battery, if any does."""
        return next((b for b in self.buckets if battery in b.held), None)

    def held(self) -> Batteries:
        """Every battery some bucket holds (which is every battery of a live proposal)."""
        return frozenset().union(*(b.held for b in self.buckets))


def holdings_of(proposals: Iterable[Proposal]) -> Holdings:
    """Who holds which battery, from the live proposals alone (rule 4 of the module docstring).

    Args:
        proposals: The live proposals, in any order.

    Returns:
        The buckets, highest top priority first; each battery is held by the first bucket of that
        order that contains it.
    """
    members: dict[Batteries, list[Proposal]] = {}
    for proposal in proposals:
        members.setdefault(proposal.batteries, []).append(proposal)
    ranked = sorted(
        (tuple(sorted(group, key=_rank)) for group in members.values()),
        key=lambda group: _rank(group[0]),
    )
    claimed: set[int] = set()
    buckets = []
    for group in ranked:
        batteries = group[0].batteries
        held = batteries - claimed
        claimed |= batteries
        buckets.append(Bucket(batteries=batteries, proposals=group, held=held))
    return Holdings(buckets=tuple(buckets))


class Why(enum.Enum):
    """Why a proposal ended."""

    REPLACED = "replaced"
    """Its program made a new proposal on the same set."""

    SUPERSEDED = "superseded"
    """Its program made a new proposal on a set overlapping its own without being equal."""

    WITHDRAWN = "withdrawn"
    """It was withdrawn."""

    EXPIRED = "expired"
    """Its ``ttl_s`` ran out."""

    DISCONNECTED = "disconnected"
    """It was ``until_disconnect`` and its connection closed."""


class GrantChange(enum.StrEnum):
    """Why a live proposal's grant changed (a ``proposal_changed`` reason besides the merge's)."""

    PREEMPTED_BY = "preempted_by"
    """A bucket of higher priority took batteries from its bucket (``preempted_by`` names it)."""

    RETURNED = "returned"
    """Batteries came (back) to its bucket: the bucket above ended or fell below it."""

    NARROWED = "narrowed"
    """Another program's proposal in its bucket changed what it is granted."""


@attrs.frozen(kw_only=True)
class ProposalEnded:
    """A proposal ended (``proposal_ended`` to its owner).

    Attributes:
        proposal: The proposal that ended.
        why: Why.
        by: The new proposal that replaced or superseded it, else ``None``.
    """

    proposal: Proposal
    why: Why
    by: Proposal | None = None


@attrs.frozen(kw_only=True)
class ProposalPreempted:
    """A higher bucket took batteries from a live proposal's bucket.

    ``proposal_changed`` to its owner, reason ``preempted_by``. One per live proposal of the
    bucket and per bucket that took some.

    Attributes:
        proposal: The live proposal that lost them (it stays live).
        batteries: The batteries that bucket took in this change.
        by: The top proposal of the bucket that took them: its program, priority and set.
        held: What the proposal's bucket holds now (possibly nothing).
    """

    proposal: Proposal
    batteries: Batteries
    by: Proposal
    held: Batteries


@attrs.frozen(kw_only=True)
class ProposalReturned:
    """Batteries came (back) to a live proposal's bucket.

    ``proposal_changed`` to its owner, reason ``returned``: the bucket above ended or fell below
    it, or a proposal joined its bucket at a priority that now wins them. One per live proposal
    of the bucket.

    Attributes:
        proposal: The live proposal whose bucket gained them.
        batteries: The batteries its bucket gained in this change (it may never have held them
            before: a bucket preempted from the start).
        held: What the proposal's bucket holds now.
    """

    proposal: Proposal
    batteries: Batteries
    held: Batteries


@attrs.frozen(kw_only=True)
class BatteriesFreed:
    """Batteries no live proposal holds any more: the shell commands them 0 W, then releases them.

    At most one per change, after every other event of the change.

    Attributes:
        batteries: The batteries freed (never empty).
    """

    batteries: Batteries


Event: TypeAlias = ProposalEnded | ProposalPreempted | ProposalReturned | BatteriesFreed
"""The closed union of what a change tells the shell."""


@attrs.frozen(kw_only=True)
class Accepted:
    """The proposal is live.

    Attributes:
        proposal: The new proposal, as the registry keeps it.
        replaced: The program's previous proposal on the same set, if it had one.
        superseded: The program's older proposals on overlapping unequal sets, now ended.
        held: What the new proposal's bucket holds (possibly nothing: preempted on all of it).
        events: What the change did to the others, in order.
    """

    proposal: Proposal
    replaced: Proposal | None = None
    superseded: tuple[Proposal, ...] = ()
    held: Batteries
    events: tuple[Event, ...] = ()


@attrs.frozen(kw_only=True)
class Refused:
    """Another program holds an overlapping unequal set at the same priority; nothing changed.

    Attributes:
        holder: The live proposal in the way (the oldest, if several): its program and its set
            are what the refusal names.
    """

    holder: Proposal


Decision: TypeAlias = Accepted | Refused
"""The closed union of outcomes of :meth:`Registry.propose`."""


@attrs.frozen(kw_only=True)
class Change:
    """What a withdrawal, an expiry or a disconnection did.

    Attributes:
        ended: The proposals that ended, oldest first (possibly none).
        events: Their events, in order (none when nothing ended).
    """

    ended: tuple[Proposal, ...] = ()
    events: tuple[Event, ...] = ()


def _events(before: Holdings, after: Holdings, ended: Iterable[ProposalEnded]) -> tuple[Event, ...]:
    """The events of a change from ``before`` to ``after``.

    The ends first, then what the proposals live on both sides lost and regained, then the
    batteries freed.
    """
    events: list[Event] = list(ended)
    live_before = {p.sequence for bucket in before.buckets for p in bucket.proposals}
    after_by_set = {bucket.batteries: bucket for bucket in after.buckets}
    for was in before.buckets:
        now = after_by_set.get(was.batteries)
        if now is None:
            continue
        lost = was.held - now.held
        regained = now.held - was.held
        if not lost and not regained:
            continue
        # A battery a surviving bucket lost is still in a live set, so some bucket holds it.
        takers = [(taker, taker.held & lost) for taker in after.buckets if taker.held & lost]
        for proposal in now.proposals:
            if proposal.sequence not in live_before:
                continue
            for taker, taken in takers:
                events.append(
                    ProposalPreempted(
                        proposal=proposal, batteries=taken, by=taker.top, held=now.held
                    )
                )
            if regained:
                events.append(
                    ProposalReturned(proposal=proposal, batteries=regained, held=now.held)
                )
    freed = before.held() - after.held()
    if freed:
        events.append(BatteriesFreed(batteries=freed))
    return tuple(events)


class Registry:
    """The live proposals; every change returns its events (module docstring).

    Pure and synchronous: the shell owns one, passes ``now`` in, and executes what comes back.
    """

    def __init__(self) -> None:
        self._live: dict[int, Proposal] = {}
        self._next = 0  # the next proposal's sequence
        self._holdings = Holdings()

    def copy(self) -> Registry:
        """An independent registry with the same live proposals (to try a change on)."""
        other = Registry()
        other._live = dict(self._live)
        other._next = self._next
        other._holdings = self._holdings
        return other

    def proposals(self) -> tuple[Proposal, ...]:
        """Every live proposal, oldest first."""
        return tuple(self._live.values())

    def holdings(self) -> Holdings:
        """Who holds which battery now."""
        return self._holdings

    def next_expiry(self) -> float | None:
        """When the next ``ttl_s`` runs out (the shell's next call to :meth:`expire`), if any."""
        return min((p.expires_at for p in self._live.values() if p.ttl_s is not None), default=None)

    def propose(
        self,
        *,
        program: str,
        priority: int,
        batteries: Iterable[int],
        power_w: float | None = None,
        lower_w: float | None = None,
        upper_w: float | None = None,
        ttl_s: float | None = None,
        until_disconnect: bool = False,
        connection: Connection,
        now: float,
    ) -> Decision:
        """A program proposes for a battery set (rules 2 and 3 of the module docstring).

        Returns:
            :class:`Refused` (nothing changed) or :class:`Accepted` with what it replaced and
            superseded and the events of the change.

        Raises:
            ValueError: ``batteries`` is empty or ``ttl_s`` is not positive (the caller decodes
                and checks its input first).
        """
        proposal = Proposal(
            program=program,
            priority=priority,
            batteries=frozenset(batteries),
            power_w=power_w,
            lower_w=lower_w,
            upper_w=upper_w,
            ttl_s=ttl_s,
            until_disconnect=until_disconnect,
            connection=connection,
            created_at=now,
            sequence=-1,
        )
        wanted = proposal.batteries
        for live in self._live.values():
            if (
                live.program != program
                and live.priority == priority
                and live.batteries != wanted
                and not live.batteries.isdisjoint(wanted)
            ):
                return Refused(holder=live)
        proposal = attrs.evolve(proposal, sequence=self._next)
        self._next += 1
        replaced = None
        superseded = []
        ended = []
        for live in self._live.values():
            if live.program != program or live.batteries.isdisjoint(wanted):
                continue
            if live.batteries == wanted:
                replaced = live
                ended.append(ProposalEnded(proposal=live, why=Why.REPLACED, by=proposal))
            else:
                superseded.append(live)
                ended.append(ProposalEnded(proposal=live, why=Why.SUPERSEDED, by=proposal))
        for end in ended:
            del self._live[end.proposal.sequence]
        self._live[proposal.sequence] = proposal
        before, self._holdings = self._holdings, holdings_of(self._live.values())
        bucket = self._holdings.bucket(wanted)
        assert bucket is not None
        return Accepted(
            proposal=proposal,
            replaced=replaced,
            superseded=tuple(superseded),
            held=bucket.held,
            events=_events(before, self._holdings, ended),
        )

    def withdraw(
        self, program: str, batteries: Iterable[int] | None = None, *, overlapping: bool = False
    ) -> Change:
        """A program withdraws its proposal on exactly ``batteries``, or all of its proposals.

        With ``overlapping``, every proposal of the program whose set shares a battery with
        ``batteries`` (``set_power`` at 0 W: the program lets go of those batteries). A set the
        program has no proposal on withdraws nothing (an empty :class:`Change`).
        """
        wanted = None if batteries is None else frozenset(batteries)

        def chosen(proposal: Proposal) -> bool:
            if proposal.program != program:
                return False
            if wanted is None:
                return True
            if overlapping:
                return not proposal.batteries.isdisjoint(wanted)
            return proposal.batteries == wanted

        return self._end((p for p in self._live.values() if chosen(p)), Why.WITHDRAWN)

    def expire(self, now: float) -> Change:
        """End every proposal whose ``ttl_s`` has run out by ``now``."""
        return self._end((p for p in self._live.values() if p.expires_at <= now), Why.EXPIRED)

    def disconnect(self, connection: Connection) -> Change:
        """A connection closed: end its ``until_disconnect`` proposals (its others stand)."""
        return self._end(
            (p for p in self._live.values() if p.until_disconnect and p.connection == connection),
            Why.DISCONNECTED,
        )

    def _end(self, proposals: Iterable[Proposal], why: Why) -> Change:
        ending = tuple(proposals)
        if not ending:
            return Change()
        for proposal in ending:
            del self._live[proposal.sequence]
        before, self._holdings = self._holdings, holdings_of(self._live.values())
        ended = [ProposalEnded(proposal=p, why=why) for p in ending]
        return Change(ended=ending, events=_events(before, self._holdings, ended))
