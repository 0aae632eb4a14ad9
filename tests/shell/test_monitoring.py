"""The alert rules and the Grafana dashboard (``config/``) against a running daemon's metrics.

Theory of operation
-------------------
Each alert is judged by Prometheus' own rule engine, ``promtool test rules``, on what the daemon
really exports: a test starts the daemon on the simulator with ``metrics.listen`` on, scrapes it
(*before*), drives it into one state (microgrid down, a battery in an error state, commands
failing, ...), scrapes it again (*after*), and hands promtool the two scrapes as input series,
labelled as a Prometheus job would label them (``job``, ``instance``, and ``up``: 0 where the
scrape failed). The state is taken to last: the series run on for :data:`MINUTES` minutes,
counters growing by what they grew between the scrapes, each minute, and gauges holding their
*after* value, so that ``rate()``, ``increase()`` and ``for:`` see a state that persists. Each
alert is then asked, at :data:`EVAL_AT`, whether it fires, through Prometheus' ``ALERTS``
series: those the state is for must, the others must not. A few consequences of a state are
true of it but not certain on every run (commands fail while the microgrid is down); those are
left out of the question, each with its reason.

promtool is the judge, not an evaluator of our own: the rules use ``rate``, ``increase``,
``absent``, ``unless on``, vector matching and ``for:``, whose edges (extrapolation, staleness,
lookback) only the real engine gets right, and a second engine in the tests would be a second
thing to trust. ``.ci/promtool-check`` installs it in CI before the test suite runs; where it
is missing these tests skip, saying so. The dashboard test needs no promtool: every metric
name in a panel or rule must be one a running daemon exports.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import subprocess
import threading
import urllib.error
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.shell.metrics import READ_TIMEOUT_S, MetricsServer
from distributord.sim.server import Simulator
from tests.shell.test_metrics import (
    LAPSE_SCALE,
    SCENARIO,
    Samples,
    daemon_with_metrics,
    lapse_in_an_outage,
    parse,
    scrape,
    scrape_text,
    scrape_url,
)
from tests.support import connect, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "distributord-alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "distributord.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; CI's "
    ".ci/promtool-check installs it before the tests)",
)

JOB = {"job": "distributord", "instance": "127.0.0.1:9464"}
"""The labels Prometheus adds to every scraped series (README's scrape job)."""

MINUTES = 20
"""How long the series say a state lasts, in minutes (one sample a minute)."""

EVAL_AT = "15m"
"""When the alerts are asked: longer than every ``for:`` and every range in the rules."""

ALL = (1001, 1002, 1003)

COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def alerts() -> list[str]:
    """The alert names in the rules file, in its order.

    The file is read with patterns, not a YAML parser (the project has none): the rules are
    written one way, and ``promtool check rules`` judges the YAML.
    """
    return re.findall(r"^ *- alert: (\S+)$", RULES.read_text(), re.MULTILINE)


def alert_blocks() -> dict[str, str]:
    """Each alert's lines in the rules file, by name."""
    rules = re.split(r"^(?= *- (?:alert|record): )", RULES.read_text(), flags=re.MULTILINE)
    return {
        match.group(1): block
        for block in rules
        if (match := re.match(r" *- alert: (\S+)", block)) is not None
    }


@attrs.frozen(kw_only=True)
class Scrapes:
    """A state as Prometheus saw it: the scrape before it and the one in it (None: failed).

    ``target`` False: Prometheus has no target for the daemon at all (no ``up`` series).
    """

    before: Samples
    after: Samples | None
    target: bool = True


def series_text(name: str, labels: frozenset[tuple[str, str]]) -> str:
    """A series in PromQL's notation, with Prometheus' job labels."""

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    pairs = sorted({**dict(labels), **JOB}.items())
    return name + "{" + ",".join(f"{k}={quoted(v)}" for k, v in pairs) + "}"


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def input_series(scrapes: Scrapes) -> list[dict[str, str]]:
    """The input series for promtool of a state: *before* at minute 0, then the state lasting.

    A counter grows each minute by what it grew between the scrapes (one that first appears in
    *after* grew from 0); a gauge holds its *after* value; a series *after* lacks (the scrape
    failed, or the daemon stopped exporting it) has no samples after minute 0.
    """
    after = scrapes.after or {}
    result = []
    for key in sorted(scrapes.before.keys() | after.keys()):
        name, _ = key
        if name.endswith("_created"):
            continue  # the time a counter was made: nothing a rule reads
        counter = name.endswith(COUNTER_SUFFIXES)
        first = scrapes.before.get(key)
        last = after.get(key)
        if last is None:
            values = f"{number(first)} _x{MINUTES}" if first is not None else ""
        elif counter:
            start = 0.0 if first is None else first
            step = last - start
            sign = "+" if step >= 0 else "-"
            values = f"{number(start)}{sign}{number(abs(step))}x{MINUTES}"
        else:
            head = "_" if first is None else number(first)
            values = f"{head} {number(last)}+0x{MINUTES - 1}"
        result.append({"series": series_text(*key), "values": values})
    if not scrapes.target:
        return result
    scraped = 1 if scrapes.after is not None else 0
    result.append(
        {"series": series_text("up", frozenset()), "values": f"1 {scraped}+0x{MINUTES - 1}"}
    )
    return result


def judge(scrapes: Scrapes, firing: set[str], unsure: set[str], tmp_path: Path) -> None:
    """Assert, by ``promtool test rules``, that exactly ``firing`` fire (``unsure`` may)."""
    assert PROMTOOL is not None
    names = alerts()
    assert firing | unsure <= set(names), f"no such alerts: {(firing | unsure) - set(names)}"
    questions = [
        {
            "expr": f'group(ALERTS{{alertname="{name}", alertstate="firing"}})',
            "eval_time": EVAL_AT,
            "exp_samples": [{"labels": "{}", "value": 1}] if name in firing else [],
        }
        for name in names
        if name not in unsure
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(scrapes),
                "promql_expr_test": questions,
            }
        ],
    }
    path = tmp_path / "rules-test.yml"
    path.write_text(json.dumps(test, indent=1))  # JSON is YAML
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (
        f"expected firing {sorted(firing)} and no other (unsure: {sorted(unsure)}); promtool:\n"
        f"{done.stdout}{done.stderr}\n(the test file: {path})"
    )


