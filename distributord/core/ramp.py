"""Ramp rates: how fast a bucket's applied power may move (``spec/plant.md``, "Ramp rates").

Theory of operation
-------------------
Grid codes limit how fast a battery site's power may change after an instruction (Germany:
0.33–0.66 % of rated power per second; ±10 %/min in several others), and exempt frequency
response. ``[ramp] max_w_per_s`` sets the limit for a bucket (the batteries one merge commands);
a program with ``ramp_exempt`` has its grant move at once.

A bucket's target is the sum of its programs' grants. Its exempt part ``E`` (the grants of exempt
programs) is applied as it is; the rest, ``T - E``, is *ramped*: the part applied so far, ``R``,
moves toward it by at most ``rate × elapsed`` each time the bucket is applied
(:func:`step_toward`), where ``elapsed`` is the time since ``R`` was last applied, at most one
step (``ramp.step_s``): time the ramp stood still is not banked for a later jump. So between any
two applications the ramped part never moves faster than the rate, however the applications are
timed: a new target in the middle of a ramp ramps from where the power is, and the request loop
re-applies a ramping bucket every ``ramp.step_s`` until it reaches its target.

* **A direction change passes through 0.** A step that would carry ``R`` across zero ends at
  exactly 0 W, and the next step goes on from there: no battery is switched from discharge to
  charge within one step, and the ramp never overshoots the target.
* **Where the power is.** What the distribution could not place (``remaining``) was never
  applied: the next step starts from what was placed, the shortfall taken off the ramped part
  first (:func:`start_from`), so a battery that becomes able to take power later is ramped to it,
  not jumped.
* **Exact.** ``|R' - R| <= rate × elapsed`` holds in exact arithmetic for the floats returned,
  and ``R'`` lies between ``R`` and the target: the tests check both with fractions.

Pure: time is passed in.
"""

from __future__ import annotations

import math
from fractions import Fraction

import attrs


@attrs.frozen(kw_only=True)
class Ramp:
    """One bucket's ramp, as last applied.

    Attributes:
        ramped_w: The ramped part of the applied target (the target less its exempt part), W.
        at: When it was applied (the daemon's clock, s).
    """

    ramped_w: float
    at: float


@attrs.frozen(kw_only=True)
class Step:
    """One application of a ramped target.

    Attributes:
        applied_w: What the bucket applies now: its exempt part and the ramped part, W.
        ramp: The ramp's state after this application.
        target_w: The whole target it ramps to, W.
        eta_s: The time until the ramped part reaches its target at the rate, applied once a
            step, s (0: reached).
    """

    applied_w: float
    ramp: Ramp
    target_w: float
    eta_s: float

    @property
    def ramping(self) -> bool:
        """Whether the target is not reached yet."""
        return self.eta_s > 0.0


def _within(start: float, end: float, limit: Fraction) -> bool:
    return abs(Fraction(end) - Fraction(start)) <= limit


def step_toward(previous_w: float, target_w: float, elapsed_s: float, rate_w_per_s: float) -> float:
    """Where a ramped power is after ``elapsed_s``, moving toward ``target_w`` at the rate.

    The result lies between ``previous_w`` and ``target_w`` (both included), is at most
    ``rate × elapsed`` away from ``previous_w`` (exactly), and is exactly 0 when the move would
    cross zero.

    Args:
        previous_w: Where the power was last applied, W.
        target_w: Where it is to go, W.
        elapsed_s: The time since it was applied (negative counts as 0), s.
        rate_w_per_s: The largest change per second, W/s (``inf``: at once; 0: never moves).
    """
    if target_w == previous_w:
        return target_w
    elapsed_s = max(0.0, elapsed_s)
    # A direction change stops at zero first.
    crosses = (previous_w > 0.0 and target_w < 0.0) or (previous_w < 0.0 and target_w > 0.0)
    goal = 0.0 if crosses else target_w
    if math.isinf(rate_w_per_s) and elapsed_s > 0.0:
        return goal
    if math.isinf(rate_w_per_s):
        return previous_w
    limit = Fraction(rate_w_per_s) * Fraction(elapsed_s)
    if not math.isinf(goal) and _within(previous_w, goal, limit):
        return goal
    # The float nearest the exact move, or its neighbour toward the start if that is past it.
    exact = Fraction(previous_w) + (limit if goal > previous_w else -limit)
    result = float(exact)
    if not _within(previous_w, result, limit):
        result = math.nextafter(result, previous_w)
    return result


