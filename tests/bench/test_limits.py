"""``bench.limits``'s layouts and printout: built and checked, not timed."""

from __future__ import annotations

import pytest

from bench.distribution import fleet, requests
from bench.limits import bound_share, layouts, main, nested
from distributord.core.distribution import limit_tree


def test_the_layouts_nest_bind_where_meant_and_none_binds_when_slack() -> None:
    pairs = fleet(100)
    powers = requests(pairs)
    by_name = {layout.name: layout for layout in layouts(pairs)}
    assert by_name["no limits"].limits is None
    assert by_name["limits=()"].limits == ()
    tree = limit_tree(nested(pairs, binding=True))
    assert len(tree) == 111
    assert sum(parent is None for _, parent in tree) == 1  # the grid holds every other
    assert {len(limit.inverters) for limit, _ in tree} == {100, 10, 1}
    for name, layout in by_name.items():
        share = bound_share(pairs, layout, powers)
        assert (share > 0) == name.endswith("binding"), (name, share)


def test_main_prints_every_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size", "30", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for layout in layouts(fleet(30)):
        assert any(line.strip().startswith(layout.name) for line in out.splitlines())
