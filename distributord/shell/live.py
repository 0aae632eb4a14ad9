"""The running configuration: one value that tasks read where they use it and wait on.

Theory of operation
-------------------
The daemon runs on one :class:`LiveValue` holding the parsed configuration itself
(:class:`~distributord.core.config.Config`; held by ``distributord run``, replaced whole by a
reload). Each part of the daemon gets a :class:`Live` *view* of what it needs
(``running.view(lambda config: config.status)``) and reads ``view.value`` each time it uses a
key, so there are no copies to keep in step: a reload is one assignment, and every reader sees
it from its next use on. A task for which "from the next use" is too late (the request loop's
refresh timer) awaits :meth:`Live.changed`, which returns when its part of the value changes
and not when some other part does.

Which keys a reload may change is declared beside each key (``core.config.LIVE``); the reload
keeps the running value of every other one, so a view can never see, say, a new queue size
that the channel was not built with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio_util

T = TypeVar("T")
U = TypeVar("U")


def _whole(value: T) -> T:
    return value


class Live(Generic[T]):
    """A read-only view of one part of a changing value.

    Args:
        source: The changing value.
        part: Picks this view's part out of the whole.
    """

    __slots__ = ("_part", "_source")

    def __init__(self, source: trio_util.AsyncValue, part: Callable[[Any], T]) -> None:
        self._source = source
        self._part = part

    @property
    def value(self) -> T:
        """The part as it is now."""
        return self._part(self._source.value)

    async def changed(self) -> T:
        """Wait until the part changes (not merely the whole); returns the new part."""
        part = self._part
        await self._source.wait_transition(lambda new, old: part(new) != part(old))
        return self.value

    def view(self, part: Callable[[T], U]) -> Live[U]:
        """A view of a part of this part."""
        outer = self._part
        if outer is _whole:  # a view of the whole value: no call of _whole on every read
            return Live(self._source, part)
        return Live(self._source, lambda whole: part(outer(whole)))


class LiveValue(Live[T]):
    """The changing value itself: the one place it is set.

    Args:
        value: The value to start with.
    """

    __slots__ = ()

    def __init__(self, value: T) -> None:
        super().__init__(trio_util.AsyncValue(value), _whole)

    @property
    def value(self) -> T:
        """The value now; assigning replaces it and wakes the tasks waiting on a change."""
        return self._source.value  # type: ignore[no-any-return]  # trio_util is untyped

    @value.setter
    def value(self, new: T) -> None:
        self._source.value = new


def fixed(value: T) -> Live[T]:
    """A view of a value that nothing changes (a part run on its own, or a test)."""
    return LiveValue(value)
