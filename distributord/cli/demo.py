"""``distributord demo``: a simulated microgrid and the daemon in one process, a short story.

Theory of operation
-------------------
Everything runs here, on loopback, with no configuration: a :class:`~distributord.sim.server.
Simulator` (its batteries' SoC moves 150 times faster than real time, so that a minute is
enough to see it), the daemon on a control socket in a temporary directory, and a client
(:mod:`distributord.client.trio`) speaking the real protocol on that socket, as a control
program would. The client asks for a
power once a second and prints a line of progress; the story has four acts:

1. **charge** the whole fleet: the emptier batteries get more, their SoCs draw together;
2. **an inverter fails**: its commands are refused (UNAVAILABLE); results are partial
   failures and its battery is blocked (uncertain) for growing windows;
3. **it recovers**: the fault is cleared; the battery works again when its window ends;
4. **discharge**: now the fuller batteries give more.

It ends with a summary: how the SoC spread shrank, the outcomes, the latencies seen by the
client, and when the failing battery was blocked and came back. With ``--plot FILE.png`` it
also records every battery's SoC and setpoint at each progress tick, the acts and the events
(:mod:`distributord.cli.demoplot`), and draws them into ``FILE.png``.
"""

from __future__ import annotations

import logging
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio

from distributord.cli import demoplot, discard_stdout
from distributord.client.trio import Client, open_client
from distributord.core.config import Config, with_overrides
from distributord.core.errors import DaemonError
from distributord.core.status import Status
from distributord.shell.control import bind_control_socket
from distributord.shell.daemon import Daemon, serve_daemon
from distributord.shell.live import fixed
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator

DEFAULT_BATTERIES = 6
DEFAULT_DURATION_S = 40.0
SPEED = 150.0
"""Simulated SoC moves this many times faster than real time."""
CHARGE_SHARE = 0.6
"""Of the fleet's power limit, what the demo asks for."""


def _socs(sim: Simulator) -> list[float]:
    return [sim.soc(b) for b in sim.battery_ids]


def _line(time: str, act: str, request: str, outcome: str, cells: str, rest: str = "") -> str:
    return f"{time:>7}  {act:<10} {request:>10}  {outcome:<15}  {cells}{rest}"


def _progress(
    t: float, act: str, power_w: float, outcome: str, socs: list[float], note: str
) -> str:
    cells = " ".join(f"{s:5.1f}" for s in socs)
    spread = f"   {max(socs) - min(socs):5.1f}{note}"
    return _line(f"{t:5.1f} s", act, f"{power_w / 1000:+.1f} kW", outcome, cells, spread)


class _Recorder:
    """Feeds a :class:`~distributord.cli.demoplot.Recording` from the simulator, once a tick.

    The setpoints are what each inverter applies (the simulator's ground truth); the commands
    not applied come from the simulator's record of every command received, read from where
    the last tick stopped.
    """

    def __init__(self, sim: Simulator, recording: demoplot.Recording) -> None:
        self._sim = sim
        self._recording = recording
        self._inverters = [sim.inverter_of(b) for b in recording.battery_ids]
        self._battery_of = dict(zip(self._inverters, recording.battery_ids, strict=True))
        self._origin = time.monotonic()  # the simulator's clock at the demo's start
        self._read_up_to = self._origin

    def sample(self, at_s: float, socs: list[float]) -> None:
        """Record the SoCs the progress line shows, the setpoints, and the new refusals."""
        sim = self._sim
        self._recording.sample(at_s, socs, [sim.setpoint(i) for i in self._inverters])
        new = []
        # Records are appended as they finish, so the new ones are at the end.
        for command in reversed(sim.commands()):
            if command.finished_at <= self._read_up_to:
                break
            new.append(command)
        for command in reversed(new):
            battery = self._battery_of.get(command.component_id)
            if command.outcome != "ok" and battery is not None:
                self._recording.refused(
                    command.received_at - self._origin, battery, command.power_w, command.outcome
                )
        if new:
            self._read_up_to = new[0].finished_at


