"""distributord's errors: one hierarchy, all in this module, whose docstrings say who is at fault.

Expected outcomes of a request are results (``distributord.core.model``), not exceptions. These
are for what goes wrong on the way: input someone wrote (a configuration, a scenario, a power
typed on the command line), a command the microgrid refused or could not carry out, a link that
is down, a daemon a client cannot reach. Every class derives from :class:`DistributordError`, so
a caller can tell ours from a bug. Foreign errors (gRPC status codes) are translated once, in the
API adapter (``distributord.api.v1``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar, Protocol, Self


class DistributordError(Exception):
    """Base class of distributord's own errors."""


class InputError(DistributordError, ValueError):
    """A value someone wrote (in a file, or as a flag) is invalid: the fault is its author's.

    Attributes:
        problem: What is wrong (``"must be a number in (0, 60], got 0"``).
        key: The dotted TOML path of the offending key (``"requests.default_timeout_s"``), or
            ``""`` when the whole file is at fault.
        source: The file, or the flag (``"--socket"``), the value came from, or ``""``.
    """

    def __init__(self, problem: str, *, key: str = "", source: str = "") -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def within(self, prefix: str = "", *, source: str = "") -> Self:
        """The same error, its key placed under ``prefix`` and attributed to ``source``.

        An error that already names a source keeps it.
        """
        key = ".".join(part for part in (prefix, self.key) if part)
        return type(self)(self.problem, key=key, source=self.source or source)


class ConfigError(InputError):
    """The configuration is invalid: the fault is the operator's (the file or a flag).

    The daemon refuses to start with it; the message is the one clear line the operator sees.
    """


class ScenarioError(InputError):
    """A scenario is invalid: the fault is in the scenario (its author's, or the file's).

    Its ``key`` is the TOML path (``battery[1].soc_pct``); its ``source`` the file or
    ``"--batteries"``.
    """


class ControlSocketError(DistributordError):
    """The control socket cannot be set up (something outside: the path, or another daemon)."""


