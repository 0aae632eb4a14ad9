"""The daemon's side of one control connection without IO: every rule, and no socket.

Theory of operation
-------------------
As h11's ``Connection`` does for HTTP (and :mod:`distributord.core.rpcclient` for our clients),
:class:`Session` keeps the rules of a control connection and moves no bytes. Its transport
(``distributord.shell.control``) feeds it what it reads (:meth:`Session.receive_data`), writes
what it hands out (:meth:`Session.next_line`), and tells it what happened outside: a status
change, a reload that revoked the peer, a stop, a client that stopped reading or vanished. What
the session needs of the daemon it asks a :class:`Backend`, synchronously: whether the microgrid
is reached, to take a ``set_power``, to withdraw one, to answer a query.

* **Lines.** Received bytes are cut by :class:`~distributord.core.protocol.LineFramer`; a line
  longer than 64 KiB is answered -32000 once and the connection goes on; blank lines are
  skipped; every other line is decoded and answered, a malformed one with its JSON-RPC error.
  Notifications (no ``id``) are carried out and never answered.
* **Back-pressure.** A connection may have :data:`OUTBOX_LINES` replies waiting, written or to
  come (a ``set_power`` taken and not yet answered counts). While it has, no further line is
  handled and :attr:`Session.wants_data` is false, so the transport reads nothing more: a client
  that pipelines a burst is served at the pace it reads, and memory stays bounded. Status
  notifications do not count: they are kept one per battery, the newest replacing an older one
  not yet written, so a subscriber that reads is never dropped and ends with the truth.
* **Order.** Replies go out as they are ready, in any order (``spec/protocol.md``); waiting
  replies are written before waiting notifications.
* **The daemon's refusals.** ``set_power`` and ``list_components`` before the microgrid is
  reached: -32004, nothing commanded. ``set_power`` when the daemon is stopping: -32002; when the
  request queue is full: -32001. Each names what was not done.
* **The end.** EOF from a client that only half-closed: what it sent is answered, then the
  connection closes. A client that has gone (its socket closed, or reset): what still waits for
  its batteries is withdrawn (not applied), and the connection ends. A stop
  (:meth:`Session.close`) writes what waits, then ends. A client that takes no reply for the
  transport's stall limit is cut off (:meth:`Session.stalled`). A reload that no longer allows
  the peer (:meth:`Session.revoke`): what has not started is withdrawn, replies and changes not
  yet written are dropped, the -32003 line is the last thing written, and input is read only to
  see the client's EOF.

Every request answered, refused or withdrawn is counted (``count(method, outcome)``) with a
bounded set of labels: the method name a client sent is a label only when it is one of ours.

Pure: no IO, no clock; the standard library and ``distributord.core`` only.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from distributord.core import protocol
from distributord.core.arbitration import wire
from distributord.core.arbitration.arbiter import Ask, Origin
from distributord.core.arbitration.holdings import Batteries
from distributord.core.arbitration.programs import Acting, NotAllowed
from distributord.core.config import DEFAULT_PROGRAM
from distributord.core.model import Request, Result, Timing
from distributord.core.protocol import METHODS, Call, Code, Failure, LineFramer, TooLong

OUTBOX_LINES = 64
"""Replies (written or to come) a connection may have waiting before it is read no more."""

INVALID = "invalid"
"""The method label of a line that is not a request for one of our methods (the method name a
client sent is never a label: a hostile client could make any number of series)."""

TOO_LONG_MESSAGE = f"line longer than {protocol.MAX_LINE_BYTES} bytes; discarded"

NOT_CONNECTED_MESSAGE = (
    "the microgrid is not connected yet (discovery has not completed); nothing was commanded"
)
SHUTTING_DOWN_MESSAGE = (
    "shutting down: not taken; do not retry here (a restarted daemon will answer)"
)
QUEUE_FULL_MESSAGE = "overloaded: the request queue is full; retry later"
LATE_HELLO_MESSAGE = "hello comes before the connection's first proposal; it acts as {program}"

COMMANDS = frozenset({"set_power", "propose", "withdraw"})
"""Methods that command: sent as notifications (no ``id``) they are not carried out, since
nobody could read their result (``spec/protocol.md``)."""

NEEDS_MICROGRID = frozenset(
    {"set_power", "list_components", "propose", "withdraw", "get_proposals", "subscribe_bounds"}
)
"""Methods answered -32004 until the microgrid is reached."""


@attrs.frozen(kw_only=True)
class Caller:
    """The peer of a connection, as the kernel said when it connected.

    Attributes:
        pid: Its process id.
        uid: Its user id.
        gid: Its primary group id.
        groups: Its supplementary group ids.
    """

    pid: int = 0
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()


def error_outcome(code: Code) -> str:
    """The ``outcome`` label of a request answered with a JSON-RPC error."""
    return code.name.lower()


def method_label(method: str) -> str:
    """The ``method`` label of a request: the method, when it is one of ours."""
    return method if method in METHODS else INVALID


class Verdict(enum.Enum):
    """What the daemon did with a ``set_power`` handed to :meth:`Backend.submit`."""

    TAKEN = "taken"
    """Queued: its reply comes through the callback, once."""
    QUEUE_FULL = "queue full"
    """Not taken: the queue is full (-32001)."""
    STOPPING = "stopping"
    """Not taken: the daemon is stopping (-32002)."""


Reply = Callable[[Result, Timing], None]
"""Called once with a taken request's result."""