async def _story(
    sim: Simulator, daemon: Daemon, client: Client, duration_s: float, *, plot: bool = False
) -> dict[str, Any]:
    start = trio.current_time()
    ids = list(sim.battery_ids)
    limit = sum(b.power_limit_w for b in sim.scenario.batteries)
    failing_battery = ids[1]
    failing_inverter = sim.inverter_of(failing_battery)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    spreads: dict[str, float] = {"start": max(_socs(sim)) - min(_socs(sim))}
    events: list[str] = []
    blocked = recovered = False
    fleet = f"{len(ids)} batteries of 10 kWh and 5 kW"
    recording: demoplot.Recording | None = None
    recorder: _Recorder | None = None
    if plot:
        title = f"{fleet}, SoC {SPEED:g}× faster than in life"
        recording = demoplot.Recording(ids, failing_battery=failing_battery, title=title)
        recorder = _Recorder(sim, recording)

    def happened(now: float, text: str, kind: demoplot.EventKind, label: str) -> None:
        events.append(f"{now:5.1f} s  {text}")
        if recording is not None:
            recording.event(now, kind, label)

    print(f"{fleet}; their SoC moves {SPEED:g} times faster than life")
    header = " ".join(f"{b:>5}" for b in ids)
    print(_line("time", "act", "request", "outcome", header, "  spread  (SoC %)"))
    acts = [
        ("charge", 0.0, CHARGE_SHARE * limit),
        ("fault", 0.4, -CHARGE_SHARE * limit),
        ("recovery", 0.6, -CHARGE_SHARE * limit),
        ("discharge", 0.75, -CHARGE_SHARE * limit),
    ]
    tick = 0
    while (now := trio.current_time() - start) < duration_s:
        act, _, power = [a for a in acts if now >= a[1] * duration_s][-1]
        if recording is not None:
            recording.act(now, act, power)
        if act == "fault" and not sim.faults(failing_inverter).command_error:
            spreads["after charge"] = max(_socs(sim)) - min(_socs(sim))
            sim.set_fault(failing_inverter, command_error="UNAVAILABLE")
            happened(
                now,
                f"inverter {failing_inverter} refuses commands: battery "
                f"{failing_battery} keeps its last setpoint and drifts away from the others",
                "fault",
                f"inverter {failing_inverter} fails",
            )
        # Also in the discharge: a short demo's recovery act may have no tick of its own.
        if act in ("recovery", "discharge") and sim.faults(failing_inverter).command_error:
            sim.clear_faults(failing_inverter)
            happened(
                now,
                f"inverter {failing_inverter} repaired",
                "repaired",
                f"inverter {failing_inverter} repaired",
            )
        sent = trio.current_time()
        try:
            result = await client.result("set_power", {"power_w": power, "batteries": ids})
        except DaemonError:  # refused (overloaded, say): it counts as an error outcome
            result = {}
        latencies.append(trio.current_time() - sent)
        outcome = result.get("outcome", "error")
        outcomes[outcome] += 1
        state = daemon.tracker.state(failing_battery)
        note = ""
        if state.status is not Status.WORKING:
            note = f"  battery {failing_battery} {state.status.value}"
            if state.blocked_until is not None:
                left = max(0.0, state.blocked_until - trio.current_time())
                note += f" for {left:.1f} s"
            if not blocked:
                blocked = True
                happened(
                    now,
                    f"battery {failing_battery} blocked after a failure",
                    "blocked",
                    f"battery {failing_battery} blocked",
                )
        elif blocked and act != "fault" and not recovered:
            recovered = True
            happened(
                now,
                f"battery {failing_battery} works again",
                "working",
                f"battery {failing_battery} works again",
            )
        socs = _socs(sim)
        if recorder is not None:
            recorder.sample(trio.current_time() - start, socs)
        print(_progress(now, act, power, outcome, socs, note), flush=True)
        tick += 1
        await trio.sleep_until(start + tick * 1.0)
    spreads["end"] = max(_socs(sim)) - min(_socs(sim))
    if recording is not None:
        recording.finish(trio.current_time() - start)
    return {
        "outcomes": outcomes,
        "latencies": latencies,
        "spreads": spreads,
        "events": events,
        "recording": recording,
    }


async def run_demo(batteries: int, duration_s: float, plot: Path | None = None) -> int:
    """Run the demo, and draw its plot into ``plot`` if given; returns the exit code."""
    scenario = attrs.evolve(uniform_fleet(batteries, seed=3), speed=SPEED)
    with Simulator(scenario, telemetry_hz=10.0) as sim, tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "control.sock"
        with bind_control_socket(str(path)) as sock:
            async with trio.open_nursery() as nursery:
                config = with_overrides(Config(), microgrid=sim.address)
                daemon: Daemon = await nursery.start(serve_daemon, fixed(config), sock)
                await daemon.tracker.board.wait_value(
                    lambda board: all(s.status is Status.WORKING for s in board.states.values())
                )
                async with open_client(path) as client:
                    story = await _story(sim, daemon, client, duration_s, plot=plot is not None)
                daemon.stop()
    failure = None
    if plot is not None:
        try:
            demoplot.draw(story["recording"], plot)
        except OSError as error:  # checked up front; the directory may have gone since
            failure = f"distributord demo: cannot write the plot: {error}"
    _summary(story, plot=None if failure else plot)
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