class DistributionInputError(DistributordError, ValueError):
    """The caller passed arguments the algorithm does not accept (a bug at the call site).

    Attributes:
        field: The offending argument.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Limit(Protocol):
    """What :class:`LimitOverlapError` says of a limit (``distribution.limits.Limit`` is one)."""

    @property
    def name(self) -> str:
        """Its name."""

    @property
    def inverters(self) -> frozenset[int]:
        """The inverters it holds."""

    @property
    def max_charge_w(self) -> float:
        """The most they may charge together, W."""

    @property
    def max_discharge_w(self) -> float:
        """The most they may discharge together, W."""


class LimitOverlapError(DistributionInputError):
    """Two limits overlap without one containing the other (the caller's configuration).

    Attributes:
        first: One of them (no smaller than the other).
        second: The other.
        inverter: An inverter both hold.
    """

    def __init__(self, first: Limit, second: Limit, inverter: int) -> None:
        super().__init__(
            "limits",
            f"{first.name!r} and {second.name!r} overlap without one containing the other "
            f"(both hold inverter {inverter}); limits must nest or be disjoint",
        )
        self.first, self.second, self.inverter = first, second, inverter


class CommandError(DistributordError):
    """An inverter command did not succeed.

    Attributes:
        code: The gRPC status code's name (``"UNAVAILABLE"``, ``"OUT_OF_RANGE"``, ...), or
            ``"DEADLINE"`` when the request's deadline ran out first.
        details: What the microgrid said, if anything.
        blocks: Whether this failure puts the battery in a blocking window.
    """

    blocks: ClassVar[bool] = True

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


class CommandRejectedError(CommandError):
    """The microgrid refused the setpoint as out of range or invalid.

    Nobody's hardware is at fault: the telemetry bounds we used were already out of date, or
    the request was malformed. The battery fails in this request's result but is not blocked;
    its telemetry bounds stay the authority (the reference design blocked it, and so starved
    full batteries of discharge commands).
    """

    blocks: ClassVar[bool] = False


class CommandOverriddenError(CommandError):
    """Another command replaced ours at the inverter before it was applied (v1alpha18/19).

    distributord never has two commands for one inverter in flight (a request's commands for a
    set run one at a time, and a command cut off is cancelled at the RPC), so the newer command
    is someone else's: our setpoint does not hold, and the result says so. The battery is not at
    fault and is not blocked.
    """

    blocks: ClassVar[bool] = False


class CommandFailedError(CommandError):
    """Something outside distributord failed: the API, the inverter, the network, or time.

    The battery is blocked for a while (``status.md``).
    """


class LinkDownError(DistributordError):
    """The Microgrid API cannot be reached now (something outside; it is retried)."""


class SimAbort(DistributordError):  # noqa: N818  (an instruction to a servicer)
    """The simulator ends the current gRPC call with a status code (by name) and details."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class NoApiVersionError(LinkDownError):
    """The server answers, but serves none of the Microgrid API versions tried.

    Attributes:
        address: The server.
        tried: The versions asked for, in order.
    """

    def __init__(self, address: str, tried: Sequence[str]) -> None:
        super().__init__(
            f"no supported Microgrid API version at {address}: tried {', '.join(tried)}"
        )
        self.address = address
        self.tried = tuple(tried)


class StreamBrokenError(LinkDownError):
    """A stream ended with an error (something outside: the server or the network).

    Attributes:
        code: The gRPC status code's name, or the exception's type name.
        details: What the server said.
    """

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


# --- the control protocol's clients and the command line ----------------------------------------


class PowerSyntaxError(DistributordError, ValueError):
    """The text is not a power in the grammar of ``core.units``: the caller typed it wrong."""


class CtlError(DistributordError):
    """Base class of the ways a client's exchange with the daemon fails.

    ``distributorctl`` maps each to an exit code (``distributord.cli.ctl.ExitCode``).
    """


class UnreachableError(CtlError):
    """Something outside: no daemon listens at the path, it refused us, or it went silent.

    Also raised when the daemon closes the connection before answering.
    """


class DaemonTimeoutError(UnreachableError):
    """Something outside: the daemon did not answer within the deadline.

    It is stuck or overloaded (or the socket's backlog is full); a request sent may still be
    applied.
    """


class BadReplyError(CtlError):
    """The answer is not a JSON-RPC reply of the expected shape.

    Something outside is at fault: a different program listens at the path, or a daemon of a
    different protocol version.
    """


class DaemonError(CtlError):
    """The daemon refused the request with a JSON-RPC error.

    Usually the request was wrong (``-32602``); or the daemon is overloaded (``-32001``) or
    does not trust us (``-32003``).

    Attributes:
        code: The JSON-RPC error code.
        message: The error's message.
        data: The error's ``data`` member, if any.
    """

    def __init__(self, code: object, message: object, data: object = None) -> None:
        text = f"distributord answered error {code}: {message}"
        if data is not None:
            text += f" ({data if isinstance(data, str) else json.dumps(data)})"
        super().__init__(text)
        self.code = code
        self.message = message
        self.data = data


class HelloRefusedError(DaemonError):
    """The daemon refused ``hello``: the program is not configured, or the user may not act as it.

    Usually -32003. The message is the daemon's, followed by the program that was asked for.
    """

    def __init__(self, program: str, refusal: DaemonError) -> None:
        super().__init__(refusal.code, refusal.message, refusal.data)
        self.program = program
        self.args = (f"{refusal} (to hello as program {program!r})",)


class UsageError(DistributordError):
    """The command line is wrong: the user typed it wrong (nothing was sent).

    Attributes:
        problem: What is wrong, in argparse's words (``argument POWER: ...``).
        prog: The command it is about (``distributorctl set-power``).
        usage: That command's usage, as argparse prints it.
    """

    def __init__(self, problem: str, *, prog: str, usage: str) -> None:
        super().__init__(f"{prog}: error: {problem}")
        self.problem = problem
        self.prog = prog
        self.usage = usage
