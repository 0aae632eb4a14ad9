"""``distributorctl``'s command line: the parser, its argument types and the socket to use.

The flags are a contract (``spec/operations.md``): outside tools depend on them.

Theory of operation
-------------------
* **Which socket.** ``--socket``, else ``$DISTRIBUTORD_SOCKET``, else the daemon's default
  (:data:`~distributord.core.protocol.DEFAULT_SOCKET`); an empty value counts as not given.
* **Negative powers as typed.** argparse takes ``-5kW`` for an option; ``set-power``'s and
  ``propose``'s parsers are told that anything starting with ``-`` and a digit is a value
  (POWER, or the value of ``--lower``, ``--upper`` or ``--reactive-var``), which is safe because
  none of their options look like that. ``-- -5kW`` keeps working at the end of the line.
* **Reactive power in var.** ``--reactive-var`` takes POWER's grammar with var for W (``-3kvar``,
  ``500var``, ``1.2Mvar``, a bare number is var), read by the one power parser; a watt unit
  there is refused: active and reactive power are not interchangeable.
* **Usage errors are argparse's words.** A bad POWER, battery list, timeout or ttl is refused
  by its argument type with a message naming what was expected, before anything is sent. So are
  the rules that span arguments (:func:`parse`): a ``propose`` gives at least one of POWER,
  ``--lower`` and ``--upper``, and ``--lower`` is not above ``--upper``, as the daemon
  requires. The parser raises them as :class:`~distributord.core.errors.UsageError` instead of
  printing and exiting, so that the caller prints them as argparse would, or with ``--json``
  as a JSON error; whether ``--json`` was given is read from the words themselves
  (:func:`wants_json`), since a line that does not parse has no namespace.
* **Programs.** ``--program NAME`` is passed on as it is: whether the name is configured and
  the user may act as it is the daemon's to say (``hello``), so the client does not check it.
* **Global flags anywhere.** ``--socket``, ``--json`` and ``--program`` are accepted before the
  command and after it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from distributord import __version__
from distributord.core.errors import PowerSyntaxError, UsageError
from distributord.core.model import MAX_BATTERIES_PER_REQUEST, MAX_REQUEST_TIMEOUT_S
from distributord.core.protocol import DEFAULT_SOCKET
from distributord.core.units import parse_power

SOCKET_ENV = "DISTRIBUTORD_SOCKET"
"""Environment variable naming the socket when ``--socket`` is not given."""

MAX_TTL_S = 86_400.0
"""The longest ``--ttl``: the daemon's own cap (``core.arbitration.wire.MAX_TTL_S``, one day).
Repeated here rather than imported, so that starting ``distributorctl`` does not load the
configuration parser and the arbiter; a test keeps the two equal."""

_EPILOG = f"""\
socket:
  --socket PATH, else ${SOCKET_ENV}, else {DEFAULT_SOCKET}

program:
  --program NAME acts as that program of the daemon's configuration: the client says
  hello as NAME first, and the daemon checks that your user may act as it (error -32003,
  exit 4, if not). Without --program the connection acts as the program "default".

