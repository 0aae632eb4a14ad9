"""``distributord demo``: its flags, and how it ends when its reader or its user stops it."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from distributord.cli import demo, demoplot
from distributord.cli import main as cli

DEMO = [sys.executable, "-m", "distributord", "demo", "--batteries", "2", "--duration", "30"]
LIMIT_S = 30.0


@pytest.mark.parametrize(
    ("batteries", "duration"),
    [(0, None), (1, None), (None, 0.0), (1001, None), (None, 3.9), (-1, None)],
)
def test_out_of_range_flags_are_refused_not_replaced_by_defaults(
    batteries: int | None, duration: float | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # --batteries 0 and --duration 0 used to run the defaults silently; --batteries 1 crashed
    # (IndexError: the story fails the second battery).
    assert demo.main(batteries=batteries, duration_s=duration) == 2
    assert "--batteries must be 2..1000 and --duration 4..600 s" in capsys.readouterr().err


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


def test_grpcs_closed_loop_noise_at_exit_is_hidden_and_nothing_else() -> None:
    # Seen in about 1 of 15 Ctrl-C runs: the simulator's and the daemon's asyncio loops share
    # grpc's poller, and the one still open logged callbacks aimed at the closed one.
    noise = demo._ClosedLoopNoise()

    def record(error: BaseException | None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error is not None else None
        return logging.LogRecord("asyncio", logging.ERROR, "", 0, "callback", (), exc_info)

    assert not noise.filter(record(RuntimeError("Event loop is closed")))
    assert noise.filter(record(RuntimeError("something else")))
    assert noise.filter(record(ValueError("Event loop is closed")))
    assert noise.filter(record(None))


# --- --plot -----------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_MATPLOTLIB = "distributord demo: --plot needs matplotlib: pip install 'distributord[plots]'\n"


def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None in sys.modules makes the import fail, as if matplotlib were not installed; its
    # submodules too, or a test that imported them before would still find them.
    loaded = [name for name in sys.modules if name.startswith("matplotlib.")]
    for name in ("matplotlib", *loaded):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def scenario_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: object) -> int:
        raise AssertionError("the scenario ran")

    monkeypatch.setattr(demo, "_interruptible", run)


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"  # the first chunk, where width and height are
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.usefixtures("scenario_never_runs")
def test_plot_without_matplotlib_fails_up_front_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    without_matplotlib(monkeypatch)
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")  # what main sets; restored after
    assert cli.main(["demo", "--plot", str(tmp_path / "demo.png")]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", NO_MATPLOTLIB)
    assert not (tmp_path / "demo.png").exists()


def test_without_plot_matplotlib_is_not_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    without_matplotlib(monkeypatch)
    ran = []

    def run(batteries: int, duration_s: float, plot: Path | None = None) -> int:
        ran.append((batteries, duration_s, plot))
        return 0

    monkeypatch.setattr(demo, "_interruptible", run)
    assert demo.main(batteries=2, duration_s=4) == 0
    assert ran == [(2, 4.0, None)]


@pytest.mark.usefixtures("scenario_never_runs")
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing/demo.png", "there is no directory {tmp}/missing"),
        ("file/demo.png", "there is no directory {tmp}/file"),
        ("directory.png", "is a directory"),
        ("demo.svg", "the plot is a PNG, name it *.png"),
    ],
)
def test_a_plot_path_that_cannot_be_written_fails_up_front(
    name: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    (tmp_path / "directory.png").mkdir()
    path = tmp_path / name
    assert demo.main(batteries=2, duration_s=4, plot=str(path)) == 2
    expected = f"distributord demo: --plot {path}: {problem.format(tmp=tmp_path)}\n"
    assert capsys.readouterr() == ("", expected)


@pytest.mark.usefixtures("scenario_never_runs")
@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_plot_in_a_directory_not_writable_fails_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o500)
    try:
        assert demo.main(batteries=2, duration_s=4, plot=str(tmp_path / "demo.png")) == 2
    finally:
        tmp_path.chmod(0o700)
    assert capsys.readouterr().err.endswith("demo.png: not allowed to write it\n")


def test_the_demo_plots_every_battery_through_every_act(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    recordings: list[demoplot.Recording] = []
    draw = demoplot.draw

    def keep(recording: demoplot.Recording, path: Path) -> None:
        recordings.append(recording)
        draw(recording, path)

    monkeypatch.setattr(demoplot, "draw", keep)
    path = tmp_path / "demo.png"
    # 5 s: the shortest demo whose four acts have a progress tick each (at 0, 2, 3, 4 s).
    assert demo.main(batteries=2, duration_s=5, plot=str(path)) == 0
    data = path.read_bytes()
    assert png_size(data) == (11 * demoplot.DPI, round(6.5 * demoplot.DPI))
    assert 20_000 < len(data) < 1_000_000
    assert capsys.readouterr().out.endswith(f"\n  plot: {path}\n")

    (recording,) = recordings
    assert recording.battery_ids == (1001, 1002)
    assert recording.failing_battery == 1002
    ticks = len(recording.times)
    assert ticks == 5
    assert all(len(series) == ticks for series in (*recording.socs, *recording.setpoints))
    assert [p.name for p in recording.phases] == ["charge", "fault", "recovery", "discharge"]
    assert [p.power_w > 0 for p in recording.phases] == [True, False, False, False]
    assert recording.end_s >= 5.0
    events = {e.kind: e.at_s for e in recording.events}
    assert events["fault"] == recording.phases[1].start_s
    assert events["repaired"] == recording.phases[2].start_s
    # The failing inverter refused the daemon's commands, and only while it was failing.
    assert recording.refusals
    for refusal in recording.refusals:
        assert refusal.battery_id == 1002
        assert refusal.outcome == "UNAVAILABLE"
        assert events["fault"] <= refusal.at_s <= events["repaired"]
    # Charging, both inverters charge. In the fault, the fleet discharges but the failing
    # inverter keeps its last setpoint (it holds for its 60 s lifetime): it still charges.
    working, failing = recording.setpoints
    assert working[0] > 0
    assert failing[0] > 0
    assert working[2] < 0
    assert failing[2] == failing[1] > 0


def recording(batteries: int) -> demoplot.Recording:
    ids = list(range(1001, 1001 + batteries))
    record = demoplot.Recording(ids, failing_battery=1002, title=f"{batteries} batteries")
    for t in range(10):
        act = "charge" if t < 4 else "fault" if t < 6 else "recovery" if t < 8 else "discharge"
        power = 1000.0 if t < 4 else -1000.0
        record.act(float(t), act, power * batteries)
        socs = [20.0 + k * 60 / batteries + (t if t < 4 else 8 - t) for k in range(batteries)]
        record.sample(t + 0.01, socs, [power] * batteries)
    record.event(4.0, "fault", "inverter 2002 fails")
    record.event(4.0, "blocked", "battery 1002 blocked")
    record.event(6.0, "repaired", "inverter 2002 repaired")
    record.refused(4.0, 1002, -1000.0, "UNAVAILABLE")
    record.finish(10.0)
    return record


def test_a_recording_holds_one_series_per_battery_and_the_acts_as_they_ran() -> None:
    record = recording(3)
    assert list(record.times) == [t + 0.01 for t in range(10)]
    assert [len(s) for s in record.socs] == [10, 10, 10]
    assert record.socs[1][0] == 40.0
    assert record.setpoints[2][9] == -1000.0
    # One phase per act, however many ticks it ran; the last lasts until the end.
    assert [(p.name, p.start_s, p.power_w, end) for p, end in record.spans()] == [
        ("charge", 0.0, 3000.0, 4.0),
        ("fault", 4.0, -3000.0, 6.0),
        ("recovery", 6.0, -3000.0, 8.0),
        ("discharge", 8.0, -3000.0, 10.0),
    ]
    assert [(e.kind, e.at_s) for e in record.events] == [
        ("fault", 4.0),
        ("blocked", 4.0),
        ("repaired", 6.0),
    ]
    assert record.refusals == [
        demoplot.Refusal(at_s=4.0, battery_id=1002, power_w=-1000.0, outcome="UNAVAILABLE")
    ]


def test_a_recording_refuses_samples_that_do_not_match_the_fleet() -> None:
    record = recording(3)
    with pytest.raises(ValueError, match="3 batteries, got 2 SoCs and 3 setpoints"):
        record.sample(11.0, [1.0, 2.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="failing battery 9 is not in the fleet"):
        demoplot.Recording([1, 2], failing_battery=9, title="")


def test_a_recording_keeps_its_refusals_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demoplot, "MAX_REFUSALS", 3)
    record = recording(2)  # one refusal already
    for t in range(5):
        record.refused(float(t), 1001, 0.0, "cancelled")
    assert len(record.refusals) == 3
    assert record.refusals_dropped == 3


def test_events_at_the_same_tick_share_one_line_and_label() -> None:
    assert demoplot._grouped_events(recording(2).events) == [
        (4.0, "fault", "inverter 2002 fails, battery 1002 blocked"),
        (6.0, "repaired", "inverter 2002 repaired"),
    ]


@pytest.mark.parametrize("batteries", [2, demoplot.LEGEND_MAX, demoplot.LEGEND_MAX + 1, 1000])
def test_a_plot_is_drawn_for_few_and_for_many_batteries(batteries: int, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    demoplot.draw(recording(batteries), path)
    assert png_size(path.read_bytes()) == (11 * demoplot.DPI, round(6.5 * demoplot.DPI))


def test_the_plot_module_loads_neither_trio_grpc_nor_matplotlib_until_it_draws() -> None:
    code = (
        "import sys, distributord.cli.demoplot\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'trio', 'grpc', 'matplotlib'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=LIMIT_S
    )
    assert done.stdout == "[]\n"