def _summary(story: dict[str, Any], *, plot: Path | None = None) -> None:
    spreads = story["spreads"]
    latencies = sorted(story["latencies"])
    print("\nsummary")
    print("  SoC spread: " + ", ".join(f"{name} {value:.1f} %" for name, value in spreads.items()))
    print(
        "  outcomes: " + ", ".join(f"{n} {name}" for name, n in sorted(story["outcomes"].items()))
    )
    median, longest = statistics.median(latencies) * 1e3, latencies[-1] * 1e3
    print(f"  request latency seen by the client: median {median:.1f} ms, max {longest:.1f} ms")
    for event in story["events"]:
        print("  " + event)
    if plot is not None:
        print(f"  plot: {plot.absolute()}")


class _ClosedLoopNoise(logging.Filter):
    """Hides grpc's "Event loop is closed" noise when the demo stops.

    The demo runs two asyncio loops in one process (the simulator's and the daemon's bridge),
    and grpc's completion-queue poller serves both. When one loop closes first at exit, the
    other logs a callback aimed at the closed one. It is harmless, and ``distributord run`` (one
    loop per process) never sees it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed")


def main(
    *, batteries: int | None = None, duration_s: float | None = None, plot: str | None = None
) -> int:
    """``distributord demo``: exit 0, 2 for bad flags, 130 on Ctrl-C; quiet into ``| head``.

    With ``plot``, the plot is also drawn there; what would prevent that (no matplotlib, a
    directory that is not there or not writable) stops it before the demo runs, with exit 2.
    """
    logging.basicConfig(level=logging.ERROR, format="daemon: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncio").addFilter(_ClosedLoopNoise())
    # Only an absent flag takes the default: --batteries 0 is an error, not "the default".
    batteries = DEFAULT_BATTERIES if batteries is None else batteries
    duration = DEFAULT_DURATION_S if duration_s is None else duration_s
    # Two at least: the story fails one battery's inverter while the others carry on.
    if not 2 <= batteries <= 1000 or not 4 <= duration <= 600:
        print(
            "distributord demo: --batteries must be 2..1000 and --duration 4..600 s",
            file=sys.stderr,
        )
        return 2
    plot_path = None if plot is None else Path(plot)
    if plot_path is not None and (problem := demoplot.problem(plot_path)) is not None:
        print(f"distributord demo: {problem}", file=sys.stderr)
        return 2
    try:
        return _interruptible(batteries, duration, plot_path)
    except* BrokenPipeError:  # the reader of our output stopped (`| head`): stop quietly
        discard_stdout()
    return 0


def _interruptible(batteries: int, duration_s: float, plot: Path | None = None) -> int:
    """Run the demo; 130 on Ctrl-C."""
    try:
        return trio.run(_until_interrupted, batteries, duration_s, plot)
    except BaseException as error:
        # Ctrl-C before the signal is taken (while trio starts): a KeyboardInterrupt.
        if not _holds(error, KeyboardInterrupt):
            raise
        print("distributord demo: interrupted", file=sys.stderr)
        return 130


def _holds(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` is a ``kind`` or a group with one inside."""
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(kind) is not None
    return isinstance(error, kind)


async def _until_interrupted(batteries: int, duration_s: float, plot: Path | None) -> int:
    """The demo, cancelled cleanly on SIGINT (taken as a signal, never as KeyboardInterrupt).

    A KeyboardInterrupt lands in whichever task runs; when it landed in the daemon's, the
    connection it reset could surface first and alone, as a traceback (seen once in CI).
    """
    codes: list[int] = []
    interrupted = False
    try:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:

                async def demo() -> None:
                    codes.append(await run_demo(batteries, duration_s, plot))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(demo)
                async for _ in interrupts:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    break
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        # A connection the cancelled daemon closed under its client: part of the stop.
        if not interrupted:
            raise
    if interrupted:
        print("distributord demo: interrupted", file=sys.stderr)
        return 130
    return codes[0]