exit status:
  0  success
  1  set-power, propose: the outcome is not success (partial_failure, out_of_bounds, error,
     ignored)
  2  usage error (unknown flag, bad POWER, bad battery ids); nothing was sent
  3  the daemon cannot be reached (no socket, refused, connection closed - also how watch
     ends when the daemon goes away)
  4  the daemon answered with a JSON-RPC error (hello's refusal too)
  5  set-power, propose: the outcome is success, but power could not be placed
     (excess_power_w is not 0: the batteries' bounds, or for propose what arbitration did
     not grant; the float32 rounding of setpoints does not count). Active power only:
     reactive power that could not be placed (reactive.excess_var) is shown but does not
     change the exit status, nor does a target still ramping (what is on its way is not
     excess)
  6  the daemon did not answer in time
  7  the daemon's answer is unusable (not JSON-RPC, or not the shape expected)
  130  interrupted (Ctrl-C), except watch, which exits 0 on Ctrl-C
  3, 6, 7 and 130 once set-power, propose or withdraw was sent: it may still be applied.

errors:
  One line on stderr; with --json, one JSON object on stdout instead (watch: the last line),
  with the same exit status:
    {{"error": {{"kind": KIND, "exit_code": N, "message": TEXT, "may_be_applied": BOOL, ...}}}}
  KIND is usage, unreachable, daemon_error, timeout, bad_reply or interrupted. A daemon_error
  adds "rpc_error" (the daemon's JSON-RPC error: code, message, data) and, for a refused
  hello, "program"; a usage error adds "usage".
"""

_SET_POWER_EPILOG = """\
POWER is a number with an optional unit: W or kW in any case, or MW (mW, mw and Mw are
refused: mW is a milliwatt in SI); a bare number is watts. Positive charges, negative
discharges:
  set-power -5kW --batteries 1001,1002      discharge 5 kW
  set-power 1.2MW --batteries 1001          charge 1.2 MW
  set-power '-250 W' --batteries 1001       quote a power that contains a space
  set-power 0 --batteries 1001,1002         release the batteries
  set-power -8kW --batteries 1001 --reactive-var 3kvar   and 3 kvar inductive

--reactive-var VAR is the total reactive power for the set's inverters, in var, kvar or Mvar
(a bare number is var): positive inductive (current lagging), negative capacitive, the
Microgrid API's sign; without it, none (what stands is released). The result then shows the
reactive power per battery, what failed and what could not be placed; while a ramp ([ramp] in
the daemon's configuration) is under way, how far the target has got.

The exit status is 0 only if the outcome is success and all the power was placed: 1 for
another outcome, 5 for power the batteries could not take (see distributorctl --help);
reactive power they could not take is shown, not an exit status.
"""

_PROPOSE_EPILOG = """\
A proposal of the program (--program, else "default") for exactly this battery set: POWER is
what it wants for the set, --lower and --upper the limits it imposes on every program of lower
priority. Give at least one of the three; bounds alone make a limiter. Powers take the units
of set-power (see set-power --help); positive charges, negative discharges.
  propose -5kW --batteries 1001,1002                      want -5 kW
  propose --batteries 1001,1002 --lower -20kW --upper 0   bound the lower priorities
  propose 10kW --batteries 1001 --ttl 300                 for 5 minutes
  propose 0 --batteries 1001 --reactive-var -2kvar        2 kvar capacitive, no active power
--reactive-var is set-power's: the reactive power wanted, merged by priority apart from the
active powers.
The proposal replaces the program's previous one on the same set, and stands until it is
replaced, withdrawn (withdraw) or, with --ttl, expires: it outlives this command. The reply
shows the outcome as set-power does, and what arbitration granted and why. The exit status
is 0 only if the outcome is success and all the power proposed was placed: 1 for another
outcome, 5 for power that was not granted or that the batteries could not take.
"""

_WITHDRAW_EPILOG = """\
Ends the program's (--program, else "default") proposal on exactly the set --batteries names,
or all of its proposals without --batteries. Batteries that no proposal holds any more are
commanded 0 W. Withdrawing nothing is not an error.
"""

# set-power's options all start with "--" and a letter, so anything starting with "-" and a
# digit (or "-." and a digit) can only be POWER or an option's value. argparse keeps this test
# in a private attribute; tests/cli/ctl/test_args.py checks that negative powers parse, so a
# Python release that changes it fails loudly. (Python 3.13 itself widened it to this very
# pattern.)
_NEGATIVE_VALUE = re.compile(r"^-\.?[0-9]")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is raised (:class:`UsageError`), not printed."""

    def error(self, message: str) -> NoReturn:
        """Raise ``message`` with this (sub)command's usage."""
        raise UsageError(message, prog=self.prog, usage=self.format_usage())


def parser() -> argparse.ArgumentParser:
    """The command line of ``distributorctl``."""
    return _parsers()[0]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a command line, with the rules that span arguments.

    Raises:
        UsageError: The line does not parse, or breaks a rule; nothing is printed.
        SystemExit: ``--help`` or ``--version``, printed (0).
    """
    top, propose = _parsers()
    args = top.parse_args(argv)
    if args.command == "propose":
        if args.power is None and args.lower is None and args.upper is None:
            propose.error("give at least one of POWER, --lower and --upper")
        if args.lower is not None and args.upper is not None and args.lower > args.upper:
            propose.error(f"--lower ({args.lower:g} W) is above --upper ({args.upper:g} W)")
    return args


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The whole command line, and ``propose``'s (for its usage errors)."""
    top = _Parser(
        prog="distributorctl",
        description="Control distributord.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"distributorctl {__version__}")
    top.add_argument("--socket", metavar="PATH", help="control socket path")
    top.add_argument("--json", action="store_true", help="print JSON instead of tables")
    top.add_argument(
        "--program",
        metavar="NAME",
        help='act as this configured program (hello first); default: the program "default"',
    )
    # The same flags are accepted after the command too (`distributorctl status --json`);
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    common = _Parser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="as above")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as above")
    common.add_argument("--program", metavar="NAME", default=argparse.SUPPRESS, help="as above")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("ping", parents=[common], help="check that the daemon answers")
    commands.add_parser("status", parents=[common], help="battery status")
    commands.add_parser("components", parents=[common], help="managed battery/inverter pairs")
    commands.add_parser(
        "watch", parents=[common], help="every battery's status, then each change, until Ctrl-C"
    )
    commands.add_parser(
        "proposals", parents=[common], help="every live proposal: who holds which batteries"
    )
    set_power = commands.add_parser(
        "set-power",
        parents=[common],
        help="charge (+) or discharge (-) batteries",
        epilog=_SET_POWER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    set_power._negative_number_matcher = _NEGATIVE_VALUE  # see _NEGATIVE_VALUE
    set_power.add_argument(
        "power", metavar="POWER", type=_power_argument, help="e.g. -5kW, 1.2MW, 300W"
    )
    set_power.add_argument(
        "--batteries",
        required=True,
        metavar="ID[,ID...]",
        type=_battery_ids_argument,
        help="battery component ids, comma-separated",
    )
    set_power.add_argument(
        "--timeout",
        type=_timeout_argument,
        metavar="S",
        help=f"deadline for the inverter commands, in (0, {MAX_REQUEST_TIMEOUT_S:g}] s "
        "(default: the daemon's)",
    )
    set_power.add_argument(
        "--no-adjust",
        action="store_true",
        help="refuse (out_of_bounds) instead of trimming power the batteries cannot take",
    )
    set_power.add_argument(*_REACTIVE_FLAG, **_REACTIVE_OPTION)
    propose = commands.add_parser(
        "propose",
        parents=[common],
        help="propose power and/or bounds for batteries, as a program with a priority",
        epilog=_PROPOSE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    propose._negative_number_matcher = _NEGATIVE_VALUE  # see _NEGATIVE_VALUE
    propose.add_argument(
        "power",
        metavar="POWER",
        nargs="?",
        type=_power_argument,
        help="what the program wants for the set, e.g. -5kW (optional: bounds only)",
    )
    propose.add_argument(
        "--batteries",
        required=True,
        metavar="ID[,ID...]",
        type=_battery_ids_argument,
        help="the exact battery set, comma-separated ids",
    )
    propose.add_argument(
        "--lower",
        metavar="P",
        type=_power_argument,
        help="lowest power left to the programs of lower priority, e.g. -20kW",
    )
    propose.add_argument(
        "--upper",
        metavar="P",
        type=_power_argument,
        help="highest power left to the programs of lower priority, e.g. 20kW",
    )
    propose.add_argument(
        "--ttl",
        metavar="S",
        type=_ttl_argument,
        help=f"the proposal expires after S seconds, in (0, {MAX_TTL_S:g}] "
        "(default: it stands until replaced or withdrawn)",
    )
    propose.add_argument(*_REACTIVE_FLAG, **_REACTIVE_OPTION)
    withdraw = commands.add_parser(
        "withdraw",
        parents=[common],
        help="end the program's proposals (all, or the one on --batteries)",
        epilog=_WITHDRAW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    withdraw.add_argument(
        "--batteries",
        metavar="ID[,ID...]",
        type=_battery_ids_argument,
        help="the exact set whose proposal to end (default: all of the program's)",
    )
    return top, propose


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the words ask for ``--json``, even if they do not parse.

    ``--json`` (or an abbreviation of it argparse would take: ``--js``) anywhere before a
    ``--``: every command takes it, before the command and after it.
    """
    for word in argv:
        if word == "--":
            return False
        if len(word) >= len("--j") and "--json".startswith(word):
            return True
    return False


def _power_argument(text: str) -> float:
    try:
        return parse_power(text)
    except PowerSyntaxError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_REACTIVE_EXPECTED = (
    "expected a number with an optional unit var, kvar or Mvar, e.g. -3kvar, 500var "
    "(+ inductive, - capacitive)"
)


def _reactive_argument(text: str) -> float:
    """``"-3kvar"`` → ``-3000.0``: POWER's grammar (:func:`parse_power`) with var for W."""
    body = text.rstrip()
    if body.lower().endswith("var"):
        body = body[: -len("var")] + "W"
    elif body[-1:].isalpha():  # a unit, but not one of var: "3kW" is not reactive power
        body = "?"
    try:
        return parse_power(body)
    except PowerSyntaxError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a reactive power; {_REACTIVE_EXPECTED}"
        ) from None


_REACTIVE_FLAG = ("--reactive-var",)
_REACTIVE_OPTION: Mapping[str, Any] = {
    "metavar": "VAR",
    "type": _reactive_argument,
    "help": "total reactive power for the set's inverters, e.g. 6kvar, -500var: + inductive, "
    "- capacitive (default: none)",
}
"""``set-power``'s and ``propose``'s ``--reactive-var``: one option, the same in both."""

_BATTERY_ID = re.compile(r"[0-9]+")


def _battery_ids_argument(text: str) -> list[int]:
    """``"1001,1002"`` → ``[1001, 1002]``: unique non-negative integers, 1 to 1024 of them."""
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if not _BATTERY_ID.fullmatch(item)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: battery ids are non-negative integers separated by commas "
            f"(e.g. 1001,1002); not an id: {', '.join(repr(b) for b in bad)}"
        )
    ids = [int(item) for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise argparse.ArgumentTypeError(
            f"{text!r}: each battery may be named once; repeated: {', '.join(map(str, duplicates))}"
        )
    if len(ids) > MAX_BATTERIES_PER_REQUEST:
        raise argparse.ArgumentTypeError(
            f"{len(ids)} batteries named; at most {MAX_BATTERIES_PER_REQUEST} per request"
        )
    return ids


def _timeout_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0.0 < seconds <= MAX_REQUEST_TIMEOUT_S:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"{text!r}: the timeout is a number of seconds in (0, {MAX_REQUEST_TIMEOUT_S:g}]"
        )
    return seconds


def _ttl_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0.0 < seconds <= MAX_TTL_S:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"{text!r}: the ttl is a number of seconds in (0, {MAX_TTL_S:g}]"
        )
    return seconds


def socket_path(given: str | None, environ: Mapping[str, str]) -> str:
    """The socket to use: ``--socket``, else ``$DISTRIBUTORD_SOCKET``, else the default.

    An empty value counts as not given.
    """
    return given or environ.get(SOCKET_ENV) or DEFAULT_SOCKET
