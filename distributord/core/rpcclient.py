"""A client of the control protocol without IO: the rules of a connection, and no socket.

Theory of operation
-------------------
As h11's ``Connection`` does for HTTP, :class:`RpcClient` keeps every rule of a client's side of a
connection and moves no bytes. Its transports write the lines it makes, feed it the bytes they
read and wait when it has nothing yet, and do nothing else: ``distributorctl``'s blocking socket
with deadlines (``distributord.cli.ctl.transport``), and the client library's asyncio and trio
faces (:mod:`distributord.client`: the programs', the demo's, the tests' and the benchmarks').
So every client follows the same rules, and they are tested without a socket.

* **Requests** (:meth:`RpcClient.request`) get fresh ids, 1, 2, 3, ...; each is *outstanding*
  until its reply is taken.
* **Lines.** Received bytes are cut into lines by the daemon's own
  :class:`~distributord.core.protocol.LineFramer`. A line is decoded only when it is reached,
  oldest first, so that a bad line after the reply we wait for does not spoil that reply. Empty
  lines are skipped. A line that is not a JSON object, or longer than :data:`MAX_REPLY_LINE_BYTES`,
  is a :class:`~distributord.core.errors.BadReplyError`: the daemon does not send such lines.
* **Which lines are ours.** A reply carries its request's id. An error reply with id ``null``
  answers a line the daemon could not parse: it is the reply to a request when that request is the
  only one outstanding (``distributorctl`` waits for each reply before it sends the next: a
  ``hello``, then its command), since this client writes no
  other line; with several outstanding there is no telling whose it is, and it is kept.
* **Nothing is dropped unasked.** Notifications, replies to other requests and replies that
  overtook the one awaited are kept, in the order they arrived, for
  :meth:`RpcClient.next_message` or a later :meth:`RpcClient.reply_to`. Replies may come back in
  any order (``spec/protocol.md``). So a client that subscribes to status changes must read
  them: what is not taken stays. Three rules drop something, each only when asked: a reply that
  carries a snapshot (``reply_to(..., superseding=True)``) drops the notifications that arrived
  before it, since it is newer than they are; and the two below. And with ``drop_strays``, a
  reply to no request that waits for one (an id never sent, or answered already) is dropped as
  it is decoded: nobody could ever take it, and kept, it would grow a long-lived client's memory
  without bound (a client that writes lines of its own, as the tests do, keeps them).
* **The end.** ``receive_data(b"")`` says the daemon closed the connection; a last line without
  its newline is discarded. Once everything received before has been taken, asking for more raises
  :class:`~distributord.core.errors.UnreachableError`.
* **Notifications nobody follows.** A client made with ``follows`` (a predicate on a
  notification's method) drops, as it decodes them, the notifications it does not follow, so
  that a long-lived program that never reads, say, ``proposal_changed`` does not keep them all.
  Without it, every notification is kept. :meth:`RpcClient.notification` takes the oldest kept
  notification that a predicate wants, leaving replies and other notifications where they are.
* **Abandoned requests.** A caller that stops waiting for a reply (its task was cancelled)
  abandons the request (:meth:`RpcClient.abandon`): its reply is dropped, now or when it comes,
  and it no longer counts as outstanding, so the connection goes on with nothing left behind.
* **Results.** :func:`result_of` returns a reply's ``result``, or raises
  :class:`~distributord.core.errors.DaemonError` for an error reply.

Pure: no IO, no clock; the standard library and ``distributord.core`` only.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from distributord.core.errors import BadReplyError, DaemonError, UnreachableError
from distributord.core.protocol import JsonId, LineFramer, TooLong, request_line

MAX_REPLY_LINE_BYTES = 64 * 1024 * 1024
"""Longest reply line accepted. A status of 1024 batteries is well under 1 MiB; a line 64 times
longer than that is not distributord talking."""

RECEIVE_BYTES = 65536
"""What a transport asks for per read: a reply of a few KiB comes in one, a status of 1024
batteries in a few."""

Message = dict[str, Any]
"""A decoded JSON-RPC message: a reply or a notification."""


class RpcClient:
    """The client's side of one connection to the daemon, sans IO.

    Args:
        peer: How errors about the connection name the other end; ``distributorctl`` says
            ``distributord at PATH``, so that the message names the socket.
        limit: The longest line accepted, in bytes.
        follows: Whether a notification of this method is wanted; the others are dropped as
            they are decoded. ``None``: every notification is kept.
        drop_strays: Drop, as they are decoded, replies to no request that waits for one
            (for a client whose every request is made by :meth:`request`; one that also
            writes lines of its own leaves it off).
    """

    def __init__(
        self,
        *,
        peer: str = "distributord",
        limit: int = MAX_REPLY_LINE_BYTES,
        follows: Callable[[str], bool] | None = None,
        drop_strays: bool = False,
    ) -> None:
        self._peer = peer
        self._drop_strays = drop_strays
        self._follows = follows
        self._abandoned: set[int] = set()
        self._limit = limit
        self._framer = LineFramer(limit=limit)
        self._lines: deque[bytes | TooLong] = deque()  # received, not decoded yet
        self._kept: deque[Message] = deque()  # decoded, not taken yet; older than any line
        self._ids = itertools.count(1)
        self._outstanding: set[int] = set()
        self._closed = False

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
        """A request with a fresh id, for the transport to send.

        Args:
            method: The JSON-RPC method.
            params: Its params, or ``None`` to send none.

        Returns:
            The request's id and its line (newline included).
        """
        request_id = next(self._ids)
        line = request_line(request_id, method, params)
        self._outstanding.add(request_id)
        return request_id, line

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the connection; ``b""`` says the daemon closed it."""
        if data:
            self._lines.extend(self._framer.feed(data))
        else:
            self._closed = True

    def next_message(self) -> Message | None:
        """The oldest message not taken yet: a reply or a notification.

        Returns:
            The message, or ``None`` when the transport must feed more data first.

        Raises:
            BadReplyError: The next line is not a JSON object, or is too long.
            UnreachableError: The daemon closed the connection and all it sent has been taken.
        """
        return self._take(lambda message: True)

    def reply_to(self, request_id: JsonId, *, superseding: bool = False) -> Message | None:
        """The reply to ``request_id``, whatever arrived before it (which is kept for later).

        Args:
            request_id: The request's id.
            superseding: The reply carries a snapshot that is newer than the notifications
                received before it (``get_status`` after ``subscribe_status``): those are
                dropped when the reply is taken; replies, and what arrived after it, are kept.

        Returns:
            The whole reply, or ``None`` when the transport must feed more data first.

        Raises:
            BadReplyError: A line before the reply is not a JSON object, or is too long.
            UnreachableError: The daemon closed the connection without replying.
        """

        def answers(message: Message) -> bool:
            if "id" not in message:  # a notification
                return False
            if message["id"] == request_id:
                return True
            return (
                message["id"] is None and "error" in message and self._outstanding == {request_id}
            )

        reply = self._take(answers, superseding=superseding)
        if reply is not None and isinstance(request_id, int):
            self._outstanding.discard(request_id)
        return reply

    def notification(self, wanted: Callable[[Message], bool]) -> Message | None:
        """The oldest notification not taken yet that is ``wanted`` (by its method, say).

        Replies and other notifications stay for later.

        Returns:
            The notification, or ``None`` when the transport must feed more data first.

        Raises:
            BadReplyError: A line before it is not a JSON object, or is too long.
            UnreachableError: The daemon closed the connection and sent no more of them.
        """
        return self._take(lambda message: "id" not in message and wanted(message))

    def abandon(self, request_id: int) -> None:
        """Nobody waits for the reply to ``request_id`` any more: drop it, now or when it comes."""
        if request_id not in self._outstanding:
            return
        self._outstanding.discard(request_id)
        for index, message in enumerate(self._kept):
            if message.get("id") == request_id:
                del self._kept[index]
                return
        self._abandoned.add(request_id)

    def _dropped(self, message: Message) -> bool:
        """Whether a message just decoded is of no interest: abandoned, or not followed."""
        if "id" not in message:
            method = message.get("method")
            return self._follows is not None and not (
                isinstance(method, str) and self._follows(method)
            )
        request_id = message["id"]
        if isinstance(request_id, int) and request_id in self._abandoned:
            self._abandoned.discard(request_id)
            return True
        # A reply to no request waiting for one (never sent, or answered already) nobody will
        # ever take: kept, a long-lived client would grow without bound.
        return self._drop_strays and request_id is not None and request_id not in self._outstanding

    def _take(
        self, wanted: Callable[[Message], bool], *, superseding: bool = False
    ) -> Message | None:
        """The oldest message received that is ``wanted``, decoding lines as far as needed.

        ``superseding``: drop the notifications received before it.
        """
        for index, message in enumerate(self._kept):
            if wanted(message):
                del self._kept[index]
                if superseding:
                    self._drop_notifications(before=index)
                return self._taken(message)
        while self._lines:
            decoded = self._decode(self._lines.popleft())
            if decoded is None or self._dropped(decoded):
                continue
            if wanted(decoded):
                if superseding:
                    self._drop_notifications(before=len(self._kept))
                return self._taken(decoded)
            self._kept.append(decoded)
        if self._closed:
            raise UnreachableError(f"{self._peer} closed the connection")
        return None

    def _drop_notifications(self, *, before: int) -> None:
        """Forget the notifications among the first ``before`` messages kept."""
        self._kept = deque(
            message
            for index, message in enumerate(self._kept)
            if index >= before or "id" in message
        )

    def _taken(self, message: Message) -> Message:
        request_id = message.get("id")
        if isinstance(request_id, int):
            self._outstanding.discard(request_id)
        return message

    def _decode(self, line: bytes | TooLong) -> Message | None:
        """The message on a line; ``None`` for an empty line."""
        if isinstance(line, TooLong):
            raise BadReplyError(f"{self._peer} sent a line longer than {self._limit} bytes")
        if not line.strip():
            return None
        try:
            message = json.loads(line, parse_constant=_not_json)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError and _not_json's all are
            raise BadReplyError(
                f"distributord sent a line that is not JSON: {line[:200]!r}"
            ) from None
        if not isinstance(message, dict):
            raise BadReplyError(f"distributord sent JSON that is not an object: {line[:200]!r}")
        return message


def _not_json(constant: str) -> None:
    """Refuses ``NaN``, ``Infinity`` and ``-Infinity``, which Python's json would read.

    They are not JSON (RFC 8259), and the daemon never sends them (``allow_nan=False``).
    """
    raise ValueError(f"{constant} is not JSON")


def result_of(reply: Message) -> Any:
    """The ``result`` of a reply.

    Raises:
        DaemonError: The reply is a JSON-RPC error.
        BadReplyError: The reply has neither a result nor a well-formed error.
    """
    if "result" in reply:
        return reply["result"]
    if "error" in reply:
        error = reply["error"]
        if not isinstance(error, dict):
            raise BadReplyError(f"distributord sent a malformed error: {error!r}")
        raise DaemonError(error.get("code"), error.get("message"), error.get("data"))
    raise BadReplyError("distributord sent a reply with neither result nor error")
