"""Each key a reload applies live, reloaded the way SIGHUP does, and its effect observed.

Every test reloads through ``service._reload`` (the file read, ``config.reloaded``, one
assignment to the running configuration) and watches the part that uses the key act on the new
value: the tracker and the request loop under trio's mock clock, the
control server and the drain in a daemon on the simulator, the log level in a process.
``test_every_live_key_has_its_effect_tested`` fails when a key is declared live
(``core.config.LIVE``) without a test here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing

from distributord.core import config as configuration
from distributord.core.arbitration.arbiter import Ask
from distributord.core.config import LIVE_KEYS, Config
from distributord.core.model import Request
from distributord.core.planning import choose as real_choose
from distributord.core.planning import plan as real_plan
from distributord.core.planning import uncommanded as real_uncommanded
from distributord.core.status import Status
from distributord.shell import control, requestloop, service
from distributord.shell.daemon import Daemon
from distributord.shell.live import LiveValue
from distributord.shell.requestloop import NOBODY, RequestLoop
from distributord.shell.requestloop import reactive_split as realreactive_split
from distributord.shell.systemd import Notifier
from distributord.shell.tracker import StatusTracker
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.fakes import FakeMicrogrid
from tests.shell.test_requestloop import PAIRS, TOPOLOGY, feed, wall
from tests.shell.test_service import RUN, Log, Notifications, config_file, daemon_process
from tests.shell.test_tracker import wait_status
from tests.support import LIMIT_S, connect, running_daemon, sim_wait

_F = TypeVar("_F", bound=Callable[..., Any])

COVERED: set[str] = set()


def effect_of(*keys: str) -> Callable[[_F], _F]:
    """Marks a test as the one that shows what reloading ``keys`` does."""

    def mark(test: _F) -> _F:
        COVERED.update(keys)
        return test

    return mark


@attrs.define
class Running:
    """The configuration file and the daemon's running configuration, read from it."""

    path: Path
    config: LiveValue[Config]

    def reload(self, text: str) -> None:
        """Write ``text`` as the configuration file and reload it as SIGHUP does."""
        self.path.write_text(text)
        service._reload(self.config, self.path, Notifier({}), {}, lambda: "test")


def start(tmp_path: Path, text: str = "", *, address: str = "127.0.0.1:1") -> Running:
    path = tmp_path / "distributord.toml"
    path.write_text(text)
    config = configuration.with_overrides(configuration.load_config(path), microgrid=address)
    return Running(path, LiveValue(config))


def test_every_live_key_has_its_effect_tested() -> None:
    assert COVERED == LIVE_KEYS


def test_a_key_that_needs_a_restart_keeps_its_running_value(tmp_path: Path) -> None:
    running = start(tmp_path, "[requests]\nqueue_size = 8\n")
    running.reload("[requests]\nqueue_size = 2\n")
    assert running.config.value.requests.queue_size == 8


# --- the status tracker -----------------------------------------------------------------------

BLOCKING = "[status]\nmax_data_age_s = 3600\nmin_blocking_s = 1\nmax_blocking_s = 30\n"


