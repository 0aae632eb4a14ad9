"""The control protocol's methods and notifications, documented: what each takes and answers.

Theory of operation
-------------------
The codec (:mod:`distributord.core.protocol`, :mod:`distributord.core.arbitration.wire`) and the
session (:mod:`distributord.core.session`) decide what the daemon accepts and sends; this module
says it in words, for the people who write clients. ``distributord-protocol(7)`` is generated
from it (:mod:`distributord.cli.manpages`), together with the error codes
(:class:`~distributord.core.protocol.Code`) and the reason values, which are read from the enums
that produce them. Tests keep it honest: the methods are exactly
:data:`~distributord.core.protocol.METHODS`, each method's params exactly the fields its parser
accepts, every error code has its text here, and the result fields a real daemon sends are
listed.

Pure data: no IO.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from distributord.core import status
from distributord.core.arbitration import holdings, merge
from distributord.core.distribution.rows import Allotment
from distributord.core.protocol import Code


@attrs.frozen(kw_only=True)
class Param:
    """One parameter of a method.

    Attributes:
        name: Its key in ``params``.
        type: The JSON value it takes.
        default: What applies when it is left out (``"required"`` when it may not be).
        meaning: What it does.
    """

    name: str
    type: str
    default: str
    meaning: str


@attrs.frozen(kw_only=True)
class Field:
    """One field of a result or of a notification's params.

    Attributes:
        name: Its key.
        present: When it is there (``"always"``, or the outcomes that carry it).
        meaning: What it says.
    """

    name: str
    present: str
    meaning: str


@attrs.frozen(kw_only=True)
class Method:
    """One method of the protocol.

    Attributes:
        name: The JSON-RPC ``method``.
        summary: What it does, in one paragraph.
        params: Its parameters (none: it takes no ``params``, or an empty object).
        result: The fields of its ``result``.
    """

    name: str
    summary: str
    params: tuple[Param, ...] = ()
    result: tuple[Field, ...] = ()


@attrs.frozen(kw_only=True)
class Notification:
    """One notification the daemon sends (a JSON-RPC request without ``id``).

    Attributes:
        name: Its ``method``.
        summary: Who gets it, and when.
        params: The fields of its ``params``.
    """

    name: str
    summary: str
    params: tuple[Field, ...]


_BATTERIES = Param(
    name="batteries",
    type="array of 1..1024 unique non-negative integers",
    default="required",
    meaning="battery component ids (list_components); the exact set",
)
_TIMEOUT = Param(
    name="request_timeout_s",
    type="number in (0, 60]",
    default="requests.default_timeout_s (5)",
    meaning="deadline for all the inverter commands of this request",
)
_BOUNDS = (
    "{inclusion_lower_w, exclusion_lower_w, exclusion_upper_w, inclusion_upper_w}: "
    "watts, null where unknown"
)

SET_POWER_RESULT = (
    Field(
        name="outcome",
        present="always",
        meaning="success, partial_failure, out_of_bounds, error or ignored",
    ),
    Field(name="power_w", present="always", meaning="the requested power, echoed"),
    Field(name="batteries", present="always", meaning="the requested batteries, echoed"),
    Field(
        name="succeeded_power_w",
        present="success, partial_failure",
        meaning="power commanded to the batteries whose command succeeded",
    ),
    Field(
        name="succeeded_batteries",
        present="success, partial_failure",
        meaning="the batteries whose command succeeded",
    ),
    Field(
        name="failed_power_w",
        present="partial_failure",
        meaning="power commanded to the batteries whose command failed or timed out",
    ),
    Field(
        name="failed_batteries",
        present="partial_failure",
        meaning="the batteries whose command failed or timed out",
    ),
    Field(
        name="excess_power_w",
        present="success, partial_failure",
        meaning="requested power that could not be placed, with the request's sign; "
        "distributorctl exits non-zero when it is not 0",
    ),
    Field(
        name="distribution",
        present="success, partial_failure",
        meaning='{"<battery id>": watts} as commanded',
    ),
    Field(
        name="reasons",
        present="success, partial_failure; out_of_bounds, error when there are some",
        meaning='{"<battery id>": reason}: why each battery got the power it got, or none '
        "(ALLOTMENTS, or a sentence: REASONS)",
    ),
    Field(
        name="unused_power_w",
        present="when requested batteries that are not used carry measured power",
        meaning='{"<battery id>": watts} measured on them (distribution.compensate_unused)',
    ),
    Field(
        name="compensated_power_w",
        present="with unused_power_w",
        meaning="how much of it was taken off the request",
    ),
    Field(
        name="uncompensated_power_w",
        present="with unused_power_w",
        meaning="how much of it was not",
    ),
    Field(name="bounds", present="out_of_bounds", meaning=f"the set's bounds, {_BOUNDS}"),
    Field(
        name="message",
        present="error, ignored",
        meaning="a sentence saying why, naming the batteries concerned",
    ),
    Field(
        name="timing",
        present="always",
        meaning="{total_ms, commands_ms}: the request's time in the daemon, and in its commands",
    ),
    Field(
        name="reactive",
        present="when reactive_var was asked (or a proposal's merge has one)",
        meaning='{target_var, distribution: {"<battery id>": var}, excess_var, '
        "failed_batteries, reasons}: the reactive power commanded to each battery's inverter, "
        "what could not be placed, whose reactive command failed (the outcome is then "
        "partial_failure), and why an inverter got none",
    ),
    Field(
        name="ramping",
        present="while the set's target ramps ([ramp] max_w_per_s)",
        meaning="{target_w, applied_w, eta_s}: the whole target, what was applied now, and "
        "the time until the target is reached, a step every ramp.step_s",
    ),
    Field(
        name="arbitration",
        present="propose",
        meaning="{program, priority, granted_w, window_w: [lower, upper], limited_by: "
        "[{program, priority}], target_w, reasons}: what arbitration granted and why "
        "(reasons: ARBITRATION REASONS)",
    ),
)
"""The result of ``set_power``, and of ``propose`` (which adds ``arbitration``)."""

_MICROGRID = (
    Field(
        name="microgrid",
        present="always",
        meaning="connecting, connected or unreachable",
    ),
    Field(
        name="microgrid_api",
        present="connected",
        meaning="the Microgrid API version spoken",
    ),
    Field(
        name="unreachable_for_s",
        present="unreachable",
        meaning="for how long the microgrid has been unreachable",
    ),
)

_REACTIVE = Param(
    name="reactive_var",
    type="finite number",
    default="none",
    meaning="total reactive power for the set's inverters, var: positive inductive (current "
    "lagging), negative capacitive, as the Microgrid API defines it; absent: none (0 var)",
)

METHODS: tuple[Method, ...] = (
    Method(
        name="ping",
        summary="Is the daemon there? Answers at once, before the microgrid is reached too.",
        result=(
            Field(name="version", present="always", meaning="the daemon's version"),
            Field(name="uptime_s", present="always", meaning="seconds since it started"),
            *_MICROGRID,
        ),
    ),
    Method(
        name="set_power",
        summary="Split power_w across the batteries and command their inverters. The power "
        "stands (refreshed before the API's request lifetime ends, re-distributed with fresh "
        "telemetry) until a new request for those batteries replaces it; power_w 0 releases "
        "them (unless it asks for reactive power: then it stands at 0 W). Requests for the "
        "same set run one at a time, the newest waiting one kept (each "
        "one it replaces is answered ignored); disjoint sets run concurrently. Domain outcomes "
        "are results, not errors. Sent as a notification (no id) it is refused.",
        params=(
            Param(
                name="power_w",
                type="finite number",
                default="required",
                meaning="total power for the set, watts: positive charges, negative discharges",
            ),
            _BATTERIES,
            _TIMEOUT,
            Param(
                name="adjust_power",
                type="boolean",
                default="true",
                meaning="trim power the batteries cannot take to their bounds; false: answer "
                "out_of_bounds instead",
            ),
            Param(
                name="include_broken_batteries",
                type="boolean",
                default="false",
                meaning="also command batteries that are not working, with their last "
                "telemetry (status.broken_cache_ttl_s)",
            ),
            _REACTIVE,
        ),
        result=SET_POWER_RESULT,
    ),
    Method(
        name="get_status",
        summary="Every managed battery's status, and the microgrid's.",
        result=(
            Field(
                name="batteries",
                present="always",
                meaning="[{id, inverter_id, status, reasons, blocked_until_s?, soc_pct?, "
                "capacity_wh?, bounds?, setpoint_w?, reactive_setpoint_var?, reactive_bounds?, "
                "apparent_limit_va?, data_age_s?, clock_offset_s?}]: status is "
                "working, uncertain or not_working; reasons are STATUS REASONS",
            ),
            Field(name="working", present="always", meaning="the ids of the working batteries"),
            Field(name="uncertain", present="always", meaning="the ids of the uncertain batteries"),
            *_MICROGRID,
        ),
    ),
    Method(
        name="subscribe_status",
        summary="status_changed notifications from now on, on every change of a battery's "
        "status or reasons. A reader always ends up with the true state (a fleet-wide change "
        "coalesces to the latest value per battery); one that does not read at all is cut off.",
        result=(Field(name="subscribed", present="always", meaning="true"),),
    ),
    Method(
        name="list_components",
        summary="The battery/inverter pairs the daemon manages, and the batteries it left out.",
        result=(
            Field(name="pairs", present="always", meaning="[{battery_id, inverter_id}]"),
            Field(
                name="left_out",
                present="always",
                meaning="[{battery_id, reason}]: reason is a sentence an operator can act on "
                "(no inverter, several inverters, a PV inverter, a shared inverter, an id "
                "listed twice)",
            ),
        ),
    ),
    Method(
        name="hello",
        summary="Act as a configured program ([programs.NAME]) from now on; before any "
        "proposal. Without it a connection acts as the program default. Refused with -32003 "
        "if the peer's user or groups may not act as it.",
        params=(
            Param(
                name="program",
                type="string",
                default="required",
                meaning="the program's name",
            ),
        ),
        result=(
            Field(name="program", present="always", meaning="the program now acted as"),
            Field(name="priority", present="always", meaning="its configured priority"),
            Field(
                name="limits",
                present="always",
                meaning="{max_discharge_w, max_charge_w, batteries}: the operator's limits, "
                "null where none",
            ),
        ),
    ),
    Method(
        name="propose",
        summary="The program's proposal for exactly this set: the power it wants, and/or the "
        "bounds it imposes on every program of lower priority (at least one of power_w, "
        "lower_w, upper_w). It replaces the program's proposal on the same set and stands "
        "until replaced, withdrawn, expired (ttl_s) or its connection closes "
        "(until_disconnect). The reply is set_power's, with arbitration.",
        params=(
            _BATTERIES,
            Param(
                name="power_w",
                type="finite number",
                default="none (bounds only)",
                meaning="what the program wants for the set",
            ),
            Param(
                name="lower_w",
                type="finite number",
                default="none",
                meaning="the lowest power left to programs of lower priority",
            ),
            Param(
                name="upper_w",
                type="finite number, at least lower_w",
                default="none",
                meaning="the highest power left to programs of lower priority",
            ),
            Param(
                name="ttl_s",
                type="number in (0, 86400]",
                default="none (it stands)",
                meaning="the proposal ends this many seconds after it is made",
            ),
            Param(
                name="until_disconnect",
                type="boolean",
                default="false",
                meaning="the proposal ends when this connection closes",
            ),
            _TIMEOUT,
            _REACTIVE,
        ),
        result=SET_POWER_RESULT,
    ),
    Method(
        name="withdraw",
        summary="End the program's proposal on exactly this set, or all of them. Batteries no "
        "proposal holds any more are commanded 0 W. Withdrawing nothing is not an error.",
        params=(
            Param(
                name="batteries",
                type="array of battery ids",
                default="all of the program's proposals",
                meaning="the exact set whose proposal ends",
            ),
        ),
        result=(Field(name="withdrawn", present="always", meaning="[[ids]]: the sets ended"),),
    ),
    Method(
        name="get_proposals",
        summary="Every live proposal: who holds which batteries.",
        result=(
            Field(
                name="proposals",
                present="always",
                meaning="[{program, priority, batteries, power_w, lower_w, upper_w, age_s, "
                "ttl_s, until_disconnect, granted_w, held_batteries}] (null where not given)",
            ),
        ),
    ),
    Method(
        name="subscribe_bounds",
        summary="bounds_changed notifications for this set, as the connection's program sees "
        "it: the latest value, at most 10 a second, on every change of telemetry bounds, "
        "proposals or holdings.",
        params=(
            Param(
                name="batteries",
                type="array of managed battery ids",
                default="required",
                meaning="the set",
            ),
        ),
        result=(Field(name="subscribed", present="always", meaning="true"),),
    ),
)
"""Every method the daemon serves, in the order the manual page lists them."""

NOTIFICATIONS: tuple[Notification, ...] = (
    Notification(
        name="status_changed",
        summary="To subscribe_status subscribers: a battery's status or reasons changed.",
        params=(
            Field(name="id", present="always", meaning="the battery"),
            Field(name="status", present="always", meaning="working, uncertain or not_working"),
            Field(name="reasons", present="always", meaning="STATUS REASONS"),
        ),
    ),
    Notification(
        name="bounds_changed",
        summary="To subscribe_bounds subscribers: what the set leaves to their program.",
        params=(
            Field(name="batteries", present="always", meaning="the set"),
            Field(name="program", present="always", meaning="the subscriber's program"),
            Field(name="priority", present="always", meaning="its priority"),
            Field(
                name="inclusion_lower_w, inclusion_upper_w, exclusion_lower_w, exclusion_upper_w",
                present="always",
                meaning="the bounds it may propose within",
            ),
            Field(name="target_w", present="always", meaning="the set's current target"),
        ),
    ),
    Notification(
        name="proposal_changed",
        summary="To a proposal's owner, while connected: others changed its grant.",
        params=(
            Field(name="batteries", present="always", meaning="the proposal's set"),
            Field(name="granted_w", present="always", meaning="what it is granted now"),
            Field(name="reasons", present="always", meaning="ARBITRATION REASONS"),
            Field(name="held_batteries", present="sometimes", meaning="what its bucket holds"),
            Field(
                name="preempted_by",
                present="reason preempted_by",
                meaning="{program, priority} that took batteries from it",
            ),
        ),
    ),
    Notification(
        name="proposal_ended",
        summary="To a proposal's owner, while connected: the proposal ended.",
        params=(
            Field(name="batteries", present="always", meaning="the proposal's set"),
            Field(name="why", present="always", meaning="PROPOSAL ENDINGS"),
        ),
    ),
    Notification(
        name="command_failed",
        summary="To every connection: an inverter reported a command failed after accepting it "
        "(its battery is blocked for a while).",
        params=(
            Field(name="battery", present="always", meaning="the battery"),
            Field(name="inverter", present="always", meaning="its inverter"),
            Field(name="power_w", present="always", meaning="the power commanded"),
            Field(name="reply", present="always", meaning="FAILED"),
            Field(
                name="request",
                present="always",
                meaning="{id, program} of the request it belonged to, or null",
            ),
        ),
    ),
)
"""Every notification the daemon sends."""

ERRORS: Mapping[Code, str] = {
    Code.PARSE_ERROR: "the line is not valid JSON, or not UTF-8 (id null)",
    Code.INVALID_REQUEST: "not a JSON-RPC 2.0 request object",
    Code.METHOD_NOT_FOUND: "unknown method",
    Code.INVALID_PARAMS: "invalid params; data names the field and what was expected (NaN, "
    "infinities, strings for numbers, negative or duplicate ids, unknown fields)",
    Code.LINE_TOO_LONG: "the line is longer than 64 KiB (the rest of it is discarded)",
    Code.OVERLOADED: "the daemon is overloaded (its request queue is full); retry later",
    Code.SHUTTING_DOWN: "the daemon is shutting down; a restarted daemon will answer",
    Code.NOT_AUTHORISED: "the peer may not connect (SO_PEERCRED uid and gids; the connection is "
    "then closed), or may not act as the program named in hello",
    Code.NOT_CONNECTED: "the microgrid is not connected yet (discovery has not completed); "
    "nothing was commanded",
}
"""What each JSON-RPC error code means. After an error the connection stays usable (except
after -32003 for the peer)."""


@attrs.frozen(kw_only=True)
class Reasons:
    """A set of reason values the daemon sends, and where.

    Attributes:
        title: The heading the manual page gives them (the method docs above refer to it).
        where: Which fields carry them, and what they say.
        values: The enum that produces them; each member's docstring says what it means.
    """

    title: str
    where: str
    values: tuple[type[enum.Enum], ...]


REASONS: tuple[Reasons, ...] = (
    Reasons(
        title="STATUS REASONS",
        where="get_status batteries[].reasons and status_changed reasons: why a battery is not "
        "working, or uncertain. overridden and clock_skew are notes: they do not change the "
        "status.",
        values=(status.Reason,),
    ),
    Reasons(
        title="ALLOTMENTS",
        where="set_power and propose result reasons, per battery: why it got the power it got.",
        values=(Allotment,),
    ),
    Reasons(
        title="ARBITRATION REASONS",
        where="propose result arbitration.reasons and proposal_changed reasons: why a proposal "
        "got what it got, why the target is what it is, or why a grant changed.",
        values=(merge.Reason, holdings.GrantChange),
    ),
    Reasons(
        title="PROPOSAL ENDINGS",
        where="proposal_ended why: why a proposal ended.",
        values=(holdings.Why,),
    ),
)
"""Every enum whose values the daemon sends as a reason."""

SENTENCES: tuple[str, ...] = (
    "held by program NAME (priority N): another program's proposal holds the battery",
    "not_working (STATUS REASONS); holds no power: no command sent",
    "STATUS (STATUS REASONS); NOTE: a requested battery that is not used, and what was done "
    "with its measured power (distribution.compensate_unused)",
    "unusable telemetry (PROBLEM); NOTE, or no telemetry yet; NOTE: the same, for a battery "
    "whose telemetry cannot be used",
    "battery ID: FIELD is VALUE (or implausible, or negative; or power bound FIELD is not "
    "usable): the pair was excluded from the split for bad telemetry",
)
"""The reasons in a ``set_power`` result that are sentences rather than values: a battery's
entry in ``reasons`` is an ALLOTMENT or one of these."""
