"""Arbitration's protocol additions on the wire: params checks and result encoders (pure).

Theory of operation
-------------------
``spec/arbitration.md`` ("Protocol (additions to protocol.md)") adds the methods ``hello``,
``propose``, ``withdraw``, ``get_proposals`` and ``subscribe_bounds``, and the notifications
``bounds_changed``, ``proposal_changed`` and ``proposal_ended``. This module is their codec,
beside :mod:`distributord.core.protocol` (which frames, decodes and checks ``set_power``):

* ``parse_*`` take a decoded :class:`~distributord.core.protocol.Call` and return a validated
  frozen value (:class:`Hello`, :class:`Propose`, :class:`Withdraw`, :class:`SubscribeBounds`)
  or the invalid-params :class:`~distributord.core.protocol.Failure` (-32602) whose ``data``
  names the offending field and what was expected, as ``set_power``'s check does. A battery
  set, a power and a request timeout are checked by the very functions ``set_power`` uses
  (:func:`~distributord.core.protocol.batteries_problem` and its siblings): one rule each.
* the encoders turn the core's values (:mod:`.merge`'s :class:`~.merge.Grant`,
  :class:`~.merge.Merge` and :class:`~.merge.Headroom`, :mod:`.holdings`'
  :class:`~.holdings.Proposal` and :class:`~.holdings.ProposalEnded`) into the JSON objects
  the spec names. Powers are floats, never ``-0.0``; a value that is not finite is ``null``
  (JSON has no infinities); battery sets are sorted arrays.

Nothing a client sends can raise out of a ``parse_*`` function: any JSON value under any
parameter name gives a value or a ``Failure``. Optional parameters are either absent or of
their type: ``null`` is refused (naming the field), as ``set_power`` refuses it.

It lives here rather than in ``protocol.py`` because a program's name follows the
configuration's rule (:data:`~distributord.core.config.PROGRAM_NAME`), and the configuration
imports the protocol module. The session (:mod:`distributord.core.session`) calls the parsers;
the request loop builds the results with the encoders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from distributord.core.arbitration.holdings import (
    Batteries,
    GrantChange,
    Proposal,
    ProposalEnded,
)
from distributord.core.arbitration.merge import Grant, Headroom, Limiter, Merge, Reason
from distributord.core.config import PROGRAM_NAME
from distributord.core.protocol import (
    Call,
    Failure,
    batteries_problem,
    check_no_params,
    invalid_params,
    power_problem,
    reactive_problem,
    timeout_problem,
)
from distributord.core.values import is_number

MAX_TTL_S = 86_400.0
"""The longest ``ttl_s`` a proposal may have: one day.

A ttl is a dead man's switch for a program that renews its proposal while it runs (FCR,
trading); renewals come seconds or minutes apart, so a day leaves room for any cadence while
refusing the typo (``ttl_s: 3600000``) that would leave power standing for weeks. A program
that wants its proposal to last longer makes it standing (no ``ttl_s``) or ``until_disconnect``.
"""

POWER_FIELDS = ("power_w", "lower_w", "upper_w")
"""A proposal's powers: at least one of them is given (bounds only make a limiter)."""

HELLO_FIELDS = frozenset({"program"})
PROPOSE_FIELDS = frozenset(
    {*POWER_FIELDS, "batteries", "ttl_s", "until_disconnect", "request_timeout_s", "reactive_var"}
)
WITHDRAW_FIELDS = frozenset({"batteries"})
SUBSCRIBE_BOUNDS_FIELDS = frozenset({"batteries"})


# --- values --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Hello:
    """``hello``'s params: the program the connection asks to act as.

    Attributes:
        program: The program's name (it follows the configuration's naming rule; whether it is
            configured and the peer may act as it is :func:`.programs.hello`'s to say).
    """

    program: str


