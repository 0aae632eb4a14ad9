"""``distributorctl``'s transport: the JSON-RPC client over a blocking Unix socket, with deadlines.

Theory of operation
-------------------
The rules of the exchange (ids, framing, which lines are ours, what is kept for later, what is a
bad reply) are :class:`~distributord.core.rpcclient.RpcClient`'s; a :class:`Connection` only
moves bytes between it and the socket. It uses only the standard library's blocking ``socket``,
so that ``distributorctl`` starts fast and runs anywhere the daemon does: importing this module
loads neither trio nor grpc.

* **Every exchange has a deadline**, a ``time.monotonic()`` value given by the caller:
  connecting, writing and reading share it. Reading may also wait without one (``watch``).
* **Errors name the socket.** Whatever goes wrong on the way is an
  :class:`~distributord.core.errors.UnreachableError` that names the path and says what the
  socket error means for someone trying to reach the daemon (no such socket, connection
  refused, permission denied); a deadline that passes, whether connecting, writing or
  reading, is its :class:`~distributord.core.errors.DaemonTimeoutError`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from distributord.cli.ctl.args import SOCKET_ENV
from distributord.core.errors import DaemonTimeoutError, UnreachableError
from distributord.core.rpcclient import RECEIVE_BYTES, Message, RpcClient, result_of


class Connection:
    """One JSON-RPC connection to the daemon over a blocking socket.

    Args:
        path: The socket path, named in every error message.
        deadline: ``time.monotonic()`` value by which connecting must succeed.

    Raises:
        UnreachableError: Nothing could be reached at ``path``.
        DaemonTimeoutError: Not in time.
    """

    def __init__(self, path: str, deadline: float) -> None:
        self.path = path
        self._client = RpcClient(peer=f"distributord at {path}")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.settimeout(_remaining(deadline))
            self._socket.connect(path)
        except OSError as error:
            self._socket.close()
            raise _unreachable(f"cannot reach distributord at {path}", error) from None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._socket.close()

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        deadline: float,
        *,
        superseding: bool = False,
    ) -> Any:
        """Send one request and wait for its reply; what arrives before it is kept.

        Args:
            method: The JSON-RPC method.
            params: Its params, or ``None`` to send none.
            deadline: ``time.monotonic()`` value for the whole exchange.
            superseding: The result is a snapshot newer than the notifications that arrived
                before it: those are dropped instead (``RpcClient.reply_to``).

        Returns:
            The reply's ``result``.

        Raises:
            DaemonError: The reply is a JSON-RPC error.
            UnreachableError: The connection closed.
            DaemonTimeoutError: No reply in time.
            BadReplyError: The daemon sent something that is not JSON-RPC.
        """
        request_id, line = self._client.request(method, params)
        self._send(line, deadline)
        reply = self._wait(
            lambda: self._client.reply_to(request_id, superseding=superseding), deadline
        )
        return result_of(reply)

    def next_message(self, deadline: float | None) -> Message:
        """The next message not taken yet (a notification, or a reply nobody waited for).

        Args:
            deadline: ``time.monotonic()`` value by which it must arrive; ``None`` for none.

        Raises:
            UnreachableError: The daemon closed the connection.
            DaemonTimeoutError: The deadline passed.
            BadReplyError: A line is not a JSON object, or is absurdly long.
        """
        return self._wait(self._client.next_message, deadline)

    def _send(self, line: bytes, deadline: float) -> None:
        try:
            self._socket.settimeout(_remaining(deadline))
            self._socket.sendall(line)
        except OSError as error:
            raise _unreachable(f"lost distributord at {self.path}", error) from None

    def _wait(self, take: Callable[[], Message | None], deadline: float | None) -> Message:
        """Read until ``take`` has a message."""
        while (message := take()) is None:
            self._client.receive_data(self._receive(deadline))
        return message

    def _receive(self, deadline: float | None) -> bytes:
        try:
            self._socket.settimeout(None if deadline is None else _remaining(deadline))
            return self._socket.recv(RECEIVE_BYTES)
        except TimeoutError:
            raise DaemonTimeoutError(
                f"distributord at {self.path} did not answer in time"
            ) from None
        except OSError as error:
            raise _unreachable(f"lost distributord at {self.path}", error) from None


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline``; raises :class:`TimeoutError` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _unreachable(what: str, error: OSError) -> UnreachableError:
    """``what`` went wrong, and why: a timeout is a :class:`DaemonTimeoutError`."""
    kind = DaemonTimeoutError if isinstance(error, TimeoutError) else UnreachableError
    return kind(f"{what}: {_describe(error)}")


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
