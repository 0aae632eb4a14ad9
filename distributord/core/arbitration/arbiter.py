"""The arbiter: the live proposals with who made them, each bucket's merge, and the audit text.

Theory of operation
-------------------
:mod:`.holdings` decides who holds which battery and :mod:`.merge` what a bucket's proposals
combine to. The arbiter binds them to the daemon's requests (``spec/arbitration.md``): it keeps,
beside each live proposal, the :class:`Ask` that made it (the caller, and the ``set_power``
options a proposal alone does not carry), and answers the request loop's questions. It is pure:
time is passed in; the shell (``distributord.shell.requestloop``) executes what it decides.

* **Try, then keep.** A proposal is tried on a copy (:meth:`Arbiter.trial`) and kept
  (:meth:`Arbiter.commit`) only once its application is planned: one refused (unknown ids, out
  of bounds, no usable battery, another program at the same priority in the way) changes
  nothing, as a refused ``set_power`` always has.
* **What a bucket commands** (:meth:`Arbiter.application`): the merge's target on the batteries
  it holds. A bucket whose only proposal is a ``set_power`` is applied as ``set_power`` always
  was (its power, ``adjust_power`` and ``include_broken_batteries``): for one bid without bounds
  the merge would only clamp the power into ``[L, U]``, which the distribution does while
  reporting what it trimmed, and ``set_power``'s answer inside the exclusion zone is
  ``out_of_bounds``, not 0 W. Every other bucket (several bids, or a ``propose``) commands the
  merge's target.
* **``set_power`` at 0 W lets go**: the program's proposals overlapping the set end (withdrawn);
  ``propose`` at 0 W is a standing proposal that holds its batteries at 0 W.
* **The grants are remembered** (:meth:`Arbiter.granted`) from each bucket's last merge, for
  ``get_proposals``, the metrics and ``proposal_changed``.

The audit lines (``spec/arbitration.md``, "Audit and visibility") are written here as text, one
function per kind of decision, so that each names program, uid, pid, set, power, bounds and
grant in one format.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from distributord.core.arbitration import wire
from distributord.core.arbitration.holdings import (
    Accepted,
    Batteries,
    BatteriesFreed,
    Bucket,
    Change,
    Event,
    GrantChange,
    Proposal,
    ProposalEnded,
    ProposalPreempted,
    ProposalReturned,
    Refused,
    Registry,
    Why,
)
from distributord.core.arbitration.merge import Bid, Grant, Merge, Mode, Window, merge
from distributord.core.config import Config
from distributord.core.distribution import ZERO_POWER_W
from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    PartialFailure,
    PowerBounds,
    Request,
    Result,
    Success,
)
from distributord.core.values import ids_text


class Listener(Hashable, Protocol):
    """A connection that made proposals, told of what becomes of them (hashed by identity)."""

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        """Send a notification to the client, if it is still connected."""


@attrs.frozen(kw_only=True, eq=False)
class Origin:
    """Who asked: the program a connection acts as, the connection, and its peer.

    Attributes:
        program: The program's name.
        connection: The connection (told of its proposals' fate; ``until_disconnect`` ends with
            it).
        uid: The peer's uid.
        pid: The peer's pid.
    """

    program: str
    connection: Listener
    uid: int
    pid: int


@attrs.frozen(kw_only=True)
class Ask:
    """A ``set_power`` or a ``propose``, with who asked.

    Attributes:
        origin: Who asked.
        request: The request as the distribution and the reply see it: ``set_power``'s own; for
            ``propose``, its set and power (0 W for a limiter), ``adjust_power`` true.
        power_w: What the program wants for the set, or ``None`` (a limiter).
        lower_w: Its lower limit on every lower priority, or ``None``.
        upper_w: Its upper limit on every lower priority, or ``None``.
        ttl_s: Its lifetime, or ``None`` (standing).
        until_disconnect: Whether it ends with its connection.
        proposed: ``propose`` (the reply carries the ``arbitration`` object), not ``set_power``.
        call_id: The JSON-RPC id of the client's call (named when one of its commands fails
            after it was accepted: ``command_failed``).
    """

    origin: Origin
    request: Request
    power_w: float | None
    lower_w: float | None = None
    upper_w: float | None = None
    ttl_s: float | None = None
    until_disconnect: bool = False
    proposed: bool = False
    call_id: int | str | None = None

    @classmethod
    def set_power(cls, request: Request, origin: Origin) -> Ask:
        """``set_power``: a proposal with a power only; ``adjust_power: false`` pins its bounds."""
        pinned = None if request.adjust_power else request.power_w
        return cls(
            origin=origin, request=request, power_w=request.power_w, lower_w=pinned, upper_w=pinned
        )

    @classmethod
    def propose(cls, propose: wire.Propose, origin: Origin) -> Ask:
        """``propose``: its request is its set and power (0 W for a limiter), adjusted."""
        request = Request(
            power_w=0.0 if propose.power_w is None else propose.power_w,
            batteries=propose.batteries,
            request_timeout_s=propose.request_timeout_s,
            reactive_var=propose.reactive_var,
        )
        return cls(
            origin=origin,
            request=request,
            power_w=propose.power_w,
            lower_w=propose.lower_w,
            upper_w=propose.upper_w,
            ttl_s=propose.ttl_s,
            until_disconnect=propose.until_disconnect,
            proposed=True,
        )

    @property
    def batteries(self) -> Batteries:
        """The set asked for: the proposal's bucket."""
        return self.request.batteries

    @property
    def releases(self) -> bool:
        """``set_power`` at 0 W (and no reactive power): the program lets go of these batteries."""
        reactive = self.request.reactive_var
        return (
            not self.proposed
            and abs(self.request.power_w) <= ZERO_POWER_W
            and (reactive is None or abs(reactive) <= ZERO_POWER_W)
        )


