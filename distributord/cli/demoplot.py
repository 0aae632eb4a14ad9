"""``distributord demo --plot FILE.png``: what the demo saw as it ran, and its picture.

Theory of operation
-------------------
:class:`Recording` holds what the demo saw, sampled at its progress rate (once a second,
however fast telemetry flows), so that its memory grows with duration × fleet only: 16 bytes
per battery and second, under 10 MB at the demo's limits (1,000 batteries, 600 s). It holds:

* each battery's SoC: the very values the progress line prints;
* each battery's setpoint as its inverter applies it, read from the simulator. That is the
  ground truth: an inverter that refuses commands keeps its last setpoint, whatever the
  daemon asked for;
* the commands the simulator did not apply (refused, failed or cancelled), at the power they
  asked for: the daemon's tries, including the refreshes the client never sees;
* the acts (the phases) as they ran, and the events (fault injected, repaired, battery
  blocked, working again) at the times the demo caused or saw them.

:func:`draw` makes a PNG of it: SoC above, setpoints below, on one time axis, the acts shaded
and the events as vertical lines. It uses matplotlib's object-oriented API on the Agg canvas
(no pyplot, no display), as the benchmarks' ``bench/report.py`` does. matplotlib is optional (the
``plots`` extra): :func:`problem` tells, before the demo runs, whether the plot can be written
and drawn. This module imports neither trio nor grpc, and matplotlib only to draw.
"""

from __future__ import annotations

import importlib
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

INSTALL_HINT = "pip install 'distributord[plots]'"

MATPLOTLIB_MODULES = (
    "matplotlib",
    "matplotlib.backends.backend_agg",
    "matplotlib.cm",
    "matplotlib.collections",
    "matplotlib.colors",
    "matplotlib.figure",
    "matplotlib.lines",
    "matplotlib.ticker",
)
"""What :func:`draw` imports; :func:`problem` imports them up front, so a missing or broken
matplotlib stops the demo before it runs, not after a minute of it."""

LEGEND_MAX = 12
"""Up to this many batteries, one colour and one legend entry each; beyond, a legend of 50 or
1,000 entries would hide the plot: thin lines coloured by SoC at start, and a colour bar."""

MAX_REFUSALS = 10_000
"""Commands not applied that are kept for the plot; the rest are only counted. The demo fails
one inverter, a few dozen commands; the bound holds if a whole fleet's commands fail."""

DPI = 110
"""As the benchmark report's plots."""

EventKind = Literal["fault", "repaired", "blocked", "working"]

_PHASE_COLOURS = {
    "charge": "tab:green",
    "fault": "tab:red",
    "recovery": "tab:orange",
    "discharge": "tab:blue",
}
_EVENT_STYLES: dict[str, tuple[str, str]] = {
    # kind: (colour, line style)
    "fault": ("tab:red", "-"),
    "repaired": ("tab:green", "-"),
    "blocked": ("dimgray", ":"),
    "working": ("dimgray", ":"),
}
_FAILING_COLOUR = "black"
"""The failing battery's colour among many (its own tab colour among few)."""


@attrs.frozen(kw_only=True)
class Phase:
    """An act of the demo, from when its first progress tick ran.

    Attributes:
        name: The act's name, as the progress lines show it.
        start_s: Seconds since the start.
        power_w: What the client asks for the fleet in it, W (+ charge).
    """

    name: str
    start_s: float
    power_w: float


@attrs.frozen(kw_only=True)
class Event:
    """Something the demo did or saw, at seconds since the start."""

    kind: EventKind
    at_s: float
    label: str


@attrs.frozen(kw_only=True)
class Refusal:
    """A command an inverter received and did not apply.

    Attributes:
        at_s: When it arrived, seconds since the start.
        battery_id: The battery behind the inverter.
        power_w: The power it asked for, W.
        outcome: Why it was not applied (``UNAVAILABLE``, ``cancelled``, ...).
    """

    at_s: float
    battery_id: int
    power_w: float
    outcome: str