Count = Callable[[str, str], None]
"""Counts one request: ``(method label, outcome label)``."""


class Backend(Protocol):
    """What a session asks of the daemon; every answer is immediate."""

    @property
    def connected(self) -> bool:
        """Whether the microgrid has been reached (discovery completed)."""

    def default_timeout_s(self) -> float:
        """A ``set_power``'s ``request_timeout_s`` when it gives none (live: it may reload)."""

    def submit(self, ask: Ask, reply: Reply) -> Verdict:
        """Offer a ``set_power`` or a ``propose`` to the request loop; only when connected."""

    def withdraw(self, request: Request) -> bool:
        """Take back a request that has not started; whether it was still waiting."""

    def query(self, method: str) -> Mapping[str, Any]:
        """The result of ``ping``, ``get_status``, ``list_components`` or ``get_proposals``."""

    def hello(self, caller: Caller, program: str) -> Acting | NotAllowed:
        """Whether ``caller`` may act as ``program``, and what that means now."""

    def withdraw_proposals(self, origin: Origin, batteries: Batteries | None) -> Mapping[str, Any]:
        """``withdraw``: end the program's proposals on ``batteries`` (all when ``None``)."""

    def refused_notification(self, method: str) -> None:
        """A command arrived as a notification and was not carried out (logged)."""

    def bounds(self, program: str, batteries: Batteries) -> Mapping[str, Any] | None:
        """``bounds_changed``'s params for ``program`` on ``batteries`` now.

        None for a set with a battery the daemon does not manage (asked only when connected).
        """

    def leads(self, batteries: Batteries) -> tuple[Mapping[int, int], list[str]]:
        """Each of ``batteries`` to its group's lead (itself if in no group); groups in part.

        One message per group named in part, naming the members left out (``spec/plant.md``).
        """


class Phase(enum.Enum):
    """Where a session stands."""

    OPEN = "open"
    """Reading requests and answering them."""
    ANSWERING = "answering"
    """The client half-closed: answering what it sent, then closing."""
    CLOSING = "closing"
    """Writing what waits, then the connection ends (a stop, or all answered)."""
    REVOKED = "revoked"
    """The peer may no longer connect: the -32003 line is written, then the connection ends."""
    CLOSED = "closed"
    """Nothing more is written: the transport ends the connection now."""


