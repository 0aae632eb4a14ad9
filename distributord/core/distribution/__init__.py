"""The distribution algorithm: split a requested power across battery/inverter pairs.

Theory of operation
-------------------
A request asks for a power ``P`` (W, + charge, − discharge) over some pairs. Each pair may take
exactly ``0`` or any magnitude in its window ``[m, u]``, and shares the request with the others
in proportion to its weight ``w`` (capacity and available SoC). The rules of
``spec/distribution.md``, and the module that keeps each:

1. ``M = |P| ≈ 0``: every setpoint is exactly ``0``, and ``P`` remains (:mod:`.placement`).
2. Pairs with ``w = 0``, ``u = 0`` or ``m > u`` get exactly ``0`` (:mod:`.rows` says which).
   Inside the SoC derating band (``distribution.derate_band_pct``) ``u`` is the derated cap
   (:func:`.rows.derate`), for this rule and every one below.
3. If the others' caps sum to at most ``M``, all run at their cap (:mod:`.waterfill`).
4. Otherwise the split is proportional to weight, with water-filling where caps bind
   (:mod:`.waterfill`).
5. A share below its pair's minimum is dropped, or raised to the minimum when dropping it would
   leave ``M`` unreachable (:mod:`.waterfill`); a choice that drops some of a group of
   identical pairs gives way to a fair one that places as much.
6. If the minimums of the pairs still running exceed ``M``, an exact search chooses which pairs
   run (:mod:`.search`), a fair choice first among those placing the same power.

The modules, from the bottom up:

* :mod:`.rows`: per-pair quantities (a :class:`Row` per direction), worked out when a
  :class:`Pair` is built; bad telemetry.
* :mod:`.search`: the search of rule 6.
* :mod:`.waterfill`: proportional shares, caps and minimums over the candidates (rules 3-5).
* :mod:`.placement`: :func:`distribute` and the :class:`Distribution` it returns, the request
  check (:func:`aggregate_bounds`, :func:`check_power`), :func:`split_equally`,
  :func:`leftover` and :func:`combine`.
* :mod:`.limits`: group limits (feeders, fuses, the grid connection point) over sets of
  inverters, :class:`Limit`. They nest or are disjoint (:func:`limit_tree` refuses others);
  :func:`distribute` and :func:`aggregate_bounds` take them (``limits=``). The split under
  them is a nested water-fill: a limit its members would exceed binds, its members share
  exactly its maximum by the rules above (limits inside it may bind in turn), and the overflow
  goes to the pairs outside it; the result names the limits that bound (``bound_limits``) and
  their members held back say :attr:`Allotment.LIMITED`. Without limits over the request's
  pairs the split is exactly the one without.
* :mod:`.reactive`: reactive power, beside the rules above: each inverter's room under its
  apparent-power limit (:func:`reactive_room`, :func:`headroom`), active bounds within that
  limit (:func:`capped_active_bounds`), and the split of a reactive target
  (:func:`split_reactive`, :func:`reactive_as_sent`): pinned inverters first, the rest in
  proportion to their room.

Import from this package; the names below are its public API.
"""

from distributord.core.distribution.limits import Limit, limit_tree, rest_toward_zero
from distributord.core.distribution.placement import (
    ZERO_POWER_W,
    Distribution,
    aggregate_bounds,
    check_power,
    combine,
    distribute,
    leftover,
    split_equally,
)
from distributord.core.distribution.reactive import (
    ReactiveAllotment,
    ReactiveLimits,
    ReactiveRoom,
    ReactiveSplit,
    capped_active_bounds,
    headroom,
    reactive_as_sent,
    reactive_room,
    reactive_rooms,
    split_reactive,
)
from distributord.core.distribution.rows import MAX_EXPONENT, MIN_WEIGHT, Allotment, Pair, Row
from distributord.core.distribution.search import (
    DEFAULT_SEARCH_BUDGET_S,
    SEARCH_STEPS,
    SearchBudget,
)
from distributord.core.distribution.waterfill import split
from distributord.core.errors import LimitOverlapError
from distributord.core.model import PLAUSIBLE_LIMIT  # defined with the telemetry rule

__all__ = [
    "DEFAULT_SEARCH_BUDGET_S",
    "MAX_EXPONENT",
    "MIN_WEIGHT",
    "PLAUSIBLE_LIMIT",
    "SEARCH_STEPS",
    "ZERO_POWER_W",
    "Allotment",
    "Distribution",
    "Limit",
    "LimitOverlapError",
    "Pair",
    "ReactiveAllotment",
    "ReactiveLimits",
    "ReactiveRoom",
    "ReactiveSplit",
    "Row",
    "SearchBudget",
    "aggregate_bounds",
    "capped_active_bounds",
    "check_power",
    "combine",
    "distribute",
    "headroom",
    "leftover",
    "limit_tree",
    "reactive_as_sent",
    "reactive_room",
    "reactive_rooms",
    "rest_toward_zero",
    "split",
    "split_equally",
    "split_reactive",
]
