"""Drive distributord from Python: ``import distributord.client``.

Theory of operation
-------------------
A program (trading, peak shaving, frequency response) talks to the daemon over its control
socket, one JSON-RPC request per line (``spec/protocol.md``, ``spec/arbitration.md``). This
package is that program's side, with two faces over one client:

* **asyncio** (this module: :func:`open_client`, :class:`Client`, from
  :mod:`distributord.client.aio`), for programs that live in asyncio (Frequenz SDK users);
* **trio** (:mod:`distributord.client.trio`), for trio programs, the demo and the tests.

Both are :class:`~distributord.client.connection.Connection`: every protocol method once
(``ping``, ``hello``, ``get_status``, ``list_components``, ``set_power``, ``propose``,
``withdraw``, ``get_proposals``, ``subscribe_status``, ``subscribe_bounds``), each returning a
typed result (:mod:`distributord.client.results`: frozen attrs classes whose docstrings document
every field and reason), and the notifications as async iterators
(:meth:`~distributord.client.connection.Connection.status_changes` and its siblings). Every
rule of the wire is :class:`~distributord.core.rpcclient.RpcClient`'s, the one sans-IO client
that ``distributorctl`` uses too.

Powers are watts, floats; positive charges the batteries, negative discharges them. A JSON-RPC
error is a :class:`~distributord.core.errors.DaemonError` with the protocol's ``code``; the
daemon closing the connection is :class:`~distributord.core.errors.UnreachableError`.

Dependencies: importing this package (and its asyncio face) loads the standard library, attrs
and distributord's pure modules only: no trio, grpc, protobuf or prometheus_client, which are
the daemon's. A client-only install is ``pip install --no-deps DIR attrs`` (``DIR`` a
checkout, or its wheel); the trio face needs trio besides (the user brings it).
"""

from __future__ import annotations

from distributord.core.errors import (
    BadReplyError,
    DaemonError,
    HelloRefusedError,
    UnreachableError,
)
from distributord.core.protocol import DEFAULT_SOCKET, Code

from .aio import Client, open_client
from .connection import Connection, Follow
from .results import (
    Acting,
    Allotment,
    Arbitration,
    BatteryStatus,
    Bounds,
    BoundsChange,
    CommandFailure,
    Components,
    Event,
    GrantReason,
    LeftOut,
    Limiter,
    Limits,
    Members,
    MicrogridState,
    Notification,
    Outcome,
    Pair,
    Ping,
    PowerResult,
    ProposalChange,
    ProposalEnd,
    ProposalInfo,
    Ramping,
    ReactiveAllotment,
    ReactiveBounds,
    ReactiveResult,
    Reason,
    RequestTiming,
    Status,
    StatusChange,
    StatusReport,
    Why,
)

__all__ = [
    "DEFAULT_SOCKET",
    "Acting",
    "Allotment",
    "Arbitration",
    "BadReplyError",
    "BatteryStatus",
    "Bounds",
    "BoundsChange",
    "Client",
    "Code",
    "CommandFailure",
    "Components",
    "Connection",
    "DaemonError",
    "Event",
    "Follow",
    "GrantReason",
    "HelloRefusedError",
    "LeftOut",
    "Limiter",
    "Limits",
    "Members",
    "MicrogridState",
    "Notification",
    "Outcome",
    "Pair",
    "Ping",
    "PowerResult",
    "ProposalChange",
    "ProposalEnd",
    "ProposalInfo",
    "Ramping",
    "ReactiveAllotment",
    "ReactiveBounds",
    "ReactiveResult",
    "Reason",
    "RequestTiming",
    "Status",
    "StatusChange",
    "StatusReport",
    "UnreachableError",
    "Why",
    "open_client",
]
