"""``distributorctl``: talk to a running distributord over its control socket.

The flags are a contract (``spec/operations.md``): outside tools depend on them. The command
line is :mod:`.args`, the connection :mod:`.transport` (over the rules of
:mod:`distributord.core.rpcclient`), the tables :mod:`.render`; this module runs a command.

Theory of operation
-------------------
One invocation, one connection, one command. The client connects to the Unix socket, writes one
JSON-RPC 2.0 request line and reads lines until the reply to it arrives.

* **Programs.** With ``--program NAME`` the command's request is preceded, on the same
  connection, by ``hello {"program": NAME}``, and sent only once the daemon has accepted it; a
  refusal (-32003: not configured, or not for this user) ends the command like any JSON-RPC
  error, naming the program. Without ``--program`` no hello is sent and the daemon treats the
  connection as the program ``default``. The client never asks for ``until_disconnect``: its
  connection closes as soon as the command is done, and would end the proposal with it.
* **Every exchange has a deadline.** Connecting, writing and reading share one deadline:
  :data:`CALL_TIMEOUT_S` for the questions the daemon answers from memory (``proposals`` and
  ``withdraw`` among them), and for ``set-power`` the request's own deadline (or the protocol's
  longest, when ``--timeout`` is not given: the configured default is the daemon's to know) plus
  :data:`SET_POWER_MARGIN_S`. ``propose`` has no ``--timeout``: its deadline is the protocol's
  longest plus the margin, since the daemon replies after the first application that includes
  it, as for ``set_power``. A ``hello`` is answered from memory: it gets :data:`CALL_TIMEOUT_S`
  within the command's deadline. Giving up does not cancel a ``set-power``, ``propose`` or
  ``withdraw`` request; the message says so.
* **watch** starts from the current state: it subscribes (the ``{"subscribed": true}`` reply
  is not printed), then asks for the status and prints every battery's, then one line per
  ``status_changed`` notification, flushed at once so that a pipe sees it live. In that order
  no change is lost: every change after the subscription is notified, and the status is newer
  than the subscription. The two are reconciled: notifications that arrived before the status
  reply are older than it and dropped; after it, one that says what the last line for that
  battery said already (it waited behind the reply) is no change and not printed. Ctrl-C ends
  it with exit 0. The daemon closing the connection (it stopped, restarted or cut off a
  subscriber that did not read) ends it with exit 3: the watch did not end by the user's
  choice, and a script looping ``until distributorctl watch`` can tell.
* **Output.** Tables for people on stdout; with ``--json``, exactly the daemon's result as one
  JSON document (``watch``: each battery's ``{"id", "status", "reasons"}``, as the
  notifications' ``params`` are, one object per line), once it has proved to be of the shape
  the table needs: a result is unusable (exit 7) with ``--json`` or without. Everything that
  went wrong goes to stderr as one line, never a traceback (a usage error: argparse's usage and
  line); with ``--json``, to stdout instead, as one JSON object ``{"error": {...}}``
  (:func:`error_object`), and nothing else is printed but what came before it (``watch``'s
  lines).
* **Exit codes** (:class:`ExitCode`, documented in ``--help``): 0 success; 1 a ``set-power``
  or ``propose`` outcome other than ``success``; 2 usage; 3 the daemon cannot be reached;
  4 the daemon answered with a JSON-RPC error (``hello``'s refusal too); 5 a ``success`` whose
  power could not all be placed (``excess_power_w``, beyond the float32 rounding of the
  setpoints: :func:`~distributord.cli.ctl.render.unplaced_power`; for ``propose`` that includes
  what arbitration did not grant); 6 no answer in time; 7 an answer that is unusable; 130
  interrupted (Ctrl-C) other than during ``watch``. An outcome other than ``success`` is 1
  whatever its excess: that some commands failed says more. Before issue 23, 6 and 7 were 3, and
  5 was 0. Exit 5 is about active power alone (``spec/operations.md`` names ``excess_power_w``):
  reactive power that could not be placed (``reactive.excess_var``) is shown, not an exit
  status, and a target still ramping is not excess either (the daemon leaves what is on its
  way out of ``excess_power_w``).
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from distributord.cli import discard_stdout
from distributord.cli.ctl.args import parse, socket_path, wants_json
from distributord.cli.ctl.render import RENDERERS, format_status_change, unplaced_power
from distributord.cli.ctl.transport import Connection
from distributord.core.errors import (
    BadReplyError,
    CtlError,
    DaemonError,
    DaemonTimeoutError,
    HelloRefusedError,
    UnreachableError,
    UsageError,
)
from distributord.core.model import MAX_REQUEST_TIMEOUT_S

CALL_TIMEOUT_S = 5.0
"""Deadline for ping, status, components and subscribing: the daemon answers those from memory,
so 5 s means it is stuck or overloaded, and a script should hear about it."""

SET_POWER_MARGIN_S = 10.0
"""Added to a set-power (or propose) request's own deadline: room to wait behind a running
request for the same batteries and for the daemon's bookkeeping, so we do not give up before the
daemon does."""

COMMANDING = frozenset({"set_power", "propose", "withdraw"})
"""Methods that change what the batteries are commanded: losing the daemon before their reply
does not mean they were not applied."""

OUTCOME_METHODS = frozenset({"set_power", "propose"})
"""Methods whose result has an ``outcome``: anything but ``success`` exits 1, and a ``success``
that could not place all the power exits 5."""

WATCH_IDLE_TIMEOUT_S: float | None = None
"""How long ``watch`` waits for the next notification: forever, since a quiet fleet may not
change for hours. (Tests set a bound so that a broken client fails instead of hanging.)"""


class ExitCode(enum.IntEnum):
    """Exit statuses of ``distributorctl`` (documented in ``--help``).

    With ``--json`` an error's ``kind`` is the name of its code in lower case.
    """

    OK = 0
    NOT_SUCCESS = 1
    USAGE = 2  # argparse's own
    UNREACHABLE = 3
    DAEMON_ERROR = 4
    NOT_PLACED = 5
    TIMEOUT = 6
    BAD_REPLY = 7
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it


Failed = CtlError | UsageError | KeyboardInterrupt
"""What ends a command early: an exchange that failed, a command line that did not parse, or
Ctrl-C."""


def exit_code(error: Failed) -> ExitCode:
    """The exit status for a command that ended early."""
    match error:
        case KeyboardInterrupt():
            return ExitCode.INTERRUPTED
        case UsageError():
            return ExitCode.USAGE
        case DaemonError():
            return ExitCode.DAEMON_ERROR
        case DaemonTimeoutError():
            return ExitCode.TIMEOUT
        case BadReplyError():
            return ExitCode.BAD_REPLY
        case _:
            return ExitCode.UNREACHABLE


def error_object(error: Failed, *, may_be_applied: bool = False) -> dict[str, Any]:
    """What ``--json`` prints for a command that ended early (``--help`` shows the shape).

    Args:
        error: What ended it.
        may_be_applied: A request that commands batteries was sent and its reply lost.

    Returns:
        ``{"error": {"kind", "exit_code", "message", "may_be_applied"}}``, with the daemon's
        JSON-RPC error as ``rpc_error`` for a ``daemon_error`` (and ``program`` for a
        ``hello`` refused), and the command's ``usage`` for a ``usage`` error. ``message`` is
        the line printed on stderr without ``--json`` (for a usage error: what is wrong).
    """
    code = exit_code(error)
    match error:
        case KeyboardInterrupt():
            message = "interrupted"
        case UsageError():
            message = f"{error.prog}: {error.problem}"
        case _:
            message = str(error)
    if may_be_applied:
        message += " (the request may still be applied)"
    fields: dict[str, Any] = {
        "kind": code.name.lower(),
        "exit_code": int(code),
        "message": message,
        "may_be_applied": may_be_applied,
    }
    if isinstance(error, DaemonError):
        rpc_error = {"code": error.code, "message": error.message}
        if error.data is not None:
            rpc_error["data"] = error.data
        fields["rpc_error"] = rpc_error
    if isinstance(error, HelloRefusedError):
        fields["program"] = error.program
    if isinstance(error, UsageError):
        fields["usage"] = error.usage.strip()
    return {"error": fields}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributorctl``.

    Returns:
        The exit status (:class:`ExitCode`); argparse has printed ``--help`` and
        ``--version``.
    """
    words = sys.argv[1:] if argv is None else list(argv)
    as_json = wants_json(words)
    try:
        args = parse(words)
    except UsageError as error:
        if as_json:
            return _failed(error, as_json=True)
        sys.stderr.write(error.usage)  # as argparse prints it: the usage, then PROG: error: ...
        print(error, file=sys.stderr)
        return ExitCode.USAGE
    except SystemExit as stop:  # --help or --version: already printed
        return stop.code if isinstance(stop.code, int) else ExitCode.OK
    path = socket_path(args.socket, os.environ)
    try:
        if args.command == "watch":
            return _watch(path, as_json=args.json, program=args.program)
        return _run(args, path)
    except CtlError as error:
        return _failed(error, as_json=args.json)
    except KeyboardInterrupt as interrupt:
        return _failed(interrupt, as_json=args.json)


