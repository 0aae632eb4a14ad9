"""``distributord demo``: its flags, and how it ends when its reader or its user stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from distributord.cli import demo

DEMO = [sys.executable, "-m", "distributord", "demo", "--batteries", "2", "--duration", "30"]
LIMIT_S = 30.0


@pytest.mark.parametrize(
    ("batteries", "duration"), [(0, None), (None, 0.0), (1001, None), (None, 3.9), (-1, None)]
)
def test_out_of_range_flags_are_refused_not_replaced_by_defaults(
    batteries: int | None, duration: float | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # --batteries 0 and --duration 0 used to run the defaults silently.
    assert demo.main(batteries=batteries, duration_s=duration) == 2
    assert "--batteries must be 1..1000 and --duration 4..600 s" in capsys.readouterr().err


def start() -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_piped_into_head_it_stops_quietly() -> None:
    process = start()
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.readline()  # `| head -1`: one line, then the reader is gone
    process.stdout.close()
    _, err = process.communicate(timeout=LIMIT_S)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode == 0


def test_ctrl_c_ends_it_with_130_and_no_traceback() -> None:
    process = start()
    assert process.stdout is not None
    process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=LIMIT_S)
    assert b"Traceback" not in err, err.decode()
    assert b"interrupted" in err
    assert process.returncode == 130