def start_from(ramped_w: float, shortfall_w: float) -> float:
    """Where the ramped part stands when the last application could not place all of it.

    Args:
        ramped_w: The ramped part that was applied, W.
        shortfall_w: What the distribution could not place of the whole target (same sign as
            the target it was asked; 0 when everything was placed), W.

    Returns:
        ``ramped_w`` less the shortfall, toward zero and never past it.
    """
    if shortfall_w == 0.0 or ramped_w == 0.0 or (shortfall_w > 0.0) != (ramped_w > 0.0):
        return ramped_w
    if abs(shortfall_w) >= abs(ramped_w):
        return 0.0
    return ramped_w - shortfall_w


def _eta_s(ramped_w: float, goal_w: float, rate_w_per_s: float, step_s: float) -> float:
    """The time until ``ramped_w`` reaches ``goal_w``, in whole steps (or at once: 0)."""
    crosses = (ramped_w > 0.0 and goal_w < 0.0) or (ramped_w < 0.0 and goal_w > 0.0)
    legs = (abs(ramped_w), abs(goal_w)) if crosses else (abs(goal_w - ramped_w),)
    if step_s <= 0.0:
        eta = math.fsum(legs) / rate_w_per_s
    else:
        # Each leg in whole steps (a reversal stops at 0 W for a step); a leg a rounding
        # error past a whole number of steps takes that number.
        per_step = rate_w_per_s * step_s
        eta = step_s * sum(math.ceil(leg / per_step * (1.0 - 1e-12)) for leg in legs)
    return eta if eta > 0.0 else math.ulp(0.0)  # too small to divide: still not reached


def apply(
    ramp: Ramp | None,
    *,
    target_w: float,
    exempt_w: float,
    now: float,
    rate_w_per_s: float,
    step_s: float = 0.0,
) -> Step:
    """Apply a bucket's target through its ramp at ``now``.

    Args:
        ramp: The ramp as last applied (``None``: the bucket applied nothing yet; it starts
            from 0 W).
        target_w: The bucket's whole target, W.
        exempt_w: The part of it that exempt programs were granted; it moves at once.
        now: The time now, s.
        rate_w_per_s: ``ramp.max_w_per_s`` (``inf`` or 0 for off: everything moves at once).
        step_s: ``ramp.step_s``: one application moves the ramped part at most one step's
            worth (``rate × step_s``), and the time to the target is counted in whole steps
            (0: no such limit, as if the power moved continuously).

    Returns:
        What to apply now and the ramp's new state.
    """
    goal = target_w - exempt_w
    if rate_w_per_s <= 0.0 or math.isinf(rate_w_per_s):
        return Step(
            applied_w=target_w, ramp=Ramp(ramped_w=goal, at=now), target_w=target_w, eta_s=0.0
        )
    if ramp is None:
        ramp = Ramp(ramped_w=0.0, at=now)
    elapsed = now - ramp.at
    if step_s > 0.0:
        # At most one step's worth per application: time the ramp stood still (its target
        # reached, or no step for a while) is not banked for a later jump.
        elapsed = min(elapsed, step_s)
    ramped = step_toward(ramp.ramped_w, goal, elapsed, rate_w_per_s)
    eta_s = _eta_s(ramped, goal, rate_w_per_s, step_s) if ramped != goal else 0.0
    applied = exempt_w + ramped
    if ramped == goal:
        applied = target_w  # exactly the target once reached
    return Step(
        applied_w=applied, ramp=Ramp(ramped_w=ramped, at=now), target_w=target_w, eta_s=eta_s
    )


def reachable(
    ramp: Ramp | None, *, exempt_w: float, rate_w_per_s: float, step_s: float
) -> tuple[float, float]:
    """The interval a bucket's target can move to within one step (for ``subscribe_bounds``).

    One step (``step_s``) at the rate from where the ramped part stands, plus the exempt part;
    toward the other direction it reaches 0 at most (a direction change passes through 0).

    Args:
        ramp: The ramp as last applied (``None``: from 0 W).
        exempt_w: The exempt part of its target, W (it moves at once).
        rate_w_per_s: ``ramp.max_w_per_s`` (off: ``(-inf, inf)``).
        step_s: ``ramp.step_s``.

    Returns:
        ``(lowest, highest)`` W.
    """
    if rate_w_per_s <= 0.0 or math.isinf(rate_w_per_s):
        return (-math.inf, math.inf)
    base = 0.0 if ramp is None else ramp.ramped_w
    elapsed = step_s
    low = step_toward(base, -math.inf if base <= 0.0 else 0.0, elapsed, rate_w_per_s)
    high = step_toward(base, math.inf if base >= 0.0 else 0.0, elapsed, rate_w_per_s)
    return (exempt_w + low, exempt_w + high)