def _failed(error: Failed, *, as_json: bool, may_be_applied: bool = False) -> ExitCode:
    """Say why the command ended early, on stderr or (``--json``) stdout; its exit status."""
    document = error_object(error, may_be_applied=may_be_applied)
    if not as_json:
        print(f"distributorctl: {document['error']['message']}", file=sys.stderr)
        return exit_code(error)
    try:
        print(json.dumps(document, ensure_ascii=False), flush=True)
    except BrokenPipeError:  # nobody reads our stdout: the exit status still tells
        discard_stdout()
    return exit_code(error)


def _run(args: argparse.Namespace, path: str) -> int:
    """Run one request/reply command and print its result."""
    method, params, timeout = _request(args)
    start = time.monotonic()
    deadline = start + timeout
    with Connection(path, deadline) as connection:
        if args.program is not None:
            _hello(connection, args.program, min(deadline, start + CALL_TIMEOUT_S))
        try:
            result = connection.call(method, params, deadline)
        except (UnreachableError, BadReplyError, KeyboardInterrupt) as error:
            if method in COMMANDING:  # sent: whether it was applied is not known
                return _failed(error, as_json=args.json, may_be_applied=True)
            raise
    try:
        code = _outcome_code(method, result)
        try:  # with --json too: a result the table cannot show is unusable either way
            lines = RENDERERS[method](result, path)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _unexpected(method, result, error) from None
    except BadReplyError as error:
        if method in COMMANDING:  # answered, so taken: what it did is not readable
            return _failed(error, as_json=args.json, may_be_applied=True)
        raise
    if args.json:
        lines = [json.dumps(result, indent=2, ensure_ascii=False)]
    try:
        _write(lines, sys.stdout)
    except BrokenPipeError:  # `| head`: the reader has all it wanted; the outcome still counts
        discard_stdout()
    return code