@attrs.frozen(kw_only=True)
class Trial:
    """A proposal tried on a copy of the arbiter: keep it with :meth:`Arbiter.commit`.

    Attributes:
        arbiter: The copy, with the proposal live.
        accepted: What the registry decided.
    """

    arbiter: Arbiter
    accepted: Accepted

    @property
    def bucket(self) -> Bucket:
        """The new proposal's bucket in the copy."""
        bucket = self.arbiter.registry.holdings().bucket(self.accepted.proposal.batteries)
        assert bucket is not None  # the proposal is live there
        return bucket


@attrs.frozen(kw_only=True)
class Notice:
    """A notification for a proposal's owner.

    Attributes:
        connection: The owner's connection.
        method: ``proposal_changed`` or ``proposal_ended``.
        params: Its params.
    """

    connection: Listener
    method: str
    params: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class _Changed:
    """A live proposal whose bucket lost or regained batteries in a change."""

    proposal: Proposal
    reason: GrantChange
    held: Batteries
    by: Proposal | None = None


@attrs.frozen(kw_only=True)
class Consequences:
    """What a change means for the shell: it writes, notifies, drops and re-plans as said.

    Attributes:
        lines: The audit lines (``info``), in order.
        ended: The notices to the owners of the proposals that ended.
        dropped: The buckets that ended: their wants are dropped (the ledger then sends 0 W at
            once to what nobody holds).
        replanned: The buckets that lost or regained batteries or a proposal: re-planned now,
            then :meth:`Arbiter.changed_notices` says whom to tell.
        ended_sets: The sets of the proposals that ended.
    """

    lines: tuple[str, ...] = ()
    ended: tuple[Notice, ...] = ()
    dropped: tuple[Batteries, ...] = ()
    replanned: tuple[Batteries, ...] = ()
    ended_sets: tuple[Batteries, ...] = ()
    changed: tuple[_Changed, ...] = ()


REACTIVE_MERGE_BOUNDS = PowerBounds.symmetric(PLAUSIBLE_LIMIT)
"""What the reactive merge is made over: any plausible ask fits (the split reports the rest)."""


