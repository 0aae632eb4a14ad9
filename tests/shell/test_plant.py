"""Plant-controller features through the daemon on the simulator (issue 24, ``spec/plant.md``).

Ramp rates: a bucket's target moves at most ``ramp.max_w_per_s`` from where its power is, a
step every ``ramp.step_s``; a ``ramp_exempt`` program's grant moves at once. What the inverters
hold is read from the simulator's own record, on its clock, in real time (a ramp of 4 s takes
4 s): nothing sleeps to synchronise, the tests wait on the simulator under a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from distributord.shell.daemon import Daemon
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.shell.test_arbitration import program
from tests.support import config_for, connect, running_daemon, sim_wait

BATTERIES = (1001, 1002, 1003, 1004)
INVERTERS = tuple(b + 1000 for b in BATTERIES)
RATE_W_PER_S = 10_000.0
STEP_S = 1.0
LATENCY_S = 0.5
"""What a step's commands may take to land, at most (loopback: some milliseconds)."""
LIMIT_S = 20.0
"""Each wait's bound: far above what it takes, so only a hang trips it."""

PROGRAMS = {
    "trade": {"priority": 10},
    "fcr": {"priority": 90, "ramp_exempt": True},
}


INVERTER_RAMP_W_PER_S = 5_000.0
"""How fast each simulated inverter's applied power follows its setpoint: twice its share of the
site's ramp (2.5 kW/s), as a real inverter keeps up with a plant controller's steps."""


