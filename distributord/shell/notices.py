"""Announcements to status subscribers that are events, not states (``command_failed``).

Theory of operation
-------------------
A battery's status is a state: a subscriber that falls behind needs only the newest one, and the
status board coalesces (``shell.tracker``). A command that failed after it was accepted is an
event: each one is news, and the newest does not replace the others. So events get their own
feed: :class:`Notices` keeps the last :data:`KEPT` of them, numbered, in one
:class:`trio_util.AsyncValue`; each subscriber (:meth:`Notices.follow`) reads at its own pace
and gets every notice numbered after the last one it saw. One that falls more than
:data:`KEPT` behind misses the oldest (the connection's own queue keeps one per battery, so a
client that does not read cannot grow memory either): nobody waits for a slow reader.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import attrs
import trio_util

KEPT = 1024
"""Notices kept for subscribers that are behind: a fleet-wide failure of 1,000 batteries at once
still reaches a subscriber that reads."""


@attrs.frozen(kw_only=True)
class Notice:
    """One announcement.

    Attributes:
        seq: Its number, increasing from 1.
        method: The notification's method (``"command_failed"``).
        params: Its params.
    """

    seq: int
    method: str
    params: Mapping[str, Any]


class Notices:
    """The feed of announcements (see the module docstring).

    Args:
        kept: How many notices a subscriber that is behind can still get.
    """

    def __init__(self, *, kept: int = KEPT) -> None:
        self._kept = kept
        self._seq = 0
        self.latest = trio_util.AsyncValue[tuple[Notice, ...]](())
        """The last notices, oldest first."""

    def announce(self, method: str, params: Mapping[str, Any]) -> None:
        """Tell every subscriber; never blocks."""
        self._seq += 1
        notice = Notice(seq=self._seq, method=method, params=params)
        self.latest.value = (*self.latest.value[-(self._kept - 1) :], notice)

    async def follow(self) -> AsyncGenerator[list[Notice], None]:
        """Every notice announced from now on, in batches, oldest first."""
        seen = self._seq
        while True:
            notices = await self.latest.wait_value(
                lambda v, seen=seen: bool(v) and v[-1].seq > seen
            )
            batch = [n for n in notices if n.seq > seen]
            seen = notices[-1].seq
            yield batch
