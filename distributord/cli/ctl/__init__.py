"""``distributorctl``: talk to a running distributord over its control socket.

The flags are a contract (``spec/operations.md``): outside tools depend on them.

Theory of operation
-------------------
One invocation, one connection, one request. The client connects to the Unix socket
(``--socket``, else ``$DISTRIBUTORD_SOCKET``, else the daemon's default), writes one JSON-RPC 2.0
request line with id 1 and reads lines until the reply with that id arrives. It uses only the
standard library's blocking ``socket`` so that it starts fast and runs anywhere the daemon does.

* **Every exchange has a deadline.** Connecting, writing and reading share one deadline:
  :data:`CALL_TIMEOUT_S` for the questions the daemon answers from memory, and for ``set-power``
  the request's own deadline (or the protocol's longest, when ``--timeout`` is not given: the
  configured default is the daemon's to know) plus :data:`SET_POWER_MARGIN_S`. Giving up does
  not cancel a ``set-power`` request; the message says so.
* **Which lines are ours.** A reply carries our id. An error reply with id ``null`` answers a
  line the daemon could not parse, and on this connection that can only be ours. Notifications
  and replies to other ids are skipped, except ``status_changed`` while watching.
* **watch** subscribes (the ``{"subscribed": true}`` reply is not printed), then prints one line
  per ``status_changed`` notification, flushed at once so that a pipe sees it live. Ctrl-C ends
  it with exit 0. The daemon closing the connection (it stopped, restarted or cut off a
  subscriber that did not read) ends it with exit 3: the watch did not end by the user's
  choice, and a script looping ``until distributorctl watch`` can tell.
* **Negative powers as typed.** argparse takes ``-5kW`` for an option; ``set-power``'s parser
  is told that anything starting with ``-`` and a digit is a value, which is safe because none
  of its options look like that. ``-- -5kW`` keeps working at the end of the line.
* **Output.** Tables for people on stdout; with ``--json``, exactly the daemon's result as one
  JSON document (``watch``: the ``params`` of each notification, one object per line).
  Everything that went wrong on the way goes to stderr as one line, never a traceback.
* **Exit codes** (:class:`ExitCode`): 0 success; 1 a ``set-power`` outcome other than
  ``success``; 2 usage; 3 the daemon cannot be reached or gave no usable answer; 4 the daemon
  answered with a JSON-RPC error; 130 interrupted (Ctrl-C) other than during ``watch``.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from distributord import __version__
from distributord.core.config import DEFAULT_SOCKET
from distributord.core.errors import (
    BadReplyError,
    CtlError,
    DaemonError,
    PowerSyntaxError,
    UnreachableError,
)
from distributord.core.model import MAX_BATTERIES_PER_REQUEST, MAX_REQUEST_TIMEOUT_S
from distributord.core.units import format_power, parse_power

SOCKET_ENV = "DISTRIBUTORD_SOCKET"
"""Environment variable naming the socket when ``--socket`` is not given."""

CALL_TIMEOUT_S = 5.0
"""Deadline for ping, status, components and subscribing: the daemon answers those from memory,
so 5 s means it is stuck or overloaded, and a script should hear about it."""

SET_POWER_MARGIN_S = 10.0
"""Added to a set-power request's own deadline: room to wait behind a running request for the
same batteries and for the daemon's bookkeeping, so we do not give up before the daemon does."""