def fleet(*, power_limit_w: float = 5_000.0, **inverter: Any) -> Scenario:
    """Four batteries at 50 % SoC, each on its own inverter.

    Both sides take ``power_limit_w`` either way; the inverters have ``inverter``'s fields too.
    """
    return Scenario(
        batteries=tuple(
            BatterySpec(id=b, soc_pct=50.0, capacity_wh=100_000.0, power_limit_w=power_limit_w)
            for b in BATTERIES
        ),
        inverters=tuple(
            InverterSpec(id=b + 1000, batteries=(b,), power_limit_w=power_limit_w, **inverter)
            for b in BATTERIES
        ),
        telemetry_hz=20.0,
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # ±10 kW each, on inverters that ramp.
    ramping = fleet(power_limit_w=10_000.0, ramp_w_per_s=INVERTER_RAMP_W_PER_S)
    with Simulator(ramping, apis=("v1",)) as simulator:
        yield simulator


@pytest.fixture
async def daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[Daemon]:
    config = config_for(
        sim,
        ramp={"max_w_per_s": RATE_W_PER_S, "step_s": STEP_S},
        programs=PROGRAMS,
    )
    async with running_daemon(sim, tmp_path / "control.sock", config) as running:
        yield running


def total(sim: Simulator) -> float:
    return sum(sim.setpoint(i) for i in INVERTERS)


REACHED_W = -40_000.0 * (1.0 - 2.0**-20)
"""-40 kW less the setpoints' float32 rounding on the wire (toward zero, 2^-24 of each)."""


def landed(power_w: float, target_w: float) -> bool:
    """Whether ``power_w`` is ``target_w`` as the wire carries it.

    Never past it, and short of it by no more than the setpoints' float32 rounding toward zero
    (2^-24 of each; 2^-20 allowed).
    """
    return abs(target_w) * (1.0 - 2.0**-20) <= abs(power_w) <= abs(target_w) and (
        power_w * target_w > 0.0
    )


SAMPLE_S = 0.01
"""How finely the applied power is read back from the simulator's record."""


def applied(sim: Simulator, start: float) -> list[tuple[float, float]]:
    """The total power the inverters applied (ramped), every :data:`SAMPLE_S` since ``start``.

    ``(seconds after start, W)``, read from the simulator's record, on its clock.
    """
    record = sim.record()
    samples = []
    t = start
    while t < record.time:
        samples.append((t - start, sum(record.applied_at(i, t) for i in INVERTERS)))
        t += SAMPLE_S
    end = record.time  # and the last instant the record knows
    samples.append((end - start, sum(record.applied_at(i, end) for i in INVERTERS)))
    return samples


def worst_deviation(
    samples: list[tuple[float, float]], *, target_w: float, rate_w_per_s: float
) -> tuple[float, float]:
    """The applied total's worst distance from the ideal ramp ``rate × t`` toward ``target_w``.

    Returns ``(W, s)``: the largest gap in power at any sampled instant, and the largest lag in
    time (how long after the ideal ramp passed a level the applied total reached it).
    """
    sign = 1.0 if target_w > 0 else -1.0
    worst_w = worst_s = 0.0
    for at, power in samples:
        ideal = sign * min(abs(target_w), rate_w_per_s * at)
        worst_w = max(worst_w, abs(ideal - power))
        worst_s = max(worst_s, at - abs(power) / rate_w_per_s)
    return worst_w, worst_s


async def test_a_step_to_minus_40_kw_at_10_kw_per_s_takes_4_s(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    trade, stream = await program(tmp_path / "control.sock", "trade")
    async with stream:
        start = sim.now()
        result = await trade.result("set_power", {"power_w": -40_000, "batteries": BATTERIES})
        assert result["outcome"] == "success", result
        assert result["ramping"]["target_w"] == -40_000.0
        assert result["ramping"]["eta_s"] == 4.0
        assert result["excess_power_w"] == 0.0
        # total() is the applied power: it reaches the target once the last ramp ends.
        await sim_wait(sim, lambda s: total(s) <= REACHED_W, LIMIT_S)
        samples = applied(sim, start)
    reached = next(at for at, w in samples if w <= REACHED_W)
    assert 4.0 - STEP_S <= reached <= 4.0 + STEP_S, samples
    # Never faster than the rate: between any two instants the applied total moved at most the
    # rate times the time between them, and one step (a step is commanded at once).
    for i, (t_i, w_i) in enumerate(samples[::10]):
        for t_j, w_j in samples[::10][i + 1 :]:
            assert abs(w_j - w_i) <= RATE_W_PER_S * (t_j - t_i + STEP_S) + 1e-3, samples
    # Never past the target.
    assert min(w for _, w in samples) >= -40_000.0 - 1e-3
    # Within one step of the ideal ramp, in power and in time (the figure README reports).
    worst_w, worst_s = worst_deviation(samples, target_w=-40_000.0, rate_w_per_s=RATE_W_PER_S)
    print(f"ramp 0 -> -40 kW at 10 kW/s: the applied power reached it after {reached:.2f} s;")
    print(f"worst deviation from the ideal ramp {worst_w:.0f} W, {worst_s:.3f} s")
    # A stepped ramp is up to one step behind the ideal line; the commands' latency adds to it.
    assert worst_w <= RATE_W_PER_S * (STEP_S + LATENCY_S)
    assert worst_s <= STEP_S + LATENCY_S


async def test_an_exempt_program_lands_at_once_while_the_ramp_goes_on(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    trade, trade_stream = await program(path, "trade")
    fcr, fcr_stream = await program(path, "fcr")
    async with trade_stream, fcr_stream:
        result = await trade.result("propose", {"power_w": -30_000, "batteries": BATTERIES})
        assert result["outcome"] == "success", result
        await sim_wait(sim, lambda s: total(s) <= -10_000.0 + 1e-3, LIMIT_S)
        before = total(sim)
        assert before > -30_000.0  # still ramping
        asked = sim.now()
        result = await fcr.result("propose", {"power_w": 8_000, "batteries": BATTERIES})
        assert result["outcome"] == "success", result
        # The exempt grant lands with the request, not a step later: the held total moved by
        # +8 kW (less what the ramp moved meanwhile, at most one step) at once.
        answered = sim.now()
        moved = total(sim) - before
        assert 8_000.0 - RATE_W_PER_S * STEP_S - 1e-3 <= moved <= 8_000.0 + 1e-3
        assert answered - asked < STEP_S
        # The trade's ramp goes on to its target: -30 kW + 8 kW, less the wire's rounding toward
        # zero (the samples' SoCs differ by a hair, so the shares are not all exactly -5.5 kW).
        await sim_wait(sim, lambda s: landed(total(s), -22_000.0), LIMIT_S)


# --- reactive power --------------------------------------------------------------------------


def reactive_fleet(*, apparent_limit_va: float | None = None) -> Scenario:
    """Four batteries of ±5 kW at 50 % SoC, inverters of ±3 kvar (and S, if given)."""
    return fleet(reactive_limit_var=3_000.0, apparent_limit_va=apparent_limit_va)


def reactive_total(sim: Simulator) -> float:
    return sum(sim.reactive_setpoint(i) for i in INVERTERS)


@pytest.mark.parametrize("api", ["v1alpha18", "v1alpha19", "v1"])
async def test_a_reactive_request_lands_on_every_inverter(api: str, tmp_path: Path) -> None:
    with Simulator(reactive_fleet(), apis=(api,)) as sim:
        path = tmp_path / "control.sock"
        async with running_daemon(sim, path, config_for(sim)), connect(path) as client:
            await sim_wait(sim, lambda s: True, LIMIT_S)
            result = await client.result(
                "set_power", {"power_w": -8_000, "reactive_var": 6_000, "batteries": BATTERIES}
            )
            assert result["outcome"] == "success", result
            reactive = result["reactive"]
            assert reactive["target_var"] == 6_000.0
            assert reactive["distribution"] == {str(b): 1_500.0 for b in BATTERIES}
            assert reactive["excess_var"] == 0.0
            assert reactive["failed_batteries"] == []
            assert [sim.reactive_setpoint(i) for i in INVERTERS] == [1_500.0] * 4
            assert total(sim) == -8_000.0
            status = await client.result("get_status")
            for entry in status["batteries"]:
                assert entry["reactive_setpoint_var"] == 1_500.0
                assert entry["reactive_bounds"] == {"lower_var": -3_000.0, "upper_var": 3_000.0}
            # Beyond what the inverters can take: each at its bound, the rest reported.
            result = await client.result(
                "set_power", {"power_w": -8_000, "reactive_var": -20_000, "batteries": BATTERIES}
            )
            assert result["reactive"]["excess_var"] == -8_000.0
            assert reactive_total(sim) == -12_000.0
            # Without reactive_var the reactive power is released (0 var).
            result = await client.result("set_power", {"power_w": -8_000, "batteries": BATTERIES})
            assert "reactive" not in result
            await sim_wait(sim, lambda s: reactive_total(s) == 0.0, LIMIT_S)


@pytest.mark.parametrize(
    ("priority", "active_w", "reactive_var"),
    [
        # Active first: 5 kW each fills S, no room is left for reactive power.
        ("active", -20_000.0, 0.0),
        # Reactive first: 1 kvar each, and each inverter's active cap shrinks to
        # sqrt(5000² − 1000²) = 4898.98 W (rounded down to float32s).
        ("reactive", -4 * 4898.979, 4_000.0),
    ],
)
async def test_the_apparent_power_limit_serves_the_priority_first(
    priority: str, active_w: float, reactive_var: float, tmp_path: Path
) -> None:
    with Simulator(reactive_fleet(apparent_limit_va=5_000.0), apis=("v1",)) as sim:
        path = tmp_path / "control.sock"
        config = config_for(sim, plant={"pq_priority": priority})
        async with running_daemon(sim, path, config), connect(path) as client:
            result = await client.result(
                "set_power", {"power_w": -20_000, "reactive_var": 4_000, "batteries": BATTERIES}
            )
            assert result["outcome"] == "success", result
            assert sum(result["distribution"].values()) == pytest.approx(active_w, abs=0.01)
            assert total(sim) == pytest.approx(active_w, abs=0.01)
            assert reactive_total(sim) == reactive_var
            assert result["reactive"]["excess_var"] == 4_000.0 - reactive_var
            # Never beyond S on any inverter, exactly.
            for inverter in INVERTERS:
                p, q = sim.setpoint(inverter), sim.reactive_setpoint(inverter)
                assert p * p + q * q <= 5_000.0**2