# -- the states ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class World:
    """What a state's driver acts on."""

    sim: Simulator
    daemon: Daemon
    server: MetricsServer
    socket: Path


async def healthy(world: World) -> Samples | None:
    async with connect(world.socket) as client:
        for power in (1500.0, -1500.0, 3000.0):
            result = await client.result("set_power", {"power_w": power, "batteries": list(ALL)})
            assert result["outcome"] == "success", result
    return await scrape(world.server)


async def daemon_stopped(world: World) -> Samples | None:
    return None  # :func:`observe` stops it, and scrapes it once it is gone


async def loop_stuck(world: World) -> Samples | None:
    # The daemon's event loop (this test's trio thread) is held while another thread scrapes:
    # the metrics server answers, without the daemon's state (READ_TIMEOUT_S later).
    box: list[Samples] = []
    done = threading.Event()

    def scrape_while_stuck() -> None:
        try:
            box.append(parse(scrape_text(world.server.url)))
        finally:
            done.set()

    threading.Thread(target=scrape_while_stuck, daemon=True).start()
    assert done.wait(READ_TIMEOUT_S * 10), "the scrape did not end"  # blocks the loop
    return box[0]


async def microgrid_down(world: World) -> Samples | None:
    world.sim.outage()
    await wait_until(
        world.daemon,
        lambda d: all(s.status is Status.NOT_WORKING for s in d.tracker.states.values()),
    )
    return await scrape(world.server)


async def one_battery_broken(world: World) -> Samples | None:
    world.sim.set_fault(1001, error_state=True)
    await wait_until(world.daemon, lambda d: d.tracker.state(1001).status is Status.NOT_WORKING)
    return await scrape(world.server)


async def every_battery_broken(world: World) -> Samples | None:
    for battery in ALL:
        world.sim.set_fault(battery, error_state=True)
    await wait_until(
        world.daemon,
        lambda d: all(s.status is Status.NOT_WORKING for s in d.tracker.states.values()),
    )
    return await scrape(world.server)


async def commands_failing(world: World) -> Samples | None:
    world.sim.set_fault(world.sim.inverter_of(1001), command_error="INTERNAL")
    async with connect(world.socket) as client:
        for power in (1000.0, 2000.0, 1500.0):
            result = await client.result("set_power", {"power_w": power, "batteries": [1001]})
            assert result["outcome"] != "success", result
    return await scrape(world.server)


async def setpoints_lapsed(world: World) -> Samples | None:
    # The standing setpoint runs out at the inverters during an outage (the simulator's record
    # says so), then the microgrid is back and every battery works again: only the lapses say
    # what happened.
    await lapse_in_an_outage(world.sim, world.daemon)
    return await scrape(world.server)


@attrs.frozen(kw_only=True)
class State:
    """A state to drive the daemon into, and what must fire there."""

    drive: Callable[[World], Awaitable[Samples | None]]
    firing: frozenset[str]
    unsure: frozenset[str] = frozenset()
    lifetime_scale: float = 1.0
    stops: bool = False