WATCH_IDLE_TIMEOUT_S: float | None = None
"""How long ``watch`` waits for the next notification: forever, since a quiet fleet may not
change for hours. (Tests set a bound so that a broken client fails instead of hanging.)"""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest reply line accepted. A status of 1024 batteries is well under 1 MiB; a line 64 times
longer than that is not distributord talking."""

REQUEST_ID = 1
"""One request per connection, so one id is enough."""

POWER_COLUMN_UNIT = "kW"
"""Table columns use one unit so that rows compare at a glance."""

NO_VALUE = "-"
"""Shown in a table cell for a value the daemon did not send."""


class ExitCode(enum.IntEnum):
    """Exit statuses of ``distributorctl`` (documented in ``--help``)."""

    OK = 0
    NOT_SUCCESS = 1
    USAGE = 2
    UNREACHABLE = 3
    DAEMON_ERROR = 4
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def exit_code(error: CtlError) -> ExitCode:
    """The exit status for a failed exchange: 4 when the daemon said no, else 3."""
    return ExitCode.DAEMON_ERROR if isinstance(error, DaemonError) else ExitCode.UNREACHABLE


# ---------------------------------------------------------------------------------------------
# The client


class Connection:
    """One JSON-RPC connection to the daemon: write requests, read messages line by line.

    Args:
        path: The socket path, named in every error message.
        deadline: ``time.monotonic()`` value by which connecting must succeed.
    """

    def __init__(self, path: str, deadline: float) -> None:
        self.path = path
        self._buffer = b""
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.settimeout(_remaining(deadline))
            self._socket.connect(path)
        except OSError as error:
            self._socket.close()
            raise UnreachableError(
                f"cannot reach distributord at {path}: {_describe(error)}"
            ) from None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._socket.close()

    def send(self, message: Mapping[str, Any], deadline: float) -> None:
        """Write one message as one line.

        Raises:
            UnreachableError: The daemon went away or did not take the line in time.
        """
        line = json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            self._socket.settimeout(_remaining(deadline))
            self._socket.sendall(line.encode())
        except OSError as error:
            raise UnreachableError(
                f"lost distributord at {self.path}: {_describe(error)}"
            ) from None

    def messages(self, deadline: float | None) -> Iterator[dict[str, Any]]:
        """Yield each JSON object the daemon sends, in order.

        Args:
            deadline: ``time.monotonic()`` value for the whole iteration; ``None`` for none.

        Raises:
            UnreachableError: The deadline passed, or the daemon closed the connection.
            BadReplyError: A line is not a JSON object, or is absurdly long.
        """
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                if line.strip():
                    yield _decode(line)
                continue
            if len(self._buffer) > MAX_LINE_BYTES:
                raise BadReplyError(
                    f"distributord at {self.path} sent a line longer than {MAX_LINE_BYTES} bytes"
                )
            try:
                self._socket.settimeout(None if deadline is None else _remaining(deadline))
                chunk = self._socket.recv(65536)
            except TimeoutError:
                raise UnreachableError(
                    f"distributord at {self.path} did not answer in time"
                ) from None
            except OSError as error:
                raise UnreachableError(
                    f"lost distributord at {self.path}: {_describe(error)}"
                ) from None
            if not chunk:
                raise UnreachableError(f"distributord at {self.path} closed the connection")
            self._buffer += chunk

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        deadline: float,
        on_notification: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """Send one request and wait for its reply.

        Args:
            method: The JSON-RPC method.
            params: Its params, or ``None`` to send none.
            deadline: ``time.monotonic()`` value for the whole exchange.
            on_notification: Called with each notification that arrives before the reply.

        Returns:
            The reply's ``result``.

        Raises:
            DaemonError: The reply is a JSON-RPC error.
            UnreachableError: No reply in time, or the connection closed.
            BadReplyError: The daemon sent something that is not JSON-RPC.
        """
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": REQUEST_ID, "method": method}
        if params is not None:
            request["params"] = params
        self.send(request, deadline)
        for message in self.messages(deadline):
            if "id" not in message:
                if on_notification is not None:
                    on_notification(message)
                continue
            if message["id"] == REQUEST_ID and "result" in message:
                return message["result"]
            if message["id"] in (REQUEST_ID, None) and "error" in message:
                error = message["error"]
                if not isinstance(error, dict):
                    raise BadReplyError(f"distributord sent a malformed error: {error!r}")
                raise DaemonError(error.get("code"), error.get("message"), error.get("data"))
            if message["id"] == REQUEST_ID:
                raise BadReplyError("distributord sent a reply with neither result nor error")
        raise AssertionError("messages() ends only by raising")  # pragma: no cover


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline``; raises :class:`TimeoutError` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _describe(error: OSError) -> str:
    """Say what a socket error means for someone trying to reach the daemon."""
    match error:
        case FileNotFoundError():
            return f"no such socket (is distributord running? set --socket or ${SOCKET_ENV})"
        case ConnectionRefusedError():
            return "connection refused (nothing listens there: a stale socket?)"
        case PermissionError():
            return "permission denied (is your user allowed to use the socket?)"
        case TimeoutError():
            return "timed out"
        case _:
            return error.strerror or str(error)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        raise BadReplyError(f"distributord sent a line that is not JSON: {line[:200]!r}") from None
    if not isinstance(message, dict):
        raise BadReplyError(f"distributord sent JSON that is not an object: {line[:200]!r}")
    return message


# ---------------------------------------------------------------------------------------------
# The command line


_EPILOG = f"""\
socket:
  --socket PATH, else ${SOCKET_ENV}, else {DEFAULT_SOCKET}