@attrs.frozen(kw_only=True)
class Propose:
    """``propose``'s params, validated (``spec/arbitration.md``, "Proposals").

    At least one of ``power_w``, ``lower_w`` and ``upper_w`` is given; ``lower_w <= upper_w``
    when both are.

    Attributes:
        batteries: The exact battery set (1 to 1,024 ids): the proposal's bucket.
        power_w: What the program wants for the set, or ``None`` (a limiter: bounds only).
        lower_w: The lower limit it imposes on every lower priority, or ``None``.
        upper_w: The upper limit it imposes on every lower priority, or ``None``.
        ttl_s: Its lifetime in seconds, in (0, :data:`MAX_TTL_S`], or ``None`` (standing).
        until_disconnect: Whether it ends when the connection closes.
        request_timeout_s: The reply's deadline, as ``set_power``'s (the configured default
            when absent).
        reactive_var: The reactive power it wants for the set's inverters, var, or ``None``;
            proposals' reactive parts merge apart from their active ones (``spec/plant.md``).
    """

    batteries: Batteries
    power_w: float | None = None
    lower_w: float | None = None
    upper_w: float | None = None
    ttl_s: float | None = None
    until_disconnect: bool = False
    request_timeout_s: float
    reactive_var: float | None = None

    def __attrs_post_init__(self) -> None:
        # What parse_propose guarantees, kept by the type too (the shell may build one).
        if self.power_w is None and self.lower_w is None and self.upper_w is None:
            raise ValueError("a proposal gives at least one of power_w, lower_w and upper_w")
        if self.lower_w is not None and self.upper_w is not None and self.lower_w > self.upper_w:
            raise ValueError(f"lower_w ({self.lower_w}) > upper_w ({self.upper_w})")
        if self.ttl_s is not None and not 0.0 < self.ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S:g}], not {self.ttl_s}")


@attrs.frozen(kw_only=True)
class Withdraw:
    """``withdraw``'s params.

    Attributes:
        batteries: The set whose proposal (of this program) to withdraw, or ``None`` for all of
            the program's proposals.
    """

    batteries: Batteries | None = None


@attrs.frozen(kw_only=True)
class SubscribeBounds:
    """``subscribe_bounds``'s params.

    Attributes:
        batteries: The battery set whose bounds the client wants to follow.
    """

    batteries: Batteries


# --- params checks -------------------------------------------------------------------------


def _unknown_field(call: Call, known: frozenset[str]) -> Failure | None:
    unknown = sorted(set(call.params) - known)
    if unknown:
        fields = ", ".join(sorted(known))
        return invalid_params(call, unknown[0], f"absent (unknown field; fields: {fields})")
    return None


def _required_batteries(call: Call) -> Batteries | Failure:
    if "batteries" not in call.params:
        return invalid_params(call, "batteries", "present (required)")
    value = call.params["batteries"]
    problem = batteries_problem(value)
    if problem is not None:
        return invalid_params(call, "batteries", problem)
    return frozenset(value)


def parse_hello(call: Call) -> Hello | Failure:
    """``hello``'s params, or the invalid-params error naming why."""
    refused = _unknown_field(call, HELLO_FIELDS)
    if refused is not None:
        return refused
    if "program" not in call.params:
        return invalid_params(call, "program", "present (required)")
    program = call.params["program"]
    if not (isinstance(program, str) and PROGRAM_NAME.fullmatch(program)):
        return invalid_params(
            call,
            "program",
            "a program's name: 1 to 64 letters, digits, '_', '.' or '-', not starting with"
            " '.' or '-'",
        )
    return Hello(program=program)