class Recording:
    """The series a plot is drawn from (see the module).

    Args:
        battery_ids: The fleet, in the order of every sample's values.
        failing_battery: The battery whose inverter the demo fails; drawn so it stands out.
        title: What the plot is of, e.g. ``"6 batteries, 40 s"``.
    """

    def __init__(self, battery_ids: Sequence[int], *, failing_battery: int, title: str) -> None:
        if failing_battery not in battery_ids:
            raise ValueError(f"failing battery {failing_battery} is not in the fleet")
        self.battery_ids = tuple(battery_ids)
        self.failing_battery = failing_battery
        self.title = title
        self.times = array("d")
        """Seconds since the start, one per sample."""
        self.socs = [array("d") for _ in self.battery_ids]
        """Per battery (in :attr:`battery_ids`' order), its SoC at each sample, %."""
        self.setpoints = [array("d") for _ in self.battery_ids]
        """Per battery, the power its inverter applied at each sample, W (+ charge)."""
        self.phases: list[Phase] = []
        self.events: list[Event] = []
        self.refusals: list[Refusal] = []
        self.refusals_dropped = 0
        """Refusals beyond :data:`MAX_REFUSALS`, counted, not kept."""
        self.end_s = 0.0
        """When the demo's last act ended (see :meth:`finish`)."""

    def sample(self, at_s: float, socs: Sequence[float], setpoints: Sequence[float]) -> None:
        """Record every battery's SoC (%) and applied setpoint (W) at ``at_s``.

        Raises:
            ValueError: Not one value per battery.
        """
        if not len(socs) == len(setpoints) == len(self.battery_ids):
            raise ValueError(
                f"{len(self.battery_ids)} batteries, got {len(socs)} SoCs and "
                f"{len(setpoints)} setpoints"
            )
        self.times.append(at_s)
        for series, value in zip(self.socs, socs, strict=True):
            series.append(value)
        for series, value in zip(self.setpoints, setpoints, strict=True):
            series.append(value)
        self.end_s = max(self.end_s, at_s)

    def act(self, at_s: float, name: str, power_w: float) -> None:
        """The act running at ``at_s`` (asking ``power_w``): a new phase if not the last one."""
        if not self.phases or self.phases[-1].name != name:
            self.phases.append(Phase(name=name, start_s=at_s, power_w=power_w))

    def event(self, at_s: float, kind: EventKind, label: str) -> None:
        """Something happened at ``at_s`` (a fault injected, a battery blocked, ...)."""
        self.events.append(Event(kind=kind, at_s=at_s, label=label))

    def refused(self, at_s: float, battery_id: int, power_w: float, outcome: str) -> None:
        """A command to ``battery_id``'s inverter was not applied (kept up to a bound)."""
        if len(self.refusals) >= MAX_REFUSALS:
            self.refusals_dropped += 1
            return
        self.refusals.append(
            Refusal(at_s=at_s, battery_id=battery_id, power_w=power_w, outcome=outcome)
        )

    def finish(self, at_s: float) -> None:
        """The demo ended at ``at_s``: the last act lasts until then."""
        self.end_s = max(self.end_s, at_s)

    def spans(self) -> list[tuple[Phase, float]]:
        """Each act with when it ended, in seconds since the start."""
        ends = [p.start_s for p in self.phases[1:]] + [self.end_s]
        return list(zip(self.phases, ends, strict=True))


def problem(path: Path) -> str | None:
    """Why ``--plot PATH`` cannot work, in one line; ``None`` when it can.

    It checks that the file can be written there, without creating it, and imports what
    drawing needs (:data:`MATPLOTLIB_MODULES`).
    """
    if path.suffix.lower() != ".png":
        return f"--plot {path}: the plot is a PNG, name it *.png"
    directory = path.parent
    if not directory.is_dir():
        return f"--plot {path}: there is no directory {directory}"
    if path.is_dir():
        return f"--plot {path}: is a directory"
    writable = os.access(path, os.W_OK) if path.exists() else os.access(directory, os.W_OK)
    if not writable or not os.access(directory, os.X_OK):
        return f"--plot {path}: not allowed to write it"
    try:
        for name in MATPLOTLIB_MODULES:
            importlib.import_module(name)
    except ImportError:
        return f"--plot needs matplotlib: {INSTALL_HINT}"
    return None