def window_bounds(window: Window, bounds: PowerBounds) -> PowerBounds:
    """What a program may ask of a bucket, as ``out_of_bounds`` reports bounds.

    The window the higher priorities leave, within the bucket's aggregate ``bounds``. A
    :class:`~distributord.core.model.PowerBounds` always allows 0 W (``set_power`` at 0 W
    releases, whatever the window), so a window that excludes 0 reads as its part on one side
    of 0: a window of [1000, 10000] W is ``exclusion_upper`` 1000 W and ``inclusion_upper``
    10000 W, with nothing below 0. Unknown aggregate bounds give the window alone.
    """
    low, high = window.lower_w, window.upper_w
    values = (
        bounds.inclusion_lower,
        bounds.exclusion_lower,
        bounds.exclusion_upper,
        bounds.inclusion_upper,
    )
    if any(math.isnan(v) for v in values):
        bounds = PowerBounds(
            inclusion_lower=-math.inf,
            exclusion_lower=0.0,
            exclusion_upper=0.0,
            inclusion_upper=math.inf,
        )
    # Each side of 0: the window within that side's aggregate bounds; empty is nothing (0, 0).
    exclusion_upper = max(bounds.exclusion_upper, low, 0.0)
    inclusion_upper = min(high, bounds.inclusion_upper)
    if exclusion_upper > inclusion_upper:
        exclusion_upper = inclusion_upper = 0.0
    inclusion_lower = max(low, bounds.inclusion_lower)
    exclusion_lower = min(bounds.exclusion_lower, high, 0.0)
    if inclusion_lower > exclusion_lower:
        inclusion_lower = exclusion_lower = 0.0
    return PowerBounds(
        inclusion_lower=inclusion_lower + 0.0,
        exclusion_lower=exclusion_lower + 0.0,
        exclusion_upper=exclusion_upper + 0.0,
        inclusion_upper=inclusion_upper + 0.0,
    )


def limits_of(program: str, config: Config) -> tuple[float, float]:
    """``(max_charge_w, max_discharge_w)`` of a program as configured now (``inf``: none)."""
    found = config.programs.get(program)
    if found is None:
        return math.inf, math.inf
    charge = math.inf if found.max_charge_w is None else found.max_charge_w
    discharge = math.inf if found.max_discharge_w is None else found.max_discharge_w
    return charge, discharge


