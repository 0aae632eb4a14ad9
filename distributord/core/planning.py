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
4. ``Error`` also for arguments the distribution refuses (an exponent out of its range, which
   the config refuses too): every input gets a result, never an exception.

:func:`summarize` counts only the power of commands that succeeded as succeeded power (the
reference design counted the failed power too).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import attrs

from distributord.core.distribution import (
    Distribution,
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


def plan(
    request: Request,
    pairs: Sequence[Pair],
    *,
    exponent: float,
    broken: Mapping[int, Sequence[PowerBounds]] | None = None,
    search_budget: SearchBudget | None = None,
) -> Distribution | OutOfBounds | Error:
    """Decide what to command for ``request``.

    Args:
        request: The validated request.
        pairs: The pairs chosen for it (:func:`choose`: working, else uncertain; with
            ``include_broken_batteries`` also those with fresh-enough cached telemetry).
        exponent: The distribution exponent.
        broken: With ``include_broken_batteries``: the requested batteries that have no usable
            pair, with the last known bounds of their battery and inverter (none, one or both).
        search_budget: How long the search over exclusion minimums may take (the caller's
            clock; the core reads none).

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
    if usable:
        bounds = aggregate_bounds(usable)
        if not check_power(request.power_w, bounds, adjust_power=request.adjust_power):
            return OutOfBounds(request=request, bounds=bounds)
    try:
        return _split(request, pairs, usable, broken, exponent, search_budget)
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
    search_budget: SearchBudget | None,
) -> Distribution:
    """:func:`plan`'s distribution, once the request is accepted."""
    # Pairs with bad telemetry are passed along so the distribution names them as excluded.
    if not broken:
        return distribute(request.power_w, pairs, exponent=exponent, search_budget=search_budget)
    if usable:
        first = distribute(request.power_w, pairs, exponent=exponent, search_budget=search_budget)
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
    request: Request, distribution: Distribution, failed: Collection[int]
) -> Success | PartialFailure:
    """The result of a request whose setpoints were sent.

    Args:
        request: The request.
        distribution: What was commanded (every battery in ``setpoints`` was commanded).
        failed: Batteries whose command failed or did not answer in time.

    Returns:
        ``Success`` if no command failed, else ``PartialFailure``.
    """
    setpoints = distribution.setpoints
    failed_set = frozenset(b for b in failed if b in setpoints)
    succeeded = frozenset(setpoints) - failed_set
    reasons = {bid: str(reason) for bid, reason in distribution.reasons.items()}
    succeeded_power = math.fsum(setpoints[b] for b in succeeded)
    if not failed_set:
        return Success(
            request=request,
            succeeded_power_w=succeeded_power,
            succeeded_batteries=succeeded,
            excess_power_w=distribution.remaining_w,
            distribution=dict(setpoints),
            reasons=reasons,
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
    )
