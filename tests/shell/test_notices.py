"""The feed of event announcements (``command_failed``) for status subscribers."""

from __future__ import annotations

from contextlib import aclosing

import trio
import trio.testing

from distributord.shell.notices import Notices


async def test_a_follower_gets_every_notice_from_when_it_began_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    notices = Notices()
    notices.announce("command_failed", {"battery": 1})  # before it began: not its news
    got: list[dict[str, int]] = []

    async def follow() -> None:
        async with aclosing(notices.follow()) as batches:
            async for batch in batches:
                got.extend(dict(n.params) for n in batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        for battery in (2, 3):  # two at once: one batch, both kept (events do not coalesce)
            notices.announce("command_failed", {"battery": battery})
        await trio.testing.wait_all_tasks_blocked()
        notices.announce("command_failed", {"battery": 4})
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert got == [{"battery": 2}, {"battery": 3}, {"battery": 4}]


def test_only_the_last_are_kept() -> None:
    notices = Notices(kept=3)
    for battery in range(10):
        notices.announce("command_failed", {"battery": battery})
    assert [(n.seq, n.params["battery"]) for n in notices.latest.value] == [(8, 7), (9, 8), (10, 9)]