def _outcome_code(method: str, result: Any) -> ExitCode:
    """0, or 1 for an outcome other than success, or 5 for a success that left power unplaced."""
    if method not in OUTCOME_METHODS:
        return ExitCode.OK
    outcome = result.get("outcome") if isinstance(result, dict) else None
    if outcome != "success":
        return ExitCode.NOT_SUCCESS
    try:
        unplaced = unplaced_power(result)
    except (TypeError, ValueError, AttributeError) as error:
        raise _unexpected(method, result, error) from None
    return ExitCode.NOT_PLACED if unplaced else ExitCode.OK


def _unexpected(method: str, result: Any, error: Exception) -> BadReplyError:
    return BadReplyError(
        f"unexpected {method} result from distributord ({type(error).__name__}: "
        f"{error}): {json.dumps(result)[:500]}"
    )


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
            if args.reactive_var is not None:
                params["reactive_var"] = args.reactive_var
            own = MAX_REQUEST_TIMEOUT_S if args.timeout is None else args.timeout
            return "set_power", params, own + SET_POWER_MARGIN_S
        case "propose":
            params = {"batteries": args.batteries}
            for field, value in (
                ("power_w", args.power),
                ("lower_w", args.lower),
                ("upper_w", args.upper),
                ("ttl_s", args.ttl),
                ("reactive_var", args.reactive_var),
            ):
                if value is not None:  # only what was given: the daemon's defaults apply
                    params[field] = value
            return "propose", params, MAX_REQUEST_TIMEOUT_S + SET_POWER_MARGIN_S
        case "withdraw":
            return (
                "withdraw",
                None if args.batteries is None else {"batteries": args.batteries},
                CALL_TIMEOUT_S,
            )
        case "proposals":
            return "get_proposals", None, CALL_TIMEOUT_S
    raise AssertionError(f"unknown command {args.command!r}")  # argparse allows no other