def draw(recording: Recording, path: Path) -> None:
    """Draw ``recording`` into the PNG ``path`` (see the module).

    Raises:
        ImportError: No matplotlib (:func:`problem` says so up front).
        OSError: The file cannot be written.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    ids = recording.battery_ids
    few = len(ids) <= LEGEND_MAX
    failing = ids.index(recording.failing_battery)
    figure = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    soc_ax = figure.add_subplot(2, 1, 1)
    power_ax = figure.add_subplot(2, 1, 2, sharex=soc_ax)
    times = list(recording.times)
    # Among few batteries, a legend at the right with one entry each (and the commands not
    # applied: they belong to a battery); among many, a colour bar there. Below, the rest.
    batteries: list[Line2D] = []
    story: list[Line2D] = []

    for phase, end in recording.spans():
        colour = _PHASE_COLOURS.get(phase.name, "tab:gray")
        for ax in (soc_ax, power_ax):
            ax.axvspan(phase.start_s, end, color=colour, alpha=0.1, linewidth=0)
        soc_ax.text(
            (phase.start_s + end) / 2,
            0.98,
            f"{phase.name}\nfleet {_kw(phase.power_w)}",
            transform=soc_ax.get_xaxis_transform(),
            ha="center",
            va="top",
            color=colour,
            fontweight="bold",
            bbox={"facecolor": "white", "alpha": 0.6, "edgecolor": "none", "pad": 1.0},
        )

    # A setpoint holds from one sample to the next: steps, not slopes. A SoC moves: lines.
    if few:
        # tab20 is tab10's ten colours, each followed by a lighter one: the ten first, then
        # the lighter ones, so that neighbours never look alike.
        palette = matplotlib.colormaps["tab20"]
        for k, battery in enumerate(ids):
            hue, width = palette(2 * k % 20 + 2 * k // 20), 2.6 if k == failing else 1.4
            zorder = 3 if k == failing else 2  # the failing one on top (2: matplotlib's default)
            soc_ax.plot(times, recording.socs[k], color=hue, linewidth=width, zorder=zorder)
            (line,) = power_ax.plot(
                times,
                recording.setpoints[k],
                drawstyle="steps-post",
                color=hue,
                linewidth=width,
                zorder=zorder,
                label=f"{battery}: its inverter fails" if k == failing else str(battery),
            )
            batteries.append(line)
    else:
        starts = [series[0] if series else 0.0 for series in recording.socs]
        norm = Normalize(vmin=min(starts), vmax=max(starts))
        colours = matplotlib.colormaps["viridis"]
        others = [k for k in range(len(ids)) if k != failing]
        for ax, table, steps in (
            (soc_ax, recording.socs, False),
            (power_ax, recording.setpoints, True),
        ):
            ax.add_collection(
                LineCollection(
                    [_points(times, table[k], steps=steps) for k in others],
                    colors=[colours(norm(starts[k])) for k in others],
                    linewidths=0.6,
                    alpha=0.7,
                )
            )
            ax.autoscale_view()
            (line,) = ax.plot(
                times,
                table[failing],
                drawstyle="steps-post" if steps else "default",
                color=_FAILING_COLOUR,
                linewidth=2.0,
                label=f"{recording.failing_battery}: its inverter fails",
            )
        story.append(line)
        bar = figure.colorbar(
            ScalarMappable(norm=norm, cmap=colours), ax=[soc_ax, power_ax], pad=0.01, aspect=40
        )
        bar.set_label("SoC at start (%)")

    if recording.refusals:
        outcomes = ", ".join(sorted({r.outcome for r in recording.refusals}))
        (marks,) = power_ax.plot(
            [r.at_s for r in recording.refusals],
            [r.power_w for r in recording.refusals],
            linestyle="none",
            marker="x",
            markersize=7,
            markeredgewidth=1.6,
            color="tab:red",
            zorder=4,
            label=f"commanded, not\napplied ({outcomes})",
        )
        (batteries if few else story).append(marks)
    for at_s, kind, label in _grouped_events(recording.events):
        colour, style = _EVENT_STYLES[kind]
        soc_ax.axvline(at_s, color=colour, linestyle=style, linewidth=1.2)
        story.append(
            power_ax.axvline(
                at_s, color=colour, linestyle=style, linewidth=1.2, label=f"{at_s:.0f} s: {label}"
            )
        )
    power_ax.axhline(0.0, color="black", linewidth=0.8)

    if times:  # room at the top for the acts' names
        low = min(min(series) for series in recording.socs)
        high = max(max(series) for series in recording.socs)
        margin = max(high - low, 1.0)
        soc_ax.set_ylim(low - 0.05 * margin, high + 0.3 * margin)
    soc_ax.set_ylabel("SoC (%)")
    soc_ax.tick_params(labelbottom=False)
    power_ax.set_ylabel("setpoint applied by the inverter (W)\n+ charge, − discharge")
    power_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    power_ax.set_xlabel("time since the start (s)")
    power_ax.set_xlim(0.0, recording.end_s)
    for ax in (soc_ax, power_ax):
        ax.grid(True, alpha=0.3)
    how = "" if few else "\ntoo many for a legend: a thin line each, coloured by its SoC at start"
    soc_ax.set_title(f"distributord demo: {recording.title}{how}")
    if batteries:
        figure.legend(handles=batteries, loc="outside right upper", title="battery")
    if story:
        figure.legend(handles=story, loc="outside lower center", ncols=2, fontsize=9)
    figure.savefig(path, dpi=DPI, format="png")


def _kw(power_w: float) -> str:
    """``+18.0 kW``, ``−3,000 kW``: with a true minus sign, as the axes' ticks."""
    kw = power_w / 1000
    text = f"{kw:+,.1f}" if abs(kw) < 100 else f"{kw:+,.0f}"
    return text.replace("-", "−") + " kW"


def _points(
    times: Sequence[float], values: Sequence[float], *, steps: bool
) -> list[tuple[float, float]]:
    """A series as a line's points; with ``steps``, each value holds until the next time."""
    points: list[tuple[float, float]] = []
    for t, v in zip(times, values, strict=True):
        if steps and points:
            points.append((t, points[-1][1]))
        points.append((t, v))
    return points


def _grouped_events(events: Sequence[Event]) -> list[tuple[float, EventKind, str]]:
    """Events less than half a progress tick apart become one line and one label.

    The label joins theirs; the line takes the first one's time and the most telling kind
    (a fault or a repair over a battery's status).
    """
    order: list[EventKind] = ["fault", "repaired", "blocked", "working"]
    groups: list[list[Event]] = []
    for event in sorted(events, key=lambda e: e.at_s):
        if groups and event.at_s - groups[-1][0].at_s < 0.5:
            groups[-1].append(event)
        else:
            groups.append([event])
    return [
        (
            group[0].at_s,
            min((e.kind for e in group), key=order.index),
            ", ".join(e.label for e in group),
        )
        for group in groups
    ]
