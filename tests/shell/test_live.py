"""The running settings' one value and its views (``shell.live``)."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from distributord.shell.live import Live, LiveValue, fixed


@attrs.frozen
class Inner:
    a: int = 0
    b: int = 0


@attrs.frozen
class Whole:
    inner: Inner = Inner()
    other: str = "x"


async def test_a_view_reads_the_value_as_it_is_now() -> None:
    running = LiveValue(Whole())
    inner: Live[Inner] = running.view(lambda w: w.inner)
    a: Live[int] = inner.view(lambda i: i.a)
    assert (inner.value, a.value) == (Inner(), 0)
    running.value = Whole(inner=Inner(a=5))
    assert (inner.value, a.value) == (Inner(a=5), 5)  # no copy to bring up to date


async def test_changed_wakes_for_its_own_part_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = LiveValue(Whole())
    a = running.view(lambda w: w.inner.a)
    woken: list[tuple[float, int]] = []

    async def watch() -> None:
        new = await a.changed()
        woken.append((trio.current_time(), new))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(1.0)
        running.value = Whole(other="y")  # another part: not a change of this one
        await trio.sleep(1.0)
        running.value = Whole(inner=Inner(b=3), other="y")  # still not
        await trio.sleep(1.0)
        assert woken == []
        running.value = Whole(inner=Inner(a=7))
    assert woken == [(3.0, 7)]


async def test_fixed_is_a_view_of_a_value_nothing_changes() -> None:
    view = fixed(Inner(a=1))
    assert view.value == Inner(a=1)
    assert view.view(lambda i: i.a).value == 1
