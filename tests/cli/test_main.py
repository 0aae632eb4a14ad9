"""``distributord``'s command line (``distributord.cli.main``)."""

from __future__ import annotations

from distributord.cli import demo
from distributord.cli import main as cli
from distributord.sim import server


def test_the_help_states_the_real_defaults() -> None:
    helps = {
        action.dest: action.help
        for sub in cli.parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
        for action in sub._actions
    }
    assert helps["port"] == f"loopback port (default {server.DEFAULT_PORT})"
    assert helps["duration"] == f"4..600 s (default {demo.DEFAULT_DURATION_S:g})"
    assert f"(default {demo.DEFAULT_BATTERIES})" in str(helps["batteries"])