STATES = {
    "healthy": State(drive=healthy, firing=frozenset()),
    "daemon stopped": State(
        drive=daemon_stopped, firing=frozenset({"DistributordDown"}), stops=True
    ),
    "event loop stuck": State(drive=loop_stuck, firing=frozenset({"DistributordNotAnswering"})),
    "microgrid unreachable": State(
        drive=microgrid_down,
        firing=frozenset({"DistributordMicrogridUnreachable"}),
        # The standing setpoint's release fails while the API cannot be reached; how many
        # commands were sent before and during the outage decides the share.
        unsure=frozenset({"DistributordCommandsFailing"}),
    ),
    "a battery in an error state": State(
        drive=one_battery_broken, firing=frozenset({"DistributordBatteriesNotWorking"})
    ),
    "every battery in an error state": State(
        drive=every_battery_broken,
        firing=frozenset({"DistributordBatteriesNotWorking", "DistributordNoBatteryWorking"}),
    ),
    "an inverter failing commands": State(
        drive=commands_failing, firing=frozenset({"DistributordCommandsFailing"})
    ),
    "setpoints lapsed in an outage": State(
        drive=setpoints_lapsed,
        firing=frozenset({"DistributordSetpointsLapsing"}),
        # The outage made the releases fail; how many depends on its length.
        unsure=frozenset({"DistributordCommandsFailing"}),
        lifetime_scale=LAPSE_SCALE,
    ),
}


async def observe(state: State, tmp_path: Path) -> Scrapes:
    """The daemon on the simulator with a standing setpoint (*before*), then in ``state``."""
    scale = state.lifetime_scale
    sock = tmp_path / "c.sock"
    with Simulator(SCENARIO, lifetime_scale=scale) as sim:
        async with daemon_with_metrics(sim, tmp_path, lifetime_scale=scale) as (daemon, server):
            async with connect(sock) as client:
                result = await client.result(
                    "set_power", {"power_w": 3000.0, "batteries": list(ALL)}
                )
                assert result["outcome"] == "success", result
            before = await scrape(server)
            world = World(sim=sim, daemon=daemon, server=server, socket=sock)
            after = await state.drive(world)
            url = server.url
    if state.stops:  # the daemon and its metrics server are gone, as with the process
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            await scrape_url(url)
    return Scrapes(before=before, after=after)


@needs_promtool
@pytest.mark.parametrize("name", list(STATES))
async def test_each_alert_fires_exactly_in_the_state_it_is_for(name: str, tmp_path: Path) -> None:
    state = STATES[name]
    scrapes = await observe(state, tmp_path)
    judge(scrapes, set(state.firing), set(state.unsure), tmp_path)


@needs_promtool
def test_a_daemon_prometheus_has_no_target_for_is_down(tmp_path: Path) -> None:
    # No scrape at all (the job is missing or misnamed): absent(up) says so.
    judge(Scrapes(before={}, after=None, target=False), {"DistributordDown"}, set(), tmp_path)


def test_every_alert_has_a_state_that_fires_it() -> None:
    fired = {alert for state in STATES.values() for alert in state.firing}
    assert fired == set(alerts())


def test_every_alert_says_how_long_how_bad_and_what_to_do() -> None:
    blocks = alert_blocks()
    assert list(blocks) == alerts()
    for name, block in blocks.items():
        assert re.search(r"^ +for: \d+[smh]$", block, re.MULTILINE), name
        assert re.search(r"^ +severity: (warning|critical)$", block, re.MULTILINE), name
        assert re.search(r"^ +summary: \S", block, re.MULTILINE), name
        description = block.partition("description: >-")[2]
        assert len(description.split()) > 20, name


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- every metric used is one the daemon exports -------------------------------------------------

METRIC_NAME = re.compile(r"\b(distributord_[a-zA-Z0-9_]+|distributord:[a-zA-Z0-9_:]+)")


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every query of the dashboard: (where, expression)."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield f"panel {inner['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield f"variable {variable['name']!r}", query["query"]


def rules_text() -> Iterator[tuple[str, str]]:
    """The rules file's lines that are not comments (expressions and annotations alike)."""
    for number_, line in enumerate(RULES.read_text().splitlines(), 1):
        if not line.lstrip().startswith("#"):
            yield f"{RULES.name} line {number_}", line


@functools.cache
def recorded() -> frozenset[str]:
    return frozenset(re.findall(r"^ *- record: (\S+)$", RULES.read_text(), re.MULTILINE))


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "distributord"
    assert isinstance(dashboard["schemaVersion"], int)
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + datasource["name"] + "}", panel["title"]
            assert panel["targets"], panel["title"]


async def test_every_metric_in_the_dashboard_and_the_rules_is_exported(tmp_path: Path) -> None:
    # The healthy state's scrape: a standing setpoint, requests answered, commands sent.
    scrapes = await observe(STATES["healthy"], tmp_path)
    assert scrapes.after is not None
    exported = {name for name, _ in scrapes.after}
    dashboard = json.loads(DASHBOARD.read_text())
    missing = [
        (where, name)
        for where, expr in [*panel_exprs(dashboard), *rules_text()]
        for name in METRIC_NAME.findall(expr)
        if name not in exported and name not in recorded()
    ]
    assert not missing, f"not in a running daemon's scrape: {missing}"
