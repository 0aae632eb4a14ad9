"""Power the daemon cannot command: the request less what the unused batteries measure.

Theory of operation
-------------------
Batteries of a request that are not used (not working, blocked, left out) may still carry
power: an inverter whose command failed keeps its old setpoint until that command's lifetime
ends, and an unreachable one does whatever it last did (``spec/distribution.md``, "Power the
daemon cannot command"). The planner (:mod:`distributord.core.planning`) collects the fresh
measured AC power of their inverters; :func:`compensate` takes it off the request before the
split, so that the site delivers what was asked rather than that plus the power nobody commands.

The rules it keeps, and why:

1. **Only towards zero.** With ``U`` the sum of the measured powers, the power split among the
   batteries used is ``P' = P − U`` clamped into ``[0, P]`` (``[P, 0]`` for a discharge): it never
   takes the opposite sign of ``P`` (working batteries are never charged to absorb what unused
   ones discharge, or the reverse), and it never grows past ``P`` (unused power against the
   request is not made up for by pushing the working batteries harder than asked: that would
   circulate energy between batteries). A compensation moves the request towards zero, as the
   request check's adjustment does.
2. **What is not taken off is reported**, not hidden: ``uncompensated_w = U − (P − P')`` is what
   the unused batteries deliver beyond (or against) the request, so that
   ``Σ setpoints + excess + U − uncompensated_w = P`` (conservation, the unused power counted).
3. **Never over, exactly.** ``P'`` is the exact ``clamp(P − U)`` rounded toward zero: with the
   working batteries' setpoints never more than ``P'`` (the distribution's rule), the commanded
   power plus the unused power never exceeds the request where it could be met, for any float
   input. The sum is taken exactly (``math.fsum``), rounded once, and stepped one ulp toward zero
   when rounding went away from it.

Measurements it is given are finite and plausible (the planner drops the others, and says why);
it is pure and total over them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs


@attrs.frozen(kw_only=True)
class Compensation:
    """The request with the unused batteries' measured power taken off.

    Attributes:
        power_w: The requested power, W.
        target_w: What is split among the batteries used: between 0 and ``power_w``, inclusive.
        measured_w: Battery id to the fresh measured AC power of its inverter, for each unused
            battery that has one, W.
        compensated_w: What was taken off the request: ``power_w − target_w``.
        uncompensated_w: What the unused batteries deliver that was not taken off: beyond the
            request (same sign as it), or against it (the opposite sign). 0 when all of it was.
    """

    power_w: float
    target_w: float
    measured_w: Mapping[int, float]
    compensated_w: float
    uncompensated_w: float


def compensate(
    power_w: float, measured_w: Mapping[int, float], *, enabled: bool = True
) -> Compensation:
    """The request ``power_w`` less ``measured_w`` (see the module docstring).

    Args:
        power_w: The requested power, W (finite).
        measured_w: Battery id to the fresh measured AC power of each unused battery's
            inverter, W (finite, plausible).
        enabled: ``distribution.compensate_unused``; off, nothing is taken off and all of the
            measured power is reported as uncompensated.

    Returns:
        The power to split, and what was and was not taken off.
    """
    measured = dict(measured_w)
    values = list(measured.values())
    target = _target(power_w, values) if enabled else power_w
    # Each an exact sum, rounded once.
    compensated = math.fsum([power_w, -target]) + 0.0
    uncompensated = math.fsum([*values, -power_w, target]) + 0.0
    return Compensation(
        power_w=power_w,
        target_w=target,
        measured_w=measured,
        compensated_w=compensated,
        uncompensated_w=uncompensated,
    )


def _target(power_w: float, measured: list[float]) -> float:
    """``clamp(P − ΣU)`` into ``[0, P]``, rounded toward zero (rule 3)."""
    if power_w == 0.0 or not measured:
        return power_w
    raw = math.fsum([power_w, *(-m for m in measured)])
    # fsum rounds to nearest: if that went away from zero, step back one ulp. The residual
    # raw − (P − ΣU) is summed exactly too, so its sign is the rounding's direction.
    residual = math.fsum([raw, -power_w, *measured])
    if raw != 0.0 and residual != 0.0 and (residual > 0.0) == (raw > 0.0):
        raw = math.nextafter(raw, 0.0)
    if power_w > 0.0:
        return min(power_w, max(0.0, raw))
    return max(power_w, min(0.0, raw))