def parse_propose(call: Call, *, default_timeout_s: float) -> Propose | Failure:
    """``propose``'s params, or the invalid-params error naming why.

    Args:
        call: The decoded call.
        default_timeout_s: ``request_timeout_s`` when the client gives none (the
            configuration's ``requests.default_timeout_s``).
    """
    params = call.params
    refused = _unknown_field(call, PROPOSE_FIELDS)
    if refused is not None:
        return refused
    batteries = _required_batteries(call)
    if isinstance(batteries, Failure):
        return batteries
    powers: dict[str, float | None] = {}
    for field in POWER_FIELDS:
        if field in params:
            problem = power_problem(params[field])
            if problem is not None:
                return invalid_params(call, field, problem)
            powers[field] = float(params[field])
        else:
            powers[field] = None
    if all(value is None for value in powers.values()):
        return invalid_params(
            call, "power_w", "present: at least one of power_w, lower_w and upper_w"
        )
    lower, upper = powers["lower_w"], powers["upper_w"]
    if lower is not None and upper is not None and lower > upper:
        return invalid_params(call, "lower_w", f"at most upper_w ({upper:g} W), got {lower:g}")
    ttl: float | None = None
    if "ttl_s" in params:
        value = params["ttl_s"]
        if not (is_number(value) and 0.0 < value <= MAX_TTL_S):
            return invalid_params(call, "ttl_s", f"a number in (0, {MAX_TTL_S:g}] seconds")
        ttl = float(value)
    until_disconnect = params.get("until_disconnect", False)
    if not isinstance(until_disconnect, bool):
        return invalid_params(call, "until_disconnect", "true or false")
    timeout = params.get("request_timeout_s", default_timeout_s)
    problem = timeout_problem(timeout)
    if problem is not None:
        return invalid_params(call, "request_timeout_s", problem)
    reactive = params.get("reactive_var")
    if reactive is not None:
        problem = reactive_problem(reactive)
        if problem is not None:
            return invalid_params(call, "reactive_var", problem)
    return Propose(
        batteries=batteries,
        power_w=powers["power_w"],
        lower_w=lower,
        upper_w=upper,
        ttl_s=ttl,
        until_disconnect=until_disconnect,
        request_timeout_s=float(timeout),
        reactive_var=None if reactive is None else float(reactive),
    )


def parse_withdraw(call: Call) -> Withdraw | Failure:
    """``withdraw``'s params (``batteries`` optional: all of the program's proposals)."""
    refused = _unknown_field(call, WITHDRAW_FIELDS)
    if refused is not None:
        return refused
    if "batteries" not in call.params:
        return Withdraw()
    batteries = _required_batteries(call)
    if isinstance(batteries, Failure):
        return batteries
    return Withdraw(batteries=batteries)


def parse_get_proposals(call: Call) -> Failure | None:
    """``get_proposals`` takes no params: ``None`` when it has none, else the error."""
    return check_no_params(call)


def parse_subscribe_bounds(call: Call) -> SubscribeBounds | Failure:
    """``subscribe_bounds``'s params."""
    refused = _unknown_field(call, SUBSCRIBE_BOUNDS_FIELDS)
    if refused is not None:
        return refused
    batteries = _required_batteries(call)
    if isinstance(batteries, Failure):
        return batteries
    return SubscribeBounds(batteries=batteries)


# --- encoders ------------------------------------------------------------------------------


def _watts(value: float) -> float | None:
    # JSON has no infinities or NaN: null. Otherwise a float, never -0.0.
    if math.isnan(value) or math.isinf(value):
        return None
    return float(value) + 0.0


def _optional_watts(value: float | None) -> float | None:
    return None if value is None else _watts(value)


def _set(batteries: Iterable[int]) -> list[int]:
    return sorted(batteries)


def _limiters(limited_by: Iterable[Limiter]) -> list[dict[str, Any]]:
    return [{"program": limiter.program, "priority": limiter.priority} for limiter in limited_by]


def _reasons(*groups: Iterable[str]) -> list[str]:
    # In order, each once.
    return list(dict.fromkeys(str(reason) for group in groups for reason in group))