class Arbiter:
    """The live proposals and what made them (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self._asks: dict[int, Ask] = {}  # by proposal sequence
        self._granted: dict[int, float] = {}  # by proposal sequence: its last grant
        self._ended: dict[int, Ask] = {}  # the asks of the proposals the last change ended
        self._told: dict[int, float] = {}  # by proposal: the grant its owner last heard of

    def _copy(self) -> Arbiter:
        other = Arbiter()
        other.registry = self.registry.copy()
        other._asks = dict(self._asks)
        other._granted = dict(self._granted)
        other._told = dict(self._told)
        return other

    # --- changes --------------------------------------------------------------------------

    def trial(self, ask: Ask, *, priority: int, now: float) -> Trial | Refused:
        """Try ``ask`` on a copy; nothing here changes until :meth:`commit`."""
        copy = self._copy()
        decision = copy.registry.propose(
            program=ask.origin.program,
            priority=priority,
            batteries=ask.batteries,
            power_w=ask.power_w,
            lower_w=ask.lower_w,
            upper_w=ask.upper_w,
            ttl_s=ask.ttl_s,
            until_disconnect=ask.until_disconnect,
            connection=ask.origin.connection,
            now=now,
        )
        if isinstance(decision, Refused):
            return decision
        copy._asks[decision.proposal.sequence] = ask
        copy._forget()
        return Trial(arbiter=copy, accepted=decision)

    def commit(self, trial: Trial) -> None:
        """Keep what ``trial`` tried (it was made from this arbiter, with nothing in between)."""
        self.registry = trial.arbiter.registry
        self._asks = trial.arbiter._asks
        self._granted = trial.arbiter._granted
        self._ended = trial.arbiter._ended
        self._told = trial.arbiter._told

    def withdraw(
        self, program: str, batteries: Iterable[int] | None = None, *, overlapping: bool = False
    ) -> Change:
        """End a program's proposals (:meth:`Registry.withdraw`)."""
        change = self.registry.withdraw(program, batteries, overlapping=overlapping)
        self._forget()
        return change

    def expire(self, now: float) -> Change:
        """End the proposals whose ``ttl_s`` ran out."""
        change = self.registry.expire(now)
        self._forget()
        return change

    def disconnect(self, connection: Hashable) -> Change:
        """A connection closed: end its ``until_disconnect`` proposals."""
        change = self.registry.disconnect(connection)
        self._forget()
        return change

    def _forget(self) -> None:
        """Drop what is kept of proposals no longer live.

        Their asks stay readable (:meth:`ask`) until the next change, for the audit lines.
        """
        live = {p.sequence for p in self.registry.proposals()}
        self._ended = {s: a for s, a in self._asks.items() if s not in live}
        for sequence in self._ended:
            del self._asks[sequence]
            self._granted.pop(sequence, None)
            self._told.pop(sequence, None)

    # --- questions ------------------------------------------------------------------------

    def ask(self, proposal: Proposal) -> Ask | None:
        """The ask that made a live proposal, or one the last change ended."""
        return self._asks.get(proposal.sequence) or self._ended.get(proposal.sequence)

    def merge(
        self, bucket: Bucket, bounds: PowerBounds, config: Config, *, record: bool = True
    ) -> Merge:
        """The merge of ``bucket`` over the aggregate ``bounds`` of what it holds.

        Its grants are remembered (:meth:`granted`) unless ``record`` is false: a look at the
        bounds (``subscribe_bounds``) must not report grants that were never commanded.
        """
        bids = []
        for proposal in bucket.proposals:
            charge, discharge = limits_of(proposal.program, config)
            bids.append(
                Bid(
                    program=proposal.program,
                    priority=proposal.priority,
                    sequence=proposal.sequence,
                    power_w=proposal.power_w,
                    lower_w=proposal.lower_w,
                    upper_w=proposal.upper_w,
                    max_charge_w=charge,
                    max_discharge_w=discharge,
                )
            )
        merged = merge(bounds, bids, Mode(config.arbitration.merge))
        if record:
            for grant in merged.grants:
                self._granted[grant.bid.sequence] = grant.granted_w
        return merged

    def reactive_target(self, bucket: Bucket, config: Config) -> float | None:
        """The merge of the reactive parts of ``bucket``'s proposals, var (``spec/plant.md``).

        Those with a ``reactive_var`` merge as active powers do (priority, age, the merge
        mode), apart from them, over bounds wide enough to keep any plausible ask: what the
        inverters cannot take is the reactive split's to report. Operator limits and
        ``lower_w``/``upper_w`` are active power's. ``None`` when no proposal asks any.
        """
        bids = []
        for proposal in bucket.proposals:
            ask = self._asks.get(proposal.sequence)
            reactive = None if ask is None else ask.request.reactive_var
            if reactive is not None:
                bids.append(
                    Bid(
                        program=proposal.program,
                        priority=proposal.priority,
                        sequence=proposal.sequence,
                        power_w=reactive,
                    )
                )
        if not bids:
            return None
        return merge(REACTIVE_MERGE_BOUNDS, bids, Mode(config.arbitration.merge)).target_w

    def granted(self, proposal: Proposal) -> float | None:
        """A live proposal's grant in its bucket's last merge (``None``: not merged yet)."""
        return self._granted.get(proposal.sequence)

    def application(
        self, bucket: Bucket, merged: Merge | None, reactive_var: float | None = None
    ) -> Request | None:
        """What ``bucket`` commands now: a request on the batteries it holds (module docstring).

        ``None`` when it holds none, or when it needs a merge and ``merged`` is ``None``. A lone
        ``set_power`` commands its own request (its ``reactive_var`` too); a merge commands
        ``merged``'s target and ``reactive_var`` (:meth:`reactive_target`).
        """
        if not bucket.held:
            return None
        asks = [self._asks[p.sequence] for p in bucket.proposals if p.sequence in self._asks]
        newest = max(bucket.proposals, key=lambda p: p.sequence)
        timeout = self._asks[newest.sequence].request.request_timeout_s
        if len(asks) == 1 and len(bucket.proposals) == 1 and not asks[0].proposed:
            return attrs.evolve(asks[0].request, batteries=bucket.held)
        if merged is None:
            return None
        return Request(
            power_w=merged.target_w,
            batteries=bucket.held,
            request_timeout_s=timeout,
            include_broken_batteries=any(a.request.include_broken_batteries for a in asks),
            reactive_var=reactive_var,
        )

    def grant_of(self, merged: Merge, proposal: Proposal) -> Grant | None:
        """A proposal's grant in ``merged``."""
        return next((g for g in merged.grants if g.bid.sequence == proposal.sequence), None)

    def consequences(
        self,
        events: Iterable[Event],
        *,
        causer: Hashable | None = None,
        new: Proposal | None = None,
    ) -> Consequences:
        """What the events of a change mean (the shell carries it out).

        Args:
            events: The change's events, in order.
            causer: The connection whose request made the change, if any: its own update (same
                set) or withdrawal is answered by its reply, so its owner is not told of it.
                Everything else that ends a proposal (superseded, expired, disconnected,
                another connection's doing) is told.
            new: The proposal the change made, if any: its bucket's application follows, so it
                is not re-planned here.
        """
        lines: list[str] = []
        ended: list[Notice] = []
        ended_sets: list[Batteries] = []
        touched: dict[Batteries, None] = {}
        changed: list[_Changed] = []
        for event in events:
            match event:
                case ProposalEnded(proposal=proposal, why=why, by=by_proposal):
                    ended_sets.append(proposal.batteries)
                    touched[proposal.batteries] = None
                    origin = self._origin(proposal)
                    lines.append(ended_line(proposal, origin, why.value, by_proposal))
                    own = origin is not None and origin.connection is causer
                    if origin is not None and not (own and why in (Why.REPLACED, Why.WITHDRAWN)):
                        ended.append(
                            Notice(
                                connection=origin.connection,
                                method="proposal_ended",
                                params=wire.proposal_ended_params(event),
                            )
                        )
                case ProposalPreempted(proposal=proposal, batteries=taken, by=taker, held=held):
                    touched[proposal.batteries] = None
                    origin = self._origin(proposal)
                    lines.append(preempted_line(proposal, origin, taken, taker, held))
                    changed.append(
                        _Changed(
                            proposal=proposal, reason=GrantChange.PREEMPTED_BY, held=held, by=taker
                        )
                    )
                case ProposalReturned(proposal=proposal, batteries=back, held=held):
                    touched[proposal.batteries] = None
                    origin = self._origin(proposal)
                    lines.append(returned_line(proposal, origin, back, held))
                    changed.append(
                        _Changed(proposal=proposal, reason=GrantChange.RETURNED, held=held)
                    )
                case BatteriesFreed(batteries=freed):
                    lines.append(
                        f"batteries [{ids_text(freed)}] freed: no proposal holds them; "
                        "commanded 0 W"
                    )
        if new is not None:
            touched.pop(new.batteries, None)
        holdings = self.registry.holdings()
        return Consequences(
            lines=tuple(lines),
            ended=tuple(ended),
            dropped=tuple(b for b in touched if holdings.bucket(b) is None),
            replanned=tuple(b for b in touched if holdings.bucket(b) is not None),
            ended_sets=tuple(ended_sets),
            changed=tuple(changed),
        )

    def changed_notices(self, consequences: Consequences, *, skip: Proposal | None) -> list[Notice]:
        """After the re-plans: ``proposal_changed`` to each owner whose grant others changed.

        Preempted and returned proposals are told with their new grant and what their bucket
        holds; the other proposals of the re-planned buckets only when their grant moved since
        their owner last heard of it (``narrowed``). ``skip`` is the proposal whose own request
        made the change (its reply tells it).
        """
        notices: list[Notice] = []
        told: set[int] = set()
        live = {p.sequence for p in self.registry.proposals()}
        for change in consequences.changed:
            proposal = change.proposal
            origin = self._origin(proposal)
            if origin is None or proposal.sequence not in live:
                continue
            granted = self._granted.get(proposal.sequence, 0.0)
            told.add(proposal.sequence)
            self._told[proposal.sequence] = granted
            notices.append(
                Notice(
                    connection=origin.connection,
                    method="proposal_changed",
                    params=wire.proposal_changed_params(
                        proposal.batteries,
                        granted,
                        [change.reason],
                        held=change.held,
                        preempted_by=change.by,
                    ),
                )
            )
        holdings = self.registry.holdings()
        for batteries in consequences.replanned:
            bucket = holdings.bucket(batteries)
            if bucket is None:
                continue
            for proposal in bucket.proposals:
                if proposal is skip or proposal.sequence in told:
                    continue
                origin = self._origin(proposal)
                now = self._granted.get(proposal.sequence)
                if origin is None or now is None:
                    continue
                heard = self._told.get(proposal.sequence)
                self._told[proposal.sequence] = now
                if heard is None or heard == now:
                    continue  # it never heard of one (its reply is on its way), or no change
                notices.append(
                    Notice(
                        connection=origin.connection,
                        method="proposal_changed",
                        params=wire.proposal_changed_params(
                            proposal.batteries, now, [GrantChange.NARROWED], held=bucket.held
                        ),
                    )
                )
        return notices

    def heard(self, proposal: Proposal, granted: float | None) -> None:
        """The owner of ``proposal`` learnt its grant (from its reply)."""
        live = any(p.sequence == proposal.sequence for p in self.registry.proposals())
        if granted is not None and live:  # one that ended meanwhile is not kept
            self._told[proposal.sequence] = granted

    def available(self, batteries: Batteries, priority: int) -> Batteries:
        """Those of ``batteries`` a proposal on exactly this set at ``priority`` would hold.

        The free ones, those of the bucket on this very set, and those held by a bucket of
        lower top priority (``subscribe_bounds``: what a program may still ask).
        """
        holdings = self.registry.holdings()
        return frozenset(
            b
            for b in batteries
            if (holder := holdings.holder(b)) is None
            or holder.batteries == batteries
            or holder.priority < priority
        )

    def _origin(self, proposal: Proposal) -> Origin | None:
        ask = self.ask(proposal)
        return None if ask is None else ask.origin

    def figures(self) -> dict[str, tuple[int, float]]:
        """Per program: live proposals, and the sum of their last grants (W)."""
        figures: dict[str, tuple[int, float]] = {}
        for proposal in self.registry.proposals():
            count, granted = figures.get(proposal.program, (0, 0.0))
            figures[proposal.program] = (
                count + 1,
                granted + self._granted.get(proposal.sequence, 0.0),
            )
        return figures