def _as_named(answer: dict[str, Any], leads: Mapping[int, int]) -> None:
    """A result over groups' leads, said of the batteries the call named (``spec/plant.md``).

    ``batteries`` echoes them all, and a battery succeeded or failed with its group's lead
    (``succeeded_batteries``, ``failed_batteries``, ``reactive.failed_batteries``). The
    powers (``distribution``, ``reasons``) stay by lead: one setpoint per group.
    """
    members: dict[int, list[int]] = {}
    for battery, lead in leads.items():
        members.setdefault(lead, []).append(battery)

    def named(ids: Any) -> list[int]:
        return sorted(b for lead in ids for b in members.get(lead, [lead]))

    answer["batteries"] = sorted(leads)
    for key in ("succeeded_batteries", "failed_batteries"):
        if key in answer:
            answer[key] = named(answer[key])
    reactive = answer.get("reactive")
    if isinstance(reactive, dict) and "failed_batteries" in reactive:
        reactive["failed_batteries"] = named(reactive["failed_batteries"])


def _ignore(method: str, outcome: str) -> None:
    del method, outcome


class Session:
    """The daemon's side of one control connection, sans IO (see the module docstring).

    Args:
        backend: What the session asks of the daemon.
        count: Counts each request answered, refused or withdrawn.
        wake: Called when the transport may have something new to do: a line to write, room
            to read again, or the end. Replies come from the request loop through callbacks,
            so the transport cannot tell otherwise.
        outbox_lines: Replies that may wait before input is read no more.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        count: Count = _ignore,
        wake: Callable[[], None] = lambda: None,
        outbox_lines: int = OUTBOX_LINES,
        caller: Caller | None = None,
    ) -> None:
        self._backend = backend
        self.caller = caller or Caller()
        self.program = DEFAULT_PROGRAM
        """The program this connection acts as (``hello``)."""
        self._proposed = False  # it made a proposal: hello comes too late
        self.bounds = set[Batteries]()
        """The sets whose bounds the client follows (``subscribe_bounds``)."""
        self._notes: dict[tuple[Any, ...], bytes] = {}  # arbitration's notifications to write
        self._count = count
        self._wake = wake
        self._outbox_lines = outbox_lines
        self._framer = LineFramer()
        self._lines: deque[bytes | TooLong] = deque()  # received, not handled yet
        self._replies: deque[bytes] = deque()  # to write
        self._changes: dict[int, Mapping[str, Any]] = {}  # to write, one per battery
        self._requests: list[Request] = []  # taken, not answered yet
        self._input_ended = False
        self.phase = Phase.OPEN
        self.subscribed = False
        """Whether the client asked for status notifications (the transport then feeds them)."""

    # --- what the transport asks ----------------------------------------------------------

    @property
    def wants_data(self) -> bool:
        """Whether the transport should read: the input goes on and there is room for it."""
        if self._input_ended or self.phase in (Phase.CLOSING, Phase.CLOSED):
            return False
        return self.phase is Phase.REVOKED or not self._lines

    @property
    def input_open(self) -> bool:
        """Whether input may still be wanted: no EOF yet, and the session is not closing."""
        return not self._input_ended and self.phase in (Phase.OPEN, Phase.REVOKED)

    @property
    def input_ended(self) -> bool:
        """Whether the client's EOF has been seen."""
        return self._input_ended

    @property
    def finished(self) -> bool:
        """Whether the connection is over: nothing is or will be left to write."""
        if self.phase is Phase.CLOSED:
            return True
        if self.phase in (Phase.CLOSING, Phase.REVOKED):
            return not self._replies and not self._changes and not self._notes
        return False

    @property
    def outbox(self) -> int:
        """Replies waiting to be written plus requests taken and not answered (the bound)."""
        return len(self._replies) + len(self._requests)

    @property
    def pending(self) -> int:
        """``set_power`` requests taken and not yet answered."""
        return len(self._requests)

    def next_line(self) -> bytes | None:
        """The next line to write, replies first; None when nothing waits now."""
        if self.phase is Phase.CLOSED:
            return None
        if self._replies:
            line = self._replies.popleft()
            self._advance()  # its place in the outbox is free
            return line
        if self._changes:
            battery = next(iter(self._changes))
            return protocol.notification_line("status_changed", self._changes.pop(battery))
        if self._notes:
            return self._notes.pop(next(iter(self._notes)))
        return None

    @property
    def origin(self) -> Origin:
        """Who asks, for a proposal made now: the program, this session, the peer."""
        return Origin(
            program=self.program, connection=self, uid=self.caller.uid, pid=self.caller.pid
        )

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        """An arbitration notification: written after the replies, the newest per method and set.

        ``proposal_changed`` and ``proposal_ended`` to a proposal's owner, ``bounds_changed`` to
        a subscriber: as status changes are, they do not count against the outbox's bound.
        """
        if self.phase in (Phase.REVOKED, Phase.CLOSED):
            return
        key = (method, tuple(params.get("batteries", ())), params.get("program"))
        self._notes.pop(key, None)
        self._notes[key] = protocol.notification_line(method, params)
        self._wake()

    # --- what happened ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes the client sent; ``b""`` is its EOF (it may still read: a half-close).

        A client that has gone altogether (closed, not half-closed) is :meth:`gone` instead.
        """
        if self.phase is Phase.CLOSED or self._input_ended:
            return
        if not data:
            self._input_ended = True
        elif self.phase in (Phase.OPEN, Phase.ANSWERING):  # revoked: read only to see the EOF
            self._lines.extend(self._framer.feed(data))
        self._advance()

    def gone(self) -> None:
        """The client has gone (reset, or closed its socket): it reads nothing more.

        What still waits for its batteries is not applied; what is being applied completes,
        unanswered.
        """
        self._withdraw_waiting()
        self._input_ended = True
        self._lines.clear()
        self._end()

    def status_changed(self, battery: int, params: Mapping[str, Any]) -> None:
        """A battery's status changed: notify, replacing a change not yet written."""
        if not self.subscribed or self.phase in (Phase.REVOKED, Phase.CLOSED):
            return
        self._changes.pop(battery, None)  # the newest goes last, in the order things happened
        self._changes[battery] = params
        self._wake()

    def announce(self, method: str, params: Mapping[str, Any]) -> None:
        """An event for status subscribers (``command_failed``): notify.

        Written after the replies, as status changes are, and kept the newest per method and
        battery, so a client that does not read cannot grow its queue.
        """
        if not self.subscribed or self.phase in (Phase.REVOKED, Phase.CLOSED):
            return
        key = (method, params.get("battery"))
        self._notes.pop(key, None)
        self._notes[key] = protocol.notification_line(method, params)
        self._wake()

    def close(self) -> None:
        """The daemon stops: write what waits, then end."""
        if self.phase in (Phase.OPEN, Phase.ANSWERING):
            self.phase = Phase.CLOSING
            self._wake()

    def stalled(self) -> None:
        """The client took no line for the transport's limit: cut it off, writing nothing more.

        A revoked peer that does not read its error line is closed all the same.
        """
        self._replies.clear()
        self._changes.clear()
        self._notes.clear()
        self._end()

    def revoke(self, failure: Failure) -> None:
        """The peer may no longer use the socket (see the module docstring)."""
        if self.phase in (Phase.REVOKED, Phase.CLOSED):
            return
        self._withdraw_waiting()
        self._lines.clear()
        self._replies.clear()
        self._changes.clear()
        self._notes.clear()
        self._replies.append(protocol.error_line(failure))
        self.phase = Phase.REVOKED
        self._wake()

    # --- the rules --------------------------------------------------------------------------

    def _room(self) -> bool:
        return self.outbox < self._outbox_lines

    def _advance(self) -> None:
        """Handle waiting lines while the outbox has room; close once all is answered."""
        while self._lines and self.phase in (Phase.OPEN, Phase.ANSWERING) and self._room():
            line = self._lines.popleft()
            if isinstance(line, TooLong):
                self._fail(Failure(id=None, code=Code.LINE_TOO_LONG, message=TOO_LONG_MESSAGE))
            elif line.strip():
                self._handle(line)
        if self.phase is Phase.OPEN and self._input_ended:
            self.phase = Phase.ANSWERING
        if self.phase is Phase.ANSWERING and not self._lines and not self._requests:
            self.phase = Phase.CLOSING
        self._wake()

    def _end(self) -> None:
        self.phase = Phase.CLOSED
        self._wake()

    def _put(self, line: bytes) -> None:
        if self.phase in (Phase.REVOKED, Phase.CLOSED):
            return  # the error line is the last thing written; or nothing more is
        self._replies.append(line)
        self._wake()

    def _answer(self, call: Call, result: Any, outcome: str = "ok") -> None:
        self._count(call.method, outcome)
        if not call.notification:
            self._put(protocol.result_line(call.id, result))

    def _fail(self, failure: Failure, method: str = INVALID) -> None:
        """Answer with an error; ``method`` is the call's, if it was read as far as that."""
        self._count(method_label(method), error_outcome(failure.code))
        if not failure.notification:
            self._put(protocol.error_line(failure))

    def _decline(self, call: Call, code: Code, message: str) -> None:
        """Answer a well-formed ``call`` with an error the daemon decided."""
        self._fail(
            Failure(id=call.id, code=code, message=message, notification=call.notification),
            call.method,
        )

    def _handle(self, line: bytes) -> None:
        call = protocol.decode(line)
        if isinstance(call, Failure):
            self._fail(call)
            return
        backend = self._backend
        method = call.method
        if method in COMMANDS and call.notification:
            self._count(method, "notification")
            backend.refused_notification(method)
        elif method in NEEDS_MICROGRID and not backend.connected:
            self._decline(call, Code.NOT_CONNECTED, NOT_CONNECTED_MESSAGE)
        elif method == "set_power":
            request = protocol.parse_set_power(call, default_timeout_s=backend.default_timeout_s())
            if isinstance(request, Failure):
                self._fail(request, method)
            elif (leads := self._leads(call, request.batteries)) is not None:
                asked = attrs.evolve(request, batteries=frozenset(leads.values()))
                self._submit(call, Ask.set_power(asked, self.origin), leads)
        elif method == "propose":
            self._propose(call)
        elif method == "hello":
            self._hello(call)
        elif method == "withdraw":
            parsed = wire.parse_withdraw(call)
            if isinstance(parsed, Failure):
                self._fail(parsed, method)
            elif parsed.batteries is None:  # letting go is always allowed, even after a reload
                self._answer(call, backend.withdraw_proposals(self.origin, None))
            elif (leads := self._leads(call, parsed.batteries)) is not None:
                batteries = frozenset(leads.values())
                self._answer(call, backend.withdraw_proposals(self.origin, batteries))
        elif method == "subscribe_bounds":
            subscription = wire.parse_subscribe_bounds(call)
            if isinstance(subscription, Failure):
                self._fail(subscription, method)
            elif (leads := self._leads(call, subscription.batteries)) is None:
                pass
            elif backend.bounds(self.program, batteries := frozenset(leads.values())) is None:
                self._fail(
                    protocol.invalid_params(
                        call, "batteries", "ids of batteries the daemon manages (list_components)"
                    ),
                    method,
                )
            else:
                self.bounds.add(batteries)
                self._answer(call, {"subscribed": True})
                self._wake()
        elif (refusal := protocol.check_no_params(call)) is not None:
            self._fail(refusal, method)
        elif method == "subscribe_status":
            self.subscribed = True
            self._answer(call, {"subscribed": True})
        else:
            self._answer(call, backend.query(method))

    def _hello(self, call: Call) -> None:
        hello = wire.parse_hello(call)
        if isinstance(hello, Failure):
            self._fail(hello, call.method)
        elif self._proposed:
            self._fail(
                protocol.invalid_params(
                    call, "program", LATE_HELLO_MESSAGE.format(program=repr(self.program))
                ),
                call.method,
            )
        else:
            match self._backend.hello(self.caller, hello.program):
                case Acting() as acting:
                    self.program = acting.program
                    self._answer(call, acting.to_json())
                case NotAllowed(message=message):
                    self._decline(call, Code.NOT_AUTHORISED, message)

    def _propose(self, call: Call) -> None:
        parsed = wire.parse_propose(call, default_timeout_s=self._backend.default_timeout_s())
        if isinstance(parsed, Failure):
            self._fail(parsed, call.method)
            return
        leads = self._leads(call, parsed.batteries)
        if leads is not None:
            proposed = attrs.evolve(parsed, batteries=frozenset(leads.values()))
            self._submit(call, Ask.propose(proposed, self.origin), leads)

    def _leads(self, call: Call, batteries: Batteries) -> Mapping[int, int] | None:
        """Each of ``batteries`` to its group's lead; None (the call failed) for a part."""
        leads, problems = self._backend.leads(batteries)
        if problems:
            expected = "whole battery groups: " + "; ".join(problems)
            self._fail(protocol.invalid_params(call, "batteries", expected), call.method)
            return None
        return leads

    def _submit(self, call: Call, ask: Ask, leads: Mapping[int, int]) -> None:
        """Offer a ``set_power`` or ``propose`` to the daemon; its reply comes when applied.

        ``leads``: each battery the call named to its group's lead, which the ask names: the
        reply echoes the batteries named, and says of each what its group's lead got.
        """
        request = ask.request
        self._proposed = True
        if not ask.releases and not self._still_acting(call):
            return
        ask = attrs.evolve(ask, call_id=call.id)
        verdict = self._backend.submit(ask, self._reply_to(call, request, leads))
        if verdict is Verdict.STOPPING:
            self._decline(call, Code.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE)
        elif verdict is Verdict.QUEUE_FULL:
            self._decline(call, Code.OVERLOADED, QUEUE_FULL_MESSAGE)
        else:
            self._requests.append(request)

    def _still_acting(self, call: Call) -> bool:
        """Whether the peer may still act as its program; if not, the call is declined.

        A reload may remove the program, or take the peer out of its users and groups: each
        proposal is checked as ``hello`` was (``default`` always may). Letting go (a withdrawal,
        ``set_power`` at 0 W) is not checked: it is always allowed.
        """
        if self.program == DEFAULT_PROGRAM:
            return True
        match self._backend.hello(self.caller, self.program):
            case NotAllowed(message=message):
                self._decline(call, Code.NOT_AUTHORISED, f"{message} (the configuration changed)")
                return False
        return True

    def _reply_to(self, call: Call, request: Request, leads: Mapping[int, int]) -> Reply:
        def reply(result: Result, timing: Timing) -> None:
            if request not in self._requests:
                return  # withdrawn, or the connection is over: nobody to answer
            self._requests.remove(request)
            answer = protocol.result_object(result)
            if any(battery != lead for battery, lead in leads.items()):
                _as_named(answer, leads)
            answer["timing"] = {
                "total_ms": round(timing.total_s * 1e3, 3),
                "commands_ms": round(timing.commands_s * 1e3, 3),
            }
            self._answer(call, answer, outcome=answer["outcome"])
            self._advance()

        return reply

    def _withdraw_waiting(self) -> None:
        """Take back what has not started; what is being applied stays (its reply is dropped)."""
        for request in list(self._requests):
            if self._backend.withdraw(request):
                self._requests.remove(request)
                self._count("set_power", "withdrawn")
