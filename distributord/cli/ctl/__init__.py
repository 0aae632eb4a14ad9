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
* **watch** subscribes (the ``{"subscribed": true}`` reply is not printed), then prints one line
  per ``status_changed`` notification, flushed at once so that a pipe sees it live; changes that
  overtake the reply are shown too. Ctrl-C ends it with exit 0. The daemon closing the
  connection (it stopped, restarted or cut off a subscriber that did not read) ends it with
  exit 3: the watch did not end by the user's choice, and a script looping
  ``until distributorctl watch`` can tell.
* **Output.** Tables for people on stdout; with ``--json``, exactly the daemon's result as one
  JSON document (``watch``: the ``params`` of each notification, one object per line).
  Everything that went wrong on the way goes to stderr as one line, never a traceback.
* **Exit codes** (:class:`ExitCode`): 0 success; 1 a ``set-power`` or ``propose`` outcome
  other than ``success``; 2 usage; 3 the daemon cannot be reached or gave no usable answer;
  4 the daemon answered with a JSON-RPC error (``hello``'s refusal too); 130 interrupted
  (Ctrl-C) other than during ``watch``.
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
from distributord.cli.ctl.args import parse, socket_path
from distributord.cli.ctl.render import RENDERERS, format_status_change
from distributord.cli.ctl.transport import Connection
from distributord.core.errors import (
    BadReplyError,
    CtlError,
    DaemonError,
    HelloRefusedError,
    UnreachableError,
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
"""Methods whose result has an ``outcome``: anything but ``success`` exits 1."""

WATCH_IDLE_TIMEOUT_S: float | None = None
"""How long ``watch`` waits for the next notification: forever, since a quiet fleet may not
change for hours. (Tests set a bound so that a broken client fails instead of hanging.)"""


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributorctl``.

    Returns:
        The exit status (:class:`ExitCode`); argparse has printed usage errors and ``--help``.
    """
    try:
        args = parse(argv)
    except SystemExit as stop:  # usage error (2), --help or --version (0): already printed
        return stop.code if isinstance(stop.code, int) else ExitCode.USAGE
    path = socket_path(args.socket, os.environ)
    try:
        if args.command == "watch":
            return _watch(path, as_json=args.json, program=args.program)
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
    start = time.monotonic()
    deadline = start + timeout
    with Connection(path, deadline) as connection:
        if args.program is not None:
            _hello(connection, args.program, min(deadline, start + CALL_TIMEOUT_S))
        try:
            result = connection.call(method, params, deadline)
        except UnreachableError as error:
            if method in COMMANDING:
                raise UnreachableError(f"{error} (the request may still be applied)") from None
            raise
    code = ExitCode.OK
    if method in OUTCOME_METHODS:
        outcome = result.get("outcome") if isinstance(result, dict) else None
        code = ExitCode.OK if outcome == "success" else ExitCode.NOT_SUCCESS
    if args.json:
        lines = [json.dumps(result, indent=2, ensure_ascii=False)]
    else:
        render = RENDERERS[method]
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
        discard_stdout()
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
        case "propose":
            params = {"batteries": args.batteries}
            for field, value in (
                ("power_w", args.power),
                ("lower_w", args.lower),
                ("upper_w", args.upper),
                ("ttl_s", args.ttl),
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
            if program is not None:
                _hello(connection, program, deadline)
            connection.call("subscribe_status", None, deadline)
            if not as_json:
                print(f"watching distributord at {path} (Ctrl-C to stop)", file=sys.stderr)
            while True:
                idle = WATCH_IDLE_TIMEOUT_S  # a fresh deadline for each message
                message = connection.next_message(None if idle is None else time.monotonic() + idle)
                if "id" not in message:
                    show(message)
    except KeyboardInterrupt:  # the user stopped watching: the way a watch is meant to end
        return ExitCode.OK
    except BrokenPipeError:  # the reader of our pipe stopped (`| head`): as good as Ctrl-C
        discard_stdout()
        return ExitCode.OK


def _write(lines: Sequence[str], stream: TextIO) -> None:
    for line in lines:
        print(line, file=stream)