# --- the audit lines ------------------------------------------------------------------------


def _w(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} W"


def _who(origin: Origin | None, program: str) -> str:
    if origin is None:
        return f"program {program}"
    return f"program {program} (uid {origin.uid}, pid {origin.pid})"


def describe(proposal: Proposal, origin: Origin | None) -> str:
    """A proposal in an audit line: who, set, power, bounds, lifetime."""
    life = (
        "until disconnect"
        if proposal.until_disconnect
        else "standing"
        if proposal.ttl_s is None
        else f"ttl {proposal.ttl_s:g} s"
    )
    return (
        f"{_who(origin, proposal.program)} at priority {proposal.priority}: "
        f"[{ids_text(proposal.batteries)}] power {_w(proposal.power_w)} "
        f"bounds [{_w(proposal.lower_w)}, {_w(proposal.upper_w)}], {life}"
    )


def accepted_line(proposal: Proposal, origin: Origin, grant: float | None, held: Batteries) -> str:
    """A proposal was applied."""
    return (
        f"proposal by {describe(proposal, origin)}: granted {_w(grant)}, holds [{ids_text(held)}]"
    )


def refused_line(ask: Ask, holder: Proposal, holder_origin: Origin | None) -> str:
    """A proposal was refused: another program holds an overlapping set at the same priority."""
    return (
        f"proposal by {_who(ask.origin, ask.origin.program)} for [{ids_text(ask.batteries)}] "
        f"power {_w(ask.power_w)} bounds [{_w(ask.lower_w)}, {_w(ask.upper_w)}] refused: "
        f"{_who(holder_origin, holder.program)} holds [{ids_text(holder.batteries)}] at the same "
        f"priority {holder.priority}"
    )


