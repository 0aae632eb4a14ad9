"""From a request and the pairs' telemetry to what to command, and from outcomes to a result.

Theory of operation
-------------------
The request loop (IO shell) calls :func:`choose` for the pairs a request uses, :func:`plan` with
them, sends the setpoints, and calls :func:`summarize` with the batteries whose command failed.
All three are pure.

:func:`choose` takes the working batteries among those requested, else (none working) the
uncertain ones, with the pairs built from their latest telemetry (a battery whose pair is not
complete yet is skipped). With ``include_broken_batteries`` every other requested battery is
added: on its cached pair if both sides' last valid snapshots are younger than the cache's time
to live at ``now``, else as *broken*, with the last known bounds of its battery and inverter.

:func:`plan` answers, in order:

1. ``Error`` when no usable pair (with valid telemetry) is left and nothing broken is included
   ("no usable batteries among ..."), or when the usable pairs' capacity adds up to zero;
2. ``OutOfBounds`` when the request check refuses the power against the usable pairs'
   aggregate bounds (0 W is always accepted);
3. otherwise the :class:`~distributord.core.distribution.Distribution` to command. With
   ``include_broken_batteries`` the power the usable pairs leave (all of it, if there are none)
   is split equally across the requested batteries that are not usable; what they leave is
   rounded toward zero first, so the total never exceeds the request;
4. ``Error`` also for arguments the distribution refuses (an exponent or a derating band out of
   its range, which the config refuses too): every input gets a result, never an exception.

The aggregate bounds and the split both see the caps derated near the SoC bounds
(``derate_band_pct``, ``spec/distribution.md`` "SoC derating").

:func:`summarize` counts only the power of commands that succeeded as succeeded power (the
reference design counted the failed power too).

**Power the daemon cannot command** (``spec/distribution.md``). :func:`uncommanded` names the
requested batteries a plan does not use (not working, blocked, unusable telemetry, no telemetry
yet), each with why, and the fresh measured AC power of their inverters; it takes that power off
the request (:func:`~distributord.core.compensation.compensate`: towards zero, never past it).
:func:`plan` then checks the request as asked against the bounds (a compensation never turns an
accepted request into a refusal) and splits the compensated power (``split_w``).
:func:`summarize` gives every requested battery that got no power a reason in ``reasons``, and
reports the measured power and what was and was not taken off. Batteries of the request that
another program holds are not the plan's: the arbitration names them, and their power, which we
command for that program, is never counted here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import attrs

from distributord.core.compensation import Compensation, compensate
from distributord.core.distribution import (
    Distribution,
    Limit,
    Pair,
    SearchBudget,
    aggregate_bounds,
    check_power,
    combine,
    distribute,
    leftover,
    split_equally,
)
from distributord.core.errors import DistributionInputError
from distributord.core.fleet import Fleet
from distributord.core.model import (
    Error,
    OutOfBounds,
    PartialFailure,
    PowerBounds,
    Request,
    Success,
)
from distributord.core.status import Status, select
from distributord.core.values import floats32_toward_zero, ids_brief, ids_text


def unknown_batteries(
    request: Request, known: Collection[int], left_out: Mapping[int, str] | None = None
) -> Error | None:
    """An ``Error`` naming the requested batteries the daemon does not manage, if any.

    A battery the microgrid reports but the topology left out is named with the reason, not
    called unknown; a long list of known batteries is written as runs (:func:`ids_brief`).
    """
    missing = request.batteries - set(known)
    if not missing:
        return None
    left_out = left_out or {}
    parts = []
    unknown = sorted(b for b in missing if b not in left_out)
    if unknown:
        parts.append(f"unknown batteries [{ids_text(unknown)}]")
    parts.extend(
        f"battery {b} is not managed: {left_out[b]}" for b in sorted(missing) if b in left_out
    )
    parts.append(f"known batteries: [{ids_brief(known)}]")
    return Error(request=request, message="; ".join(parts))


@attrs.frozen(kw_only=True)
class Choice:
    """The batteries a request uses, as :func:`plan` takes them.

    Attributes:
        pairs: Their pairs, in battery id order: the selected batteries' (working, else
            uncertain), then, with ``include_broken_batteries``, the cached ones.
        broken: With ``include_broken_batteries``: the other requested batteries that have no
            fresh cached pair, with the last known bounds of their battery and inverter (none,
            one or both).
    """

    pairs: Sequence[Pair]
    broken: Mapping[int, Sequence[PowerBounds]]


def choose(
    request: Request,
    statuses: Mapping[int, Status],
    fleet: Fleet,
    *,
    now: float,
    cache_ttl_s: float,
) -> Choice:
    """Choose the pairs for ``request`` (see the module docstring).

    Args:
        request: The validated request; every battery in it is managed (the caller has
            answered unknown ones with :func:`unknown_batteries`).
        statuses: Battery id to its current status (ids not requested are ignored).
        fleet: The latest telemetry, and the cache of the last valid snapshots.
        now: The current time, on the clock of the snapshots' ``received_at``.
        cache_ttl_s: How old cached telemetry may be for ``include_broken_batteries``.

    Returns:
        The pairs to plan with, and the broken batteries to share what they leave.
    """
    selected = select(statuses, request.batteries)
    pairs = [pair for b in sorted(selected) if (pair := fleet.pair(b)) is not None]
    broken: dict[int, tuple[PowerBounds, ...]] = {}
    if request.include_broken_batteries:
        for battery in sorted(request.batteries - selected):
            cached = fleet.cached_pair(battery, now=now, ttl_s=cache_ttl_s)
            if cached is not None:
                pairs.append(cached)
                continue
            inverter = fleet.inverter_of[battery]
            broken[battery] = tuple(
                snapshot.bounds
                for snapshot in (fleet.batteries.get(battery), fleet.inverters.get(inverter))
                if snapshot is not None
            )
    return Choice(pairs=tuple(pairs), broken=broken)


@attrs.frozen(kw_only=True)
class Unused:
    """A requested battery that a plan does not command.

    Attributes:
        why: Why it is not used: its status and the status's reasons (``uncertain
            (blocked_after_failure)``, ``not_working (stale_inverter_data)``), or what is wrong
            with its telemetry.
        measured_w: The fresh measured AC power of its inverter, W; None when there is none
            (always for a hybrid inverter: its measured power includes its PV's).
        hybrid: Its inverter is hybrid.
    """

    why: str
    measured_w: float | None
    hybrid: bool = False


@attrs.frozen(kw_only=True)
class Uncommanded:
    """The requested batteries a plan does not command, and what their power does to it.

    Attributes:
        unused: Battery id to why it is not used and what it was measured at.
        compensation: The request with their fresh measured power taken off.
        enabled: ``distribution.compensate_unused``.
    """

    unused: Mapping[int, Unused]
    compensation: Compensation
    enabled: bool = True

    def reasons(self) -> dict[int, str]:
        """Battery id to the reason the result gives for each unused battery."""
        reasons = {}
        for battery, unused in self.unused.items():
            if unused.hybrid:
                note = "a hybrid inverter's measured power includes its PV: not compensated"
            elif unused.measured_w is None:
                note = "no fresh measured power: not compensated"
            elif self.enabled:
                note = f"measured {unused.measured_w:.1f} W, counted against the request"
            else:
                note = (
                    f"measured {unused.measured_w:.1f} W, not counted "
                    "(distribution.compensate_unused is off)"
                )
            reasons[battery] = f"{unused.why}; {note}"
        return reasons


def uncommanded(
    request: Request,
    choice: Choice,
    statuses: Mapping[int, Status],
    fleet: Fleet,
    *,
    status_reasons: Mapping[int, Collection[str]] | None = None,
    now: float,
    max_age_s: float,
    enabled: bool = True,
) -> Uncommanded:
    """The batteries of ``request`` that ``choice`` does not use, and the compensated request.

    Args:
        request: The request as planned (for arbitration, the bucket's application: the
            batteries another program holds are not in it).
        choice: What :func:`choose` chose for it.
        statuses: Battery id to its status.
        fleet: The latest telemetry (the inverters' measured power).
        status_reasons: Battery id to its status's reasons (none given: the status alone).
        now: The current time, on the clock of the snapshots' ``received_at``.
        max_age_s: How old a measurement may be (``status.max_data_age_s``).
        enabled: ``distribution.compensate_unused``.

    Returns:
        Each unused battery with why and its measured power, and the request less that power.
    """
    status_reasons = status_reasons or {}
    problems = {p.battery_id: p.problem for p in choice.pairs if p.problem is not None}
    left = request.batteries.difference(choice.broken, (p.battery_id for p in choice.pairs))
    unused: dict[int, Unused] = {}
    for battery in sorted(left.union(problems)):
        problem = problems.get(battery)
        status = statuses.get(battery)
        if problem is not None:
            why = f"unusable telemetry ({problem})"
        elif status is None or status is Status.WORKING:
            why = "no telemetry yet"
        else:
            listed = ", ".join(sorted(str(r) for r in status_reasons.get(battery, ())))
            why = f"{status.value} ({listed})" if listed else status.value
        measured = fleet.measured_power_w(battery, now=now, max_age_s=max_age_s)
        hybrid = fleet.inverter_of.get(battery) in fleet.hybrid
        unused[battery] = Unused(why=why, measured_w=measured, hybrid=hybrid)
    measured_w = {b: u.measured_w for b, u in unused.items() if u.measured_w is not None}
    return Uncommanded(
        unused=unused,
        compensation=compensate(request.power_w, measured_w, enabled=enabled),
        enabled=enabled,
    )


def plan(
    request: Request,
    pairs: Sequence[Pair],
    *,
    exponent: float,
    derate_band_pct: float = 0.0,
    broken: Mapping[int, Sequence[PowerBounds]] | None = None,
    search_budget: SearchBudget | None = None,
    split_w: float | None = None,
    limits: Sequence[Limit] = (),
) -> Distribution | OutOfBounds | Error:
    """Decide what to command for ``request``.

    Args:
        request: The validated request.
        pairs: The pairs chosen for it (:func:`choose`: working, else uncertain; with
            ``include_broken_batteries`` also those with fresh-enough cached telemetry).
        exponent: The distribution exponent.
        derate_band_pct: The SoC derating band (``distribution.derate_band_pct``; 0: off),
            for the aggregate bounds and the split alike.
        broken: With ``include_broken_batteries``: the requested batteries that have no usable
            pair, with the last known bounds of their battery and inverter (none, one or both).
        search_budget: How long the search over exclusion minimums may take (the caller's
            clock; the core reads none).
        split_w: The power to split when it is not the request's: the request less the power
            of the batteries it does not use (:func:`uncommanded`). Between 0 and the request.
        limits: Group limits over the pairs' inverters (``spec/plant.md``), their maxima what
            is left of them beside the inverters outside the request: in the aggregate bounds
            and the split alike.

    Returns:
        What to command, or why nothing will be.
    """
    broken = dict(broken or {})
    usable = [p for p in pairs if p.problem is None]
    if not usable and not broken:
        left_out = "; ".join(p.problem for p in pairs if p.problem is not None)
        return Error(
            request=request,
            message=f"no usable batteries among [{ids_text(request.batteries)}]"
            + (f" ({left_out})" if left_out else ""),
        )
    if usable and not broken and math.fsum(p.battery.capacity_wh for p in usable) <= 0.0:
        return Error(
            request=request,
            message="zero total capacity among batteries "
            f"[{ids_text(p.battery_id for p in usable)}]",
        )
    try:
        if usable:
            bounds = aggregate_bounds(usable, derate_band_pct=derate_band_pct, limits=limits)
            if not check_power(request.power_w, bounds, adjust_power=request.adjust_power):
                return OutOfBounds(request=request, bounds=bounds)
        if split_w is not None and split_w != request.power_w:
            request = attrs.evolve(request, power_w=split_w)
        return _split(
            request, pairs, usable, broken, exponent, derate_band_pct, search_budget, limits
        )
    except DistributionInputError as error:
        # An argument the algorithm refuses (an exponent the config would have refused, say)
        # is an answer to this request, not an exception in the request loop.
        return Error(request=request, message=f"cannot distribute: {error}")


def _split(
    request: Request,
    pairs: Sequence[Pair],
    usable: Sequence[Pair],
    broken: Mapping[int, Sequence[PowerBounds]],
    exponent: float,
    derate_band_pct: float,
    search_budget: SearchBudget | None,
    limits: Sequence[Limit] = (),
) -> Distribution:
    """:func:`plan`'s distribution, once the request is accepted."""
    # Pairs with bad telemetry are passed along so the distribution names them as excluded.
    if not broken or usable:
        first = distribute(
            request.power_w,
            pairs,
            exponent=exponent,
            derate_band_pct=derate_band_pct,
            search_budget=search_budget,
            limits=limits,
        )
        if not broken:
            return first
        # What is left rounded toward zero: shared out, it never takes the total past the request.
        rest = leftover(first)
        return combine(first, split_equally(rest, broken, search_budget=search_budget))
    shared = split_equally(request.power_w, broken, search_budget=search_budget)
    excluded = {p.battery_id: p.problem for p in pairs if p.problem is not None}
    return Distribution(
        power_w=request.power_w,
        setpoints=shared.setpoints,
        reasons=shared.reasons,
        remaining_w=shared.remaining_w,
        excluded=excluded,
    )


def as_sent(distribution: Distribution) -> Distribution:
    """``distribution`` as the wire carries it: every setpoint a float32, rounded toward zero.

    Commands travel as 32-bit floats; rounded to nearest they could add up to more than the
    request (three thirds of 1000 W arrive as 1000.00003 W). Rounded toward zero no setpoint
    grows, what they lose is added to ``remaining_w`` (reported as excess), and the result then
    says exactly what was commanded.
    """
    sent = dict(
        zip(
            distribution.setpoints,
            floats32_toward_zero(list(distribution.setpoints.values())),
            strict=True,
        )
    )
    if sent == distribution.setpoints:
        return distribution
    # One exact sum, rounded once: the loss summed apart first (one rounding) would drop a part
    # far below its ulp, e.g. 2.9e-198 W lost beside 1.8e-15 W (found by CI's profile).
    remaining = math.fsum(
        [distribution.remaining_w, *distribution.setpoints.values(), *(-p for p in sent.values())]
    )
    return attrs.evolve(distribution, setpoints=sent, remaining_w=remaining)


def summarize(
    request: Request,
    distribution: Distribution,
    failed: Collection[int],
    uncommanded: Uncommanded | None = None,
) -> Success | PartialFailure:
    """The result of a request whose setpoints were sent.

    Args:
        request: The request.
        distribution: What was commanded (every battery in ``setpoints`` was commanded).
        failed: Batteries whose command failed or did not answer in time.
        uncommanded: The requested batteries the plan did not use (:func:`uncommanded`), if
            it was made with them.

    Returns:
        ``Success`` if no command failed, else ``PartialFailure``. Every battery of the plan
        that got no power has a reason: its allotment, what is wrong with its telemetry, or why
        it was not used with what its inverter measured.
    """
    setpoints = distribution.setpoints
    failed_set = frozenset(b for b in failed if b in setpoints)
    succeeded = frozenset(setpoints) - failed_set
    reasons = {bid: f"unusable telemetry ({why})" for bid, why in distribution.excluded.items()}
    reasons.update({bid: str(reason) for bid, reason in distribution.reasons.items()})
    measured: dict[int, float] = {}
    compensated = uncompensated = 0.0
    if uncommanded is not None:
        reasons.update(uncommanded.reasons())
        measured = dict(uncommanded.compensation.measured_w)
        compensated = uncommanded.compensation.compensated_w
        uncompensated = uncommanded.compensation.uncompensated_w
    succeeded_power = math.fsum(setpoints[b] for b in succeeded)
    if not failed_set:
        return Success(
            request=request,
            succeeded_power_w=succeeded_power,
            succeeded_batteries=succeeded,
            excess_power_w=distribution.remaining_w,
            distribution=dict(setpoints),
            reasons=reasons,
            unused_power_w=measured,
            compensated_power_w=compensated,
            uncompensated_power_w=uncompensated,
            bound_limits=distribution.bound_limits,
        )
    return PartialFailure(
        request=request,
        succeeded_power_w=succeeded_power,
        succeeded_batteries=succeeded,
        failed_power_w=math.fsum(setpoints[b] for b in failed_set),
        failed_batteries=failed_set,
        excess_power_w=distribution.remaining_w,
        distribution=dict(setpoints),
        reasons=reasons,
        unused_power_w=measured,
        compensated_power_w=compensated,
        uncompensated_power_w=uncompensated,
        bound_limits=distribution.bound_limits,
    )