exit status:
  0  success
  1  set-power: the outcome is not success (partial_failure, out_of_bounds, error, ignored)
  2  usage error (unknown flag, bad POWER, bad battery ids)
  3  the daemon cannot be reached (no socket, refused, timed out, connection closed -
     also how watch ends when the daemon goes away) or its answer is unusable
  4  the daemon answered with a JSON-RPC error (its code, message and data go to stderr)
  130  interrupted (Ctrl-C), except watch, which exits 0 on Ctrl-C
"""

_SET_POWER_EPILOG = """\
POWER is a number with an optional unit: W, kW or MW, case-insensitive (so mW and mw are
megawatts too); a bare number is watts. Positive charges, negative discharges:
  set-power -5kW --batteries 1001,1002      discharge 5 kW
  set-power 1.2MW --batteries 1001          charge 1.2 MW
  set-power '-250 W' --batteries 1001       quote a power that contains a space
  set-power 0 --batteries 1001,1002         release the batteries
The exit status is not 0 unless the outcome is success.
"""

# set-power's options all start with "--" and a letter, so anything starting with "-" and a
# digit (or "-." and a digit) can only be POWER or an option's value. argparse keeps this test
# in a private attribute; tests/test_ctl.py checks that negative powers parse, so a Python
# release that changes it fails loudly. (Python 3.13 itself widened it to this very pattern.)
_NEGATIVE_VALUE = re.compile(r"^-\.?[0-9]")


def parser() -> argparse.ArgumentParser:
    """The command line of ``distributorctl``."""
    top = argparse.ArgumentParser(
        prog="distributorctl",
        description="Control distributord.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"distributorctl {__version__}")
    top.add_argument("--socket", metavar="PATH", help="control socket path")
    top.add_argument("--json", action="store_true", help="print JSON instead of tables")
    # The same two flags are accepted after the command too (`distributorctl status --json`);
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="as above")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as above")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("ping", parents=[common], help="check that the daemon answers")
    commands.add_parser("status", parents=[common], help="battery status")
    commands.add_parser("components", parents=[common], help="managed battery/inverter pairs")
    commands.add_parser("watch", parents=[common], help="follow status changes until Ctrl-C")
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
    return top


def _power_argument(text: str) -> float:
    try:
        return parse_power(text)
    except PowerSyntaxError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def socket_path(given: str | None, environ: Mapping[str, str]) -> str:
    """The socket to use: ``--socket``, else ``$DISTRIBUTORD_SOCKET``, else the default.

    An empty value counts as not given.
    """
    return given or environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributorctl``.

    Returns:
        The exit status (:class:`ExitCode`); argparse has printed usage errors and ``--help``.
    """
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # usage error (2), --help or --version (0): already printed
        return stop.code if isinstance(stop.code, int) else ExitCode.USAGE
    path = socket_path(args.socket, os.environ)
    try:
        if args.command == "watch":
            return _watch(path, as_json=args.json)
        return _run(args, path)
    except CtlError as error:
        print(f"distributorctl: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("distributorctl: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def _run(args: argparse.Namespace, path: str) -> int:
    """Run one request/reply command and print its result."""
    method, params, timeout = _request(args)
    deadline = time.monotonic() + timeout
    with Connection(path, deadline) as connection:
        try:
            result = connection.call(method, params, deadline)
        except UnreachableError as error:
            if method == "set_power":
                raise UnreachableError(f"{error} (the request may still be applied)") from None
            raise
    code = ExitCode.OK
    if method == "set_power":
        outcome = result.get("outcome") if isinstance(result, dict) else None
        code = ExitCode.OK if outcome == "success" else ExitCode.NOT_SUCCESS
    if args.json:
        lines = [json.dumps(result, indent=2, ensure_ascii=False)]
    else:
        render = _RENDERERS[method]
        try:
            lines = render(result, path)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BadReplyError(
                f"unexpected {method} result from distributord ({type(error).__name__}: "
                f"{error}): {json.dumps(result)[:500]}"
            ) from None
    try:
        _write(lines, sys.stdout)
    except BrokenPipeError:  # `| head`: the reader has all it wanted; the outcome still counts
        _discard_stdout()
    return code


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None, float]:
    """The method, params and client-side timeout for a request/reply command."""
    match args.command:
        case "ping":
            return "ping", None, CALL_TIMEOUT_S
        case "status":
            return "get_status", None, CALL_TIMEOUT_S
        case "components":
            return "list_components", None, CALL_TIMEOUT_S
        case "set-power":
            params: dict[str, Any] = {"power_w": args.power, "batteries": args.batteries}
            if args.timeout is not None:
                params["request_timeout_s"] = args.timeout
            if args.no_adjust:
                params["adjust_power"] = False
            own = MAX_REQUEST_TIMEOUT_S if args.timeout is None else args.timeout
            return "set_power", params, own + SET_POWER_MARGIN_S
    raise AssertionError(f"unknown command {args.command!r}")  # argparse allows no other