def arbitration_object(grant: Grant, merge: Merge) -> dict[str, Any]:
    """The ``arbitration`` member of a ``propose`` (or ``set_power``) reply.

    ``{program, priority, granted_w, window_w: [lo, hi], limited_by: [{program, priority}],
    target_w, reasons}``: the proposal's grant in its bucket's merge; ``window_w`` is the window
    it saw, ``target_w`` the bucket's target, and ``reasons`` the grant's followed by the
    target's (``below_minimum``, ``unknown_bounds``...), each once.
    """
    return {
        "program": grant.bid.program,
        "priority": grant.bid.priority,
        "granted_w": _watts(grant.granted_w),
        "window_w": [_watts(grant.window.lower_w), _watts(grant.window.upper_w)],
        "limited_by": _limiters(grant.limited_by),
        "target_w": _watts(merge.target_w),
        "reasons": _reasons(grant.reasons, merge.reasons),
    }


def withdrawn_object(sets: Iterable[Batteries]) -> dict[str, Any]:
    """``withdraw``'s result: ``{withdrawn: [sets]}``, each set sorted, the sets in order."""
    return {"withdrawn": sorted(_set(batteries) for batteries in sets)}


def proposal_entry(
    proposal: Proposal, *, now: float, granted_w: float | None, held: Batteries
) -> dict[str, Any]:
    """One entry of ``get_proposals``' result: a live proposal and what it has.

    Args:
        proposal: The live proposal.
        now: The shell's clock now (``age_s`` is ``now - created_at``, never negative).
        granted_w: Its grant in its bucket's last merge, or ``None`` if it has none yet.
        held: The batteries of its set its bucket holds.
    """
    return {
        "program": proposal.program,
        "priority": proposal.priority,
        "batteries": _set(proposal.batteries),
        "power_w": _optional_watts(proposal.power_w),
        "lower_w": _optional_watts(proposal.lower_w),
        "upper_w": _optional_watts(proposal.upper_w),
        "age_s": _watts(max(0.0, now - proposal.created_at)),
        "ttl_s": _optional_watts(proposal.ttl_s),
        "until_disconnect": proposal.until_disconnect,
        "granted_w": _optional_watts(granted_w),
        "held_batteries": _set(held),
    }


def bounds_changed_params(
    batteries: Batteries, program: str, headroom: Headroom, target_w: float
) -> dict[str, Any]:
    """``bounds_changed``'s params: what ``program`` may still ask of ``batteries``.

    ``{batteries, program, priority, inclusion_lower_w, inclusion_upper_w, exclusion_lower_w,
    exclusion_upper_w, target_w}``; a bound that is not finite (unknown) is ``null``.
    """
    return {
        "batteries": _set(batteries),
        "program": program,
        "priority": headroom.priority,
        "inclusion_lower_w": _watts(headroom.inclusion_lower_w),
        "inclusion_upper_w": _watts(headroom.inclusion_upper_w),
        "exclusion_lower_w": _watts(headroom.exclusion_lower_w),
        "exclusion_upper_w": _watts(headroom.exclusion_upper_w),
        "target_w": _watts(target_w),
    }


def proposal_changed_params(
    batteries: Batteries,
    granted_w: float,
    reasons: Sequence[Reason | GrantChange],
    *,
    held: Batteries | None = None,
    preempted_by: Proposal | None = None,
) -> dict[str, Any]:
    """``proposal_changed``'s params, to a proposal's owner when others change its grant.

    ``reasons`` are the merge's (:class:`~.merge.Reason`) or the arbiter's
    (:class:`~.holdings.GrantChange`), in order; each is sent once. With ``held``,
    ``held_batteries`` says what its
    bucket holds now; with ``preempted_by``, that key names the program and priority that took
    batteries from it.
    """
    params: dict[str, Any] = {
        "batteries": _set(batteries),
        "granted_w": _watts(granted_w),
        "reasons": _reasons(reasons),
    }
    if held is not None:
        params["held_batteries"] = _set(held)
    if preempted_by is not None:
        params["preempted_by"] = {
            "program": preempted_by.program,
            "priority": preempted_by.priority,
        }
    return params


def proposal_ended_params(ended: ProposalEnded) -> dict[str, Any]:
    """``proposal_ended``'s params: ``{batteries, why}`` (``why``: ``expired``, ``replaced``...)."""
    return {"batteries": _set(ended.proposal.batteries), "why": ended.why.value}