def refused_message(holder: Proposal) -> str:
    """The reply's message for a refused proposal."""
    return (
        f"refused: program {holder.program} holds batteries [{ids_text(holder.batteries)}] at "
        f"the same priority ({holder.priority}); a set that overlaps it without being equal "
        "cannot be proposed for"
    )


def ended_line(proposal: Proposal, origin: Origin | None, why: str, by: Proposal | None) -> str:
    """A proposal ended (replaced, superseded, withdrawn, expired, disconnected)."""
    tail = "" if by is None else f" by [{ids_text(by.batteries)}]"
    return f"proposal by {describe(proposal, origin)} ended: {why}{tail}"


def preempted_line(
    proposal: Proposal, origin: Origin | None, taken: Batteries, by: Proposal, held: Batteries
) -> str:
    """A higher bucket took batteries from a proposal's bucket."""
    return (
        f"proposal by {describe(proposal, origin)} preempted on [{ids_text(taken)}] by program "
        f"{by.program} (priority {by.priority}, [{ids_text(by.batteries)}]): holds "
        f"[{ids_text(held)}]"
    )


def returned_line(
    proposal: Proposal, origin: Origin | None, back: Batteries, held: Batteries
) -> str:
    """Batteries came back to a proposal's bucket."""
    return (
        f"proposal by {describe(proposal, origin)} got back [{ids_text(back)}]: holds "
        f"[{ids_text(held)}]"
    )