def _watch(path: str, *, as_json: bool) -> int:
    """Subscribe and print status changes until Ctrl-C (exit 0) or the daemon goes (exit 3)."""

    def show(message: dict[str, Any]) -> None:
        if message.get("method") != "status_changed":
            return
        params = message.get("params")
        if as_json:  # exactly what the daemon sent, whatever its shape
            line = json.dumps(params, ensure_ascii=False)
        else:
            try:
                if not isinstance(params, dict):
                    raise TypeError("params is not an object")
                line = format_status_change(params, time.localtime())
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BadReplyError(
                    f"unexpected status_changed notification: {json.dumps(message)[:500]}"
                ) from None
        print(line, flush=True)

    try:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        with Connection(path, deadline) as connection:
            connection.call("subscribe_status", None, deadline, on_notification=show)
            if not as_json:
                print(f"watching distributord at {path} (Ctrl-C to stop)", file=sys.stderr)
            idle = WATCH_IDLE_TIMEOUT_S
            while True:
                for message in connection.messages(
                    None if idle is None else time.monotonic() + idle
                ):
                    if "id" not in message:
                        show(message)
                    if idle is not None:
                        break  # a fresh deadline for the next message
    except KeyboardInterrupt:  # the user stopped watching: the way a watch is meant to end
        return ExitCode.OK
    except BrokenPipeError:  # the reader of our pipe stopped (`| head`): as good as Ctrl-C
        _discard_stdout()
        return ExitCode.OK


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again.

    (The recipe from the ``signal`` module's documentation on SIGPIPE.)
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor behind stdout: nothing to protect
        pass


def _write(lines: Sequence[str], stream: TextIO) -> None:
    for line in lines:
        print(line, file=stream)


# ---------------------------------------------------------------------------------------------
# Rendering for people. Pure functions of the result; a missing required field raises KeyError
# (reported as an unusable reply), optional ones show as NO_VALUE.


def format_duration(seconds: float) -> str:
    """``12.3 s``, ``5 min 07 s``, ``2 h 05 min``, ``3 d 04 h``."""
    if not math.isfinite(seconds) or seconds < 0:
        return f"{seconds} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> list[str]:
    """Lay out columns two spaces apart; columns whose index is in ``right`` align right."""
    widths = [max([len(cell) for cell in column]) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_ping(result: Mapping[str, Any], path: str) -> list[str]:
    """``distributord 0.1.0 at PATH, up 1 h 02 min``."""
    return [f"distributord {result['version']} at {path}, up {format_duration(result['uptime_s'])}"]


def render_status(result: Mapping[str, Any], path: str) -> list[str]:
    """One row per battery, then the counts per status."""
    del path  # the same signature as the other renderers
    batteries = result["batteries"]
    if not batteries:
        return ["no batteries"]
    rows = []
    counts = {"working": 0, "uncertain": 0, "not_working": 0}
    for battery in batteries:
        status = str(battery["status"])
        counts[status] = counts.get(status, 0) + 1
        soc = battery.get("soc_pct")
        setpoint = battery.get("setpoint_w")
        age = battery.get("data_age_s")
        reasons = ", ".join(battery["reasons"])
        blocked = battery.get("blocked_until_s")  # seconds left in the blocking window
        if blocked is not None:
            reasons += f" ({format_duration(blocked)} left)"
        rows.append(
            [
                str(battery["id"]),
                str(battery["inverter_id"]),
                status,
                NO_VALUE if soc is None else f"{soc:.1f} %",
                NO_VALUE if setpoint is None else format_power(setpoint, POWER_COLUMN_UNIT),
                NO_VALUE if age is None else format_duration(age),
                reasons,
            ]
        )
    header = ["BATTERY", "INVERTER", "STATUS", "SOC", "SETPOINT", "DATA AGE", "REASONS"]
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    return [*table(header, rows, right=(0, 1, 3, 4, 5)), f"{len(batteries)} batteries: {summary}"]


def render_components(result: Mapping[str, Any], path: str) -> list[str]:
    """The managed pairs, then what was left out and why."""
    del path
    pairs = result["pairs"]
    left_out = result["left_out"]
    lines = [f"{len(pairs)} battery/inverter pairs managed"]
    if pairs:
        rows = [[str(pair["battery_id"]), str(pair["inverter_id"])] for pair in pairs]
        lines += table(["BATTERY", "INVERTER"], rows, right=(0, 1))
    if left_out:
        lines.append(f"{len(left_out)} batteries left out")
        rows = [[str(item["battery_id"]), str(item["reason"])] for item in left_out]
        lines += table(["BATTERY", "REASON"], rows, right=(0,))
    else:
        lines.append("no batteries left out")
    return lines


def render_set_power(result: Mapping[str, Any], path: str) -> list[str]:
    """The outcome in one line, then one row per battery when power was commanded."""
    del path
    outcome = result["outcome"]
    requested = format_power(result["power_w"]) if "power_w" in result else "power"
    match outcome:
        case "success" | "partial_failure":
            headline = (
                f"{outcome}: {requested} requested, {format_power(result['succeeded_power_w'])} "
                f"commanded to {_count(result['succeeded_batteries'])}"
            )
            if outcome == "partial_failure":
                headline += (
                    f", {format_power(result['failed_power_w'])} failed on "
                    f"{_count(result['failed_batteries'])} "
                    f"({', '.join(map(str, result['failed_batteries']))})"
                )
            excess = result.get("excess_power_w", 0.0)
            if excess:
                headline += f", {format_power(excess)} could not be placed"
            return [headline, *_distribution_table(result)]
        case "out_of_bounds":
            return [
                f"out_of_bounds: {requested} requested, the batteries allow "
                f"{_format_bounds(result['bounds'])}; nothing was commanded"
            ]
        case _:  # error, ignored, and any outcome a newer daemon may add
            message = result.get("message")
            return [f"{outcome}: {message}" if message else str(outcome)]


def _count(batteries: Sequence[Any]) -> str:
    return f"{len(batteries)} battery" if len(batteries) == 1 else f"{len(batteries)} batteries"


def _format_bounds(bounds: Mapping[str, float | None]) -> str:
    """``-20.00 kW to 20.00 kW``, or with an exclusion zone ``0 W, A to B or C to D``."""

    def bound(name: str) -> str:
        value = bounds[name]
        return "unknown" if value is None else format_power(value)  # the protocol's null

    inclusion = (bound("inclusion_lower_w"), bound("inclusion_upper_w"))
    if bounds["exclusion_lower_w"] == 0 and bounds["exclusion_upper_w"] == 0:
        return f"{inclusion[0]} to {inclusion[1]}"
    return (
        f"0 W, {inclusion[0]} to {bound('exclusion_lower_w')} or "
        f"{bound('exclusion_upper_w')} to {inclusion[1]}"
    )


def _distribution_table(result: Mapping[str, Any]) -> list[str]:
    """Requested batteries in request order, then any others the distribution names."""
    distribution: Mapping[str, float] = result.get("distribution", {})
    reasons: Mapping[str, str] = result.get("reasons", {})  # an extension; may be absent
    failed = {str(b) for b in result.get("failed_batteries", [])}
    order = [str(b) for b in result.get("batteries", [])]
    order += sorted(set(distribution) - set(order), key=lambda b: (len(b), b))
    rows = []
    for battery in order:
        power = distribution.get(battery)
        state = "not used" if power is None else "failed" if battery in failed else "ok"
        rows.append(
            [
                battery,
                NO_VALUE if power is None else format_power(power, POWER_COLUMN_UNIT),
                state,
                str(reasons.get(battery, "")),
            ]
        )
    if not rows:
        return []
    return table(["BATTERY", "POWER", "RESULT", "REASON"], rows, right=(0, 1))


def format_status_change(params: Mapping[str, Any], when: time.struct_time) -> str:
    """One ``watch`` line: ``12:03:04 battery 1001: not_working (stale_battery_data)``."""
    line = f"{time.strftime('%H:%M:%S', when)} battery {params['id']}: {params['status']}"
    reasons = params.get("reasons") or []
    if reasons:
        line += f" ({', '.join(reasons)})"
    return line


_RENDERERS: Mapping[str, Callable[[Any, str], list[str]]] = {
    "ping": render_ping,
    "get_status": render_status,
    "list_components": render_components,
    "set_power": render_set_power,
}