def _hello(connection: Connection, program: str, deadline: float) -> None:
    """Say which program this connection acts as; the daemon's refusal names the program."""
    try:
        connection.call("hello", {"program": program}, deadline)
    except DaemonError as error:
        raise HelloRefusedError(program, error) from None


def _watch(path: str, *, as_json: bool, program: str | None) -> int:
    """Every battery's status, then each change, until Ctrl-C (exit 0) or the daemon goes."""
    shown: dict[int, tuple[Any, Any]] = {}  # battery -> (status, reasons) last printed

    def show(params: Any) -> None:
        battery, state = _state(params)
        if battery is not None:
            if shown.get(battery) == state:
                return  # what the last line says already: no change
            shown[battery] = state
        try:  # with --json too: what the table cannot show is unusable either way
            if not isinstance(params, dict):
                raise TypeError("params is not an object")
            line = format_status_change(params, time.localtime())
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadReplyError(
                f"unexpected status_changed notification: {json.dumps(params)[:500]}"
            ) from None
        if as_json:  # exactly what the daemon sent
            line = json.dumps(params, ensure_ascii=False)
        print(line, flush=True)

    try:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        with Connection(path, deadline) as connection:
            if program is not None:
                _hello(connection, program, deadline)
            connection.call("subscribe_status", None, deadline)
            status = connection.call("get_status", None, deadline, superseding=True)
            try:
                first = [
                    {"id": entry["id"], "status": entry["status"], "reasons": entry["reasons"]}
                    for entry in status["batteries"]
                ]
            except (KeyError, TypeError) as error:
                raise _unexpected("get_status", status, error) from None
            if not as_json:
                print(f"watching distributord at {path} (Ctrl-C to stop)", file=sys.stderr)
            for params in first:
                show(params)
            while True:
                idle = WATCH_IDLE_TIMEOUT_S  # a fresh deadline for each message
                message = connection.next_message(None if idle is None else time.monotonic() + idle)
                if "id" not in message and message.get("method") == "status_changed":
                    show(message.get("params"))
    except KeyboardInterrupt:  # the user stopped watching: the way a watch is meant to end
        return ExitCode.OK
    except BrokenPipeError:  # the reader of our pipe stopped (`| head`): as good as Ctrl-C
        discard_stdout()
        return ExitCode.OK


def _state(params: Any) -> tuple[int | None, tuple[Any, Any]]:
    """A status line's battery and what it says, to compare with the last; ``None``: malformed."""
    if not isinstance(params, dict) or not isinstance(params.get("id"), int):
        return None, (None, None)
    reasons = params.get("reasons")
    return params["id"], (params.get("status"), reasons)


def _write(lines: Sequence[str], stream: TextIO) -> None:
    for line in lines:
        print(line, file=stream)
