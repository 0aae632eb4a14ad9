"""README's "Driving it from Python" snippets, run as they are against the daemon on the simulator.

Each snippet follows a ``<!-- client-snippet: NAME -->`` marker in README.md. It runs in a
subprocess of its own (it calls ``asyncio.run`` or ``trio.run``), with ``DISTRIBUTORD_SOCKET``
naming the socket of a daemon this test runs on the simulator; nothing in it is substituted.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import trio

from distributord.shell.daemon import Daemon

README = Path(__file__).resolve().parents[2] / "README.md"

SNIPPET = re.compile(r"<!-- client-snippet: (\w+) -->\n```python\n(.*?)```", re.DOTALL)


def snippets() -> dict[str, str]:
    """The README's client snippets, by name."""
    return dict(SNIPPET.findall(README.read_text(encoding="utf-8")))


def test_the_readme_has_a_snippet_for_each_face() -> None:
    assert set(snippets()) == {"asyncio", "trio"}


@pytest.mark.parametrize(
    ("face", "printed"),
    [
        ("asyncio", ["success {1001: -", "-20000.0 20000.0"]),
        ("trio", ["connected", "success 2000.0 ()", "(frozenset({1001, 1002}),)"]),
    ],
)
async def test_a_snippet_runs_against_the_daemon(
    daemon: Daemon, path: Path, face: str, printed: list[str]
) -> None:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", snippets()[face]],
            env={**os.environ, "DISTRIBUTORD_SOCKET": str(path)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    for expected in printed:
        assert any(line.startswith(expected) for line in lines), lines