def answer_for(
    result: Success | PartialFailure,
    ask: Ask,
    *,
    merged: Merge,
    grant: Grant | None,
    lone: bool,
    elsewhere: Mapping[int, str],
) -> Result:
    """The result of an applied ask: its own request echoed, its shortfall, and why.

    A lone ``set_power`` (its bucket commands its power) reports the distribution's shortfall
    as always. Otherwise the bucket commanded the merge's target: the ask's shortfall is what it
    was not granted plus its share of what the distribution could not place.
    """
    reasons = {**result.reasons, **elsewhere}
    excess = result.excess_power_w
    if not lone:
        asked = ask.power_w or 0.0
        granted = 0.0 if grant is None else grant.granted_w
        share = granted / merged.target_w if merged.target_w else 0.0
        excess = (asked - granted) + result.excess_power_w * share
    arbitration = wire.arbitration_object(grant, merged) if ask.proposed and grant else None
    return attrs.evolve(
        result,
        request=ask.request,
        excess_power_w=excess + 0.0,
        reasons=reasons,
        arbitration=arbitration,
    )


def held_elsewhere(bucket: Bucket, holder_of: Mapping[int, Bucket]) -> dict[int, str]:
    """Why each battery of ``bucket``'s set that it does not hold got no power from it."""
    reasons = {}
    for battery in sorted(bucket.batteries - bucket.held):
        holder = holder_of.get(battery)
        if holder is not None:
            reasons[battery] = f"held by program {holder.top.program} (priority {holder.priority})"
    return reasons