@asynccontextmanager
async def tracking(running: Running) -> AsyncIterator[StatusTracker]:
    tracker = StatusTracker(PAIRS, running.config.view(lambda c: c.status), wall_clock=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        yield tracker
        nursery.cancel_scope.cancel()


@effect_of("status.max_data_age_s")
async def test_max_data_age(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    running = start(tmp_path, "[status]\nmax_data_age_s = 10\n")
    async with tracking(running) as tracker:
        running.reload("[status]\nmax_data_age_s = 2\n")
        feed(tracker, 1001)
        fed = trio.current_time()
        assert await wait_status(tracker, 1001, Status.NOT_WORKING) == fed + 2.0


@effect_of("status.min_blocking_s")
async def test_min_blocking(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    running = start(tmp_path, BLOCKING)
    async with tracking(running) as tracker:
        feed(tracker, 1001)
        running.reload(BLOCKING.replace("min_blocking_s = 1", "min_blocking_s = 4"))
        tracker.record_outcomes(succeeded=[], failed=[1001])
        assert tracker.state(1001).blocked_until == trio.current_time() + 4.0


@effect_of("status.max_blocking_s")
async def test_max_blocking(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    running = start(tmp_path, BLOCKING)
    async with tracking(running) as tracker:
        feed(tracker, 1001)
        tracker.record_outcomes(succeeded=[], failed=[1001])  # a window of 1 s
        await trio.sleep(1.0)
        running.reload(BLOCKING.replace("max_blocking_s = 30", "max_blocking_s = 1.5"))
        tracker.record_outcomes(succeeded=[], failed=[1001])  # would double to 2 s
        assert tracker.state(1001).blocked_until == trio.current_time() + 1.5


# --- the request loop -------------------------------------------------------------------------


@attrs.define
class Looping:
    loop: RequestLoop
    fake: FakeMicrogrid
    replies: list[object]

    def submit(self, power_w: float, *batteries: int, **fields: Any) -> None:
        request = Request(power_w=power_w, batteries=frozenset(batteries), **fields)
        assert self.loop.submit(request, lambda result, timing: self.replies.append(result))


@asynccontextmanager
async def looping(running: Running) -> AsyncIterator[Looping]:
    async with tracking(running) as tracker:
        for battery in PAIRS:
            feed(tracker, battery)
        fake = FakeMicrogrid(TOPOLOGY)
        loop = RequestLoop(fake, tracker, TOPOLOGY, running.config)
        async with trio.open_nursery() as nursery:
            await nursery.start(loop.serve)
            yield Looping(loop, fake, [])
            nursery.cancel_scope.cancel()


@effect_of("setpoints.lifetime_s")
async def test_lifetime(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    # What a lifetime does to the refresh period is test_requestloop's
    # test_a_reload_that_shortens_the_lifetime_re_times_standing_setpoints_at_once.
    running = start(tmp_path, "[setpoints]\nlifetime_s = 60\n")
    async with looping(running) as rig:
        running.reload("[setpoints]\nlifetime_s = 15\n")
        rig.submit(2000.0, 1001, 1002)
        await trio.sleep(1.0)
        assert [batch.lifetime_s for batch in rig.fake.batches] == [15]


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the loop passes to the pure planning functions, request by request."""
    seen: list[dict[str, Any]] = []
    chosen: list[float] = []  # the bounds for a merge are chosen too, without a plan

    def choose(*args: Any, **kwargs: Any) -> Any:
        chosen.append(kwargs["cache_ttl_s"])
        return real_choose(*args, **kwargs)

    def plan(*args: Any, **kwargs: Any) -> Any:
        seen.append(
            {
                "cache_ttl_s": chosen[-1],
                "exponent": kwargs["exponent"],
                "band_pct": kwargs["derate_band_pct"],
                "budget_s": kwargs["search_budget"].seconds,
            }
        )
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(requestloop, "choose", choose)
    monkeypatch.setattr(requestloop, "plan", plan)
    return seen


@effect_of(
    "distribution.exponent",
    "distribution.derate_band_pct",
    "distribution.search_budget_ms",
    "status.broken_cache_ttl_s",
)
@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ("[distribution]\nexponent = 2.5\n", {"exponent": 2.5}),
        ("[distribution]\nderate_band_pct = 10\n", {"band_pct": 10.0}),
        ("[distribution]\nsearch_budget_ms = 7\n", {"budget_s": 0.007}),
        ("[status]\nbroken_cache_ttl_s = 42\n", {"cache_ttl_s": 42.0}),
    ],
)
async def test_what_the_loop_plans_with(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    planned: list[dict[str, Any]],
    text: str,
    seen: dict[str, float],
) -> None:
    # How each value shapes a plan is the core's business (tests/core); here: that the value
    # a reload puts in force is the one the next request is planned with.
    running = start(tmp_path)
    async with looping(running) as rig:
        rig.submit(2000.0, 1001, 1002)
        await trio.sleep(1.0)
        running.reload(text)
        rig.submit(3000.0, 1001, 1002)
        await trio.sleep(1.0)
    (key,) = seen
    assert [p[key] for p in planned] != [seen[key]] * 2  # the first was planned as started
    assert planned[-1][key] == pytest.approx(seen[key])


@effect_of("distribution.compensate_unused")
async def test_compensate_unused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What it does to a request is tests/core/test_compensation.py and, through the daemon on
    # the simulator, tests/shell/test_uncommanded.py; here: the next plan follows a reload.
    seen: list[bool] = []

    def uncommanded(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["enabled"])
        return real_uncommanded(*args, **kwargs)

    monkeypatch.setattr(requestloop, "uncommanded", uncommanded)
    running = start(tmp_path)
    async with looping(running) as rig:
        rig.submit(2000.0, 1001, 1002)
        await trio.sleep(1.0)
        running.reload("[distribution]\ncompensate_unused = false\n")
        rig.submit(3000.0, 1001, 1002)
        await trio.sleep(1.0)
    assert seen[0] is True
    assert seen[-1] is False


@effect_of("ramp.max_w_per_s", "ramp.step_s")
async def test_a_ramp_under_way_goes_on_at_the_new_rate_and_step(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # What a ramp does is tests/core/test_ramp.py and test_requestloop's ramp tests; here: a
    # reload takes effect at the ramp's next step, from where its power is.
    running = start(tmp_path, "[ramp]\nmax_w_per_s = 1000\nstep_s = 1\n")
    async with looping(running) as rig:
        rig.submit(-5000.0, 1001, 1002)
        await trio.sleep(1.5)
        running.reload("[ramp]\nmax_w_per_s = 2000\nstep_s = 0.5\n")
        await trio.sleep(1.5)
        running.reload("[ramp]\nmax_w_per_s = 0\n")  # off: the target at once
        rig.submit(-1000.0, 1001, 1002)
        await trio.sleep(1.0)
    totals = [(at, sum(powers.values())) for at, powers in rig.fake.sent()]
    assert totals == [
        (0.0, 0.0),
        (1.0, -1000.0),
        (2.0, -2000.0),  # the step planned with the old step_s, at the new rate and step
        (2.5, -3000.0),
        (3.0, -1000.0),
    ]


@effect_of("plant.pq_priority")
async def test_pq_priority(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What it does to a split is tests/core/distribution/test_reactive.py and, through the
    # daemon on the simulator, tests/shell/test_plant.py; here: the next plan follows a reload.
    # "active" splits reactive power with the active setpoints known; "reactive" before them.
    seen: list[bool] = []

    def split(target: float, pairs: Any, active: Mapping[int, float]) -> Any:
        seen.append(bool(active))
        return realreactive_split(target, pairs, active)

    monkeypatch.setattr(requestloop, "reactive_split", split)
    running = start(tmp_path)
    async with looping(running) as rig:
        rig.submit(2000.0, 1001, 1002, reactive_var=100.0)
        await trio.sleep(1.0)
        running.reload('[plant]\npq_priority = "reactive"\n')
        rig.submit(3000.0, 1001, 1002, reactive_var=100.0)
        await trio.sleep(1.0)
    assert seen[0] is True
    assert seen[-1] is False


# --- arbitration -------------------------------------------------------------------------------

PROGRAMS = "[programs.a]\npriority = 2\n[programs.b]\npriority = 1\n"


def ask(program: str, power_w: float, *batteries: int) -> Ask:
    """A ``propose`` of ``program`` (told nothing: no connection listens)."""
    return Ask(
        origin=attrs.evolve(NOBODY, program=program),
        request=Request(power_w=power_w, batteries=frozenset(batteries)),
        power_w=power_w,
        proposed=True,
    )


async def proposed(rig: Looping, program: str, power_w: float, *batteries: int) -> Any:
    """Propose and wait for the reply's arbitration object."""
    answered = trio.Event()

    def reply(result: Any, _: Any) -> None:
        rig.replies.append(result)
        answered.set()

    assert rig.loop.submit(ask(program, power_w, *batteries), reply)
    await answered.wait()
    return rig.replies[-1].arbitration  # type: ignore[attr-defined]


@effect_of("arbitration.merge")
async def test_merge(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    running = start(tmp_path, PROGRAMS)
    async with looping(running) as rig:
        await proposed(rig, "a", 1000.0, 1001, 1002)
        assert (await proposed(rig, "b", 500.0, 1001, 1002))["target_w"] == 1500.0
        running.reload(PROGRAMS + '[arbitration]\nmerge = "override"\n')
        overridden = await proposed(rig, "b", 600.0, 1001, 1002)
        assert overridden["target_w"] == 1000.0  # a's alone: b only narrows now
        assert "overridden" in overridden["reasons"]


async def test_programs_priorities_and_removal(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Not a LIVE_KEYS key (the programs' keys are the operator's names): core.config.is_live.
    running = start(tmp_path, PROGRAMS)
    async with looping(running) as rig:
        await proposed(rig, "a", 1000.0, 1001, 1002)
        await proposed(rig, "b", -500.0, 1002, 1003)
        held = {p["program"]: p["held_batteries"] for p in rig.loop.proposals()}
        assert held == {"a": [1001, 1002], "b": [1003]}
        running.reload(PROGRAMS.replace("priority = 1", "priority = 3"))
        await proposed(rig, "b", -500.0, 1002, 1003)  # made after the reload: priority 3
        held = {p["program"]: p["held_batteries"] for p in rig.loop.proposals()}
        assert held == {"a": [1001], "b": [1002, 1003]}
        running.reload("[programs.a]\npriority = 2\n")
        rig.loop.submit(ask("b", 100.0, 1004), lambda r, _: rig.replies.append(r))
        await trio.sleep(1.0)
        assert "program 'b' is no longer configured" in rig.replies[-1].message  # type: ignore[attr-defined]
        # Its proposals end with it (its limits are gone, nobody may withdraw for it): 1003,
        # which only b held, is released; a gets 1002 back.
        held = {p["program"]: p["held_batteries"] for p in rig.loop.proposals()}
        assert held == {"a": [1001, 1002]}
        assert rig.loop.commander.ledger.wanted(2003) is None


# --- the daemon on the simulator ---------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(2, seed=5), telemetry_hz=20.0, apis=("v1",)) as simulator:
        yield simulator


@asynccontextmanager
async def daemon_on(
    sim: Simulator, tmp_path: Path, text: str = ""
) -> AsyncIterator[tuple[Daemon, Running]]:
    running = start(tmp_path, text, address=sim.address)
    async with running_daemon(sim, tmp_path / "c.sock", running.config) as daemon:
        yield daemon, running


@effect_of("control.max_connections")
async def test_max_connections(sim: Simulator, tmp_path: Path) -> None:
    async with daemon_on(sim, tmp_path) as (_, running):
        running.reload("[control]\nmax_connections = 1\n")
        async with connect(tmp_path / "c.sock") as first:
            assert (await first.result("ping"))["version"]
            async with connect(tmp_path / "c.sock") as second:
                with trio.fail_after(LIMIT_S):
                    assert (await second.receive())["error"]["code"] == -32001


@effect_of("control.allowed_uids", "control.allowed_gids")
@pytest.mark.parametrize("key", ["allowed_uids", "allowed_gids"])
async def test_allowed_peers(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    uid, gid = os.geteuid() + 4242, os.getegid() + 4343  # neither root nor the daemon's user
    monkeypatch.setattr(control, "peer_credentials", lambda sock: (os.getpid(), uid, gid))
    async with daemon_on(sim, tmp_path) as (_, running):
        async with connect(tmp_path / "c.sock") as refused:
            with trio.fail_after(LIMIT_S):
                assert (await refused.receive())["error"]["code"] == -32003
        running.reload(f"[control]\n{key} = [{uid if key == 'allowed_uids' else gid}]\n")
        async with connect(tmp_path / "c.sock") as admitted:
            assert (await admitted.result("ping"))["version"]


@effect_of("control.allowed_uids", "control.allowed_gids")
@pytest.mark.parametrize("key", ["allowed_uids", "allowed_gids"])
async def test_a_peer_no_longer_allowed_loses_the_connection_it_holds(
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    # Issue 18, finding 8: a reload checked only connections still to come; a peer taken out
    # of the allowed ones kept the connection it held, and could still command power.
    uid, gid = os.geteuid() + 4242, os.getegid() + 4343  # neither root nor the daemon's user
    monkeypatch.setattr(control, "peer_credentials", lambda sock: (os.getpid(), uid, gid))
    allowed = f"[control]\n{key} = [{uid if key == 'allowed_uids' else gid}]\n"
    sim.set_fault(2001, command_latency_s=1.0)  # the first request holds 1001 meanwhile
    async with daemon_on(sim, tmp_path, allowed) as (daemon, running):
        async with connect(tmp_path / "c.sock") as client:
            running.reload(allowed + "max_connections = 5\n")  # still allowed: kept
            assert (await client.result("ping"))["version"]
            await client.send("set_power", {"power_w": 500, "batteries": [1001]})
            await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
            await client.send("set_power", {"power_w": 900, "batteries": [1001]})  # waits
            await client.result("ping")  # the request before it has been taken
            running.reload(f"[control]\n{key} = []\n")
            refused = await client.receive()
            assert refused["id"] is None
            assert refused["error"]["code"] == -32003
            assert "may no longer use this socket" in refused["error"]["message"]
            with pytest.raises(trio.EndOfChannel):  # then the connection is closed
                await client.receive()
        # The request still waiting is withdrawn: never applied. (The one being applied
        # completes, as for a client that leaves.)
        withdrawn = daemon.metrics.registry.get_sample_value(
            "distributord_requests_total", {"method": "set_power", "outcome": "withdrawn"}
        )
        assert withdrawn == 1
    assert [r.getMessage() for r in caplog.records if "no longer allowed" in r.getMessage()] == [
        f"control socket: pid {os.getpid()} (uid {uid}, gid {gid}) is no longer allowed after"
        " the reload; closing its connection"
    ]


@effect_of("requests.default_timeout_s")
async def test_default_timeout(sim: Simulator, tmp_path: Path) -> None:
    sim.set_fault(2001, command_latency_s=1.0)  # within the 5 s default; not within 0.2 s
    async with daemon_on(sim, tmp_path) as (_, running):
        running.reload("[requests]\ndefault_timeout_s = 0.2\n")
        async with connect(tmp_path / "c.sock") as client:
            result = await client.result("set_power", {"power_w": 1000, "batteries": [1001, 1002]})
    assert result["outcome"] == "partial_failure"
    assert result["failed_batteries"] == [1001]


@effect_of("requests.drain_timeout_s")
async def test_drain_timeout(sim: Simulator, tmp_path: Path) -> None:
    sim.set_fault(2001, command_hang=True)
    async with daemon_on(sim, tmp_path) as (daemon, running):
        running.reload("[requests]\ndrain_timeout_s = 0.2\n")  # from the default 10 s
        async with connect(tmp_path / "c.sock") as client:
            hanging = await client.send(
                "set_power", {"power_w": 1000, "batteries": [1001], "request_timeout_s": 30}
            )
            await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
            daemon.stop()
            with trio.fail_after(5.0):  # the drain as started would take 10
                reply = await client.reply_to(hanging)
    assert reply["result"]["outcome"] == "error"


# --- the process ---------------------------------------------------------------------------------


async def wait_all_working(notify: Notifications, count: int) -> None:
    """Until systemd's latest ``STATUS=`` says ``count`` batteries work (seen or still coming)."""
    statuses = [f["STATUS"] for f in notify.seen if "STATUS" in f]
    latest = statuses[-1] if statuses else ""
    while not latest.startswith(f"{count} working,"):
        latest = (await notify.wait_for("STATUS"))["STATUS"]


@asynccontextmanager
async def daemon_run(
    sim: Simulator, tmp_path: Path, text: str
) -> AsyncIterator[tuple[Path, Path, trio.Process, Notifications, Log]]:
    """``distributord run`` on ``sim`` with ``text`` as its configuration, once it is ready.

    Yields the configuration file, the control socket, the process, systemd's notifications
    and the log; then stops the daemon with SIGTERM, which it must exit 0 on.
    """
    config = config_file(tmp_path, text)
    sock = tmp_path / "c.sock"
    args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")  # serving
        await notify.wait_for("READY", "1")  # and connected to the microgrid
        yield config, sock, process, notify, log
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0


async def reload_and_set_power(
    running: tuple[Path, Path, trio.Process, Notifications, Log], applied: str, power_w: float
) -> dict[str, Any]:
    """SIGHUP, until the log says ``applied``; then ``set_power`` on both batteries, working."""
    _, sock, process, notify, log = running
    process.send_signal(signal.SIGHUP)
    await log.wait_for(applied)
    # Both batteries working first (a loaded CI run once sent the request before their
    # telemetry had arrived: "no usable batteries").
    await wait_all_working(notify, 2)
    async with connect(sock) as client:
        result: dict[str, Any] = await client.result(
            "set_power", {"power_w": power_w, "batteries": [1001, 1002]}
        )
    return result


@effect_of("logging.level", "logging.libraries")
async def test_log_levels(sim: Simulator, tmp_path: Path) -> None:
    text = '[logging]\nlevel = "info"\n'
    async with daemon_run(sim, tmp_path, text) as running:
        config, *_, log = running
        config.write_text('[logging]\nlevel = "debug"\n')
        result = await reload_and_set_power(running, "reload: applied logging.level", 0)
        assert result["outcome"] == "success", result
        # The request's line, at debug: hidden at "info".
        await log.wait_for("request for batteries [1001, 1002] at 0 W: ")
        # grpc's debug lines (a few for every call) stay hidden until the libraries' level says.
        assert " DEBUG grpc" not in log.text
        config.write_text('[logging]\nlevel = "debug"\nlibraries = "debug"\n')
        await reload_and_set_power(running, "reload: applied logging.libraries", 1000)
        await log.wait_for(" DEBUG grpc")


async def test_a_reload_reads_the_drop_ins_and_names_a_bad_one(
    sim: Simulator, tmp_path: Path
) -> None:
    # The drop-in's deadline (0.2 s) against a command that takes 1 s: the main file's 5 s
    # would let it succeed.
    sim.set_fault(2001, command_latency_s=1.0)
    drop_ins = tmp_path / "conf.d"
    text = "[requests]\ndefault_timeout_s = 5\n"
    async with daemon_run(sim, tmp_path, text) as running:
        *_, process, _, log = running
        drop_ins.mkdir()
        (drop_ins / "50-site.toml").write_text("[requests]\ndefault_timeout_s = 0.2\n")
        applied = "reload: applied requests.default_timeout_s"
        result = await reload_and_set_power(running, applied, 1000)
        assert result["outcome"] == "partial_failure", result
        assert result["failed_batteries"] == [1001]

        (drop_ins / "60-bad.toml").write_text("[requests]\nqueue_size = 0\n")
        process.send_signal(signal.SIGHUP)
        await log.wait_for(
            f"reload: {drop_ins}/60-bad.toml: requests.queue_size: must be an integer >= 1, got 0;"
            " keeping the running configuration"
        )
