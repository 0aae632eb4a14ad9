"""The simulator's side of telemetry (``api/common.py``): what a reading becomes, per filter."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.api import v1, v1alpha
from distributord.api.adapter import BatteryTelemetry, InverterTelemetry, SimHandler, Telemetry
from distributord.api.common import SIM_METRICS, TelemetryServing, samples, thirds
from distributord.core.model import StateCode

BATTERY = BatteryTelemetry(
    component_id=1001,
    sampled_at=1_800_000_000.0,
    soc_pct=55.0,
    soc_bounds=(10.0, 90.0),
    capacity_wh=10_000.0,
    power_w=-1_500.0,
    power_ranges=[(-5_000.0, 5_000.0)],
    states=[StateCode.READY],
    dc_voltage_v=750.0,
    temperature_c=27.5,
)
INVERTER = InverterTelemetry(
    component_id=2001,
    sampled_at=1_800_000_000.0,
    active_power_w=-3_000.0,
    power_ranges=[(-5_000.0, 5_000.0)],
    states=[StateCode.READY],
    reactive_power_var=1_200.0,
    reactive_ranges=[(-4_000.0, 4_000.0)],
    frequency_hz=50.0,
    voltage_v=230.0,
    temperature_c=31.0,
)
METER = InverterTelemetry(
    component_id=2,
    sampled_at=1_800_000_000.0,
    active_power_w=600.0,
    power_ranges=None,
    states=[StateCode.READY],
    reactive_power_var=0.0,
    frequency_hz=50.0,
    voltage_v=230.0,
)
VERSIONS: dict[str, tuple[Any, dict[str, int]]] = {
    "v1alpha18": (v1alpha.encode_telemetry, v1alpha.SIM_METRIC_NUMBERS),
    "v1": (v1.encode_telemetry, v1.SIM_METRIC_NUMBERS),
}


def by_name(found: list[tuple[str, Any, Any]]) -> dict[str, tuple[Any, Any]]:
    return {name: (value, ranges) for name, value, ranges in found}


def test_every_metric_has_its_own_number_in_every_version() -> None:
    for _, numbers in VERSIONS.values():
        assert set(numbers) == set(SIM_METRICS)
        assert len(set(numbers.values())) == len(SIM_METRICS)
    # By name: v1alpha18/19 put POWER before its kind, v1 after.
    metric = v1alpha.Metric
    assert v1alpha.SIM_METRIC_NUMBERS["AC_REACTIVE_POWER_PHASE_2"] == metric.Value(
        "METRIC_AC_POWER_REACTIVE_PHASE_2"
    )
    assert v1.SIM_METRIC_NUMBERS["AC_REACTIVE_POWER_PHASE_2"] == v1.Metric.Value(
        "METRIC_AC_REACTIVE_POWER_PHASE_2"
    )


def test_a_battery_without_a_filter() -> None:
    found = by_name(samples(BATTERY, None))
    assert found == {
        "BATTERY_SOC_PCT": (55.0, ((10.0, 90.0),)),
        "BATTERY_CAPACITY": (10_000.0, None),
        "DC_POWER": (-1_500.0, [(-5_000.0, 5_000.0)]),
        "DC_VOLTAGE": (750.0, None),
        "DC_CURRENT": (-2.0, None),
        "BATTERY_TEMPERATURE": (27.5, None),
    }


def test_an_inverter_without_a_filter() -> None:
    found = by_name(samples(INVERTER, None))
    current = -math.hypot(1_000.0, 400.0) / 230.0
    assert found == {
        "AC_ACTIVE_POWER": (-3_000.0, [(-5_000.0, 5_000.0)]),
        "AC_REACTIVE_POWER": (1_200.0, [(-4_000.0, 4_000.0)]),
        **{f"AC_ACTIVE_POWER_PHASE_{p}": (-1_000.0, None) for p in (1, 2, 3)},
        **{f"AC_REACTIVE_POWER_PHASE_{p}": (400.0, None) for p in (1, 2, 3)},
        "AC_FREQUENCY": (50.0, None),
        **{f"AC_VOLTAGE_PHASE_{p}_N": (230.0, None) for p in (1, 2, 3)},
        **{f"AC_CURRENT_PHASE_{p}": (pytest.approx(current), None) for p in (1, 2, 3)},
        "INVERTER_TEMPERATURE": (31.0, None),
    }
    assert "INVERTER_TEMPERATURE" not in by_name(samples(METER, None))
    assert by_name(samples(METER, None))["AC_CURRENT_PHASE_1"] == (200.0 / 230.0, None)


@pytest.mark.parametrize(
    "reading", [BATTERY, INVERTER, METER], ids=["battery", "inverter", "meter"]
)
@given(wanted=st.frozensets(st.sampled_from([*SIM_METRICS, "NOT_A_METRIC"])))
def test_a_filter_builds_exactly_what_it_names_of_what_there_is(
    reading: Telemetry, wanted: frozenset[str]
) -> None:
    everything = by_name(samples(reading, None))
    found = by_name(samples(reading, wanted))
    assert found == {name: everything[name] for name in everything if name in wanted}


def test_the_daemons_filter_builds_no_ac_details() -> None:
    daemon = frozenset({"BATTERY_SOC_PCT", "BATTERY_CAPACITY", "DC_POWER", "AC_ACTIVE_POWER"})
    assert [name for name, _, _ in samples(INVERTER, daemon)] == ["AC_ACTIVE_POWER"]
    assert [name for name, _, _ in samples(BATTERY, daemon)] == [
        "BATTERY_SOC_PCT",
        "BATTERY_CAPACITY",
        "DC_POWER",
    ]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_three_phases_add_up_to_the_total_exactly(total: float) -> None:
    p1, p2, p3 = thirds(total)
    assert (p1 + p2) + p3 == total
    assert Fraction(p1 + p2) + Fraction(p3) == Fraction(total)  # no rounding in the last step
    assert p1 == p2
    if total != 0.0 and abs(total) > 1e-300:
        assert float(abs(Fraction(p3) - Fraction(total) / 3)) <= abs(total) * 1e-15


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_an_encoding_holds_the_filters_metrics_by_the_versions_numbers(version: str) -> None:
    encode, numbers = VERSIONS[version]
    wanted = frozenset({"AC_REACTIVE_POWER", "AC_CURRENT_PHASE_2", "BATTERY_SOC_PCT"})
    message = encode(INVERTER, wanted)
    assert [s.metric for s in message.metric_samples] == [
        numbers["AC_REACTIVE_POWER"],
        numbers["AC_CURRENT_PHASE_2"],
    ]
    assert message.metric_samples[0].value.simple_metric.value == 1_200.0
    bounds = message.metric_samples[0].bounds
    assert [(b.lower, b.upper) for b in bounds] == [(-4_000.0, 4_000.0)]
    assert len(encode(INVERTER).metric_samples) == len(samples(INVERTER, None))


class _Nothing:
    async def telemetry(self, component_id: int) -> AsyncIterator[Telemetry]:  # pragma: no cover
        yield BATTERY


def test_a_reading_is_encoded_once_per_filter_and_shared() -> None:
    calls: list[tuple[int, frozenset[str] | None]] = []

    def encode(reading: Telemetry, wanted: frozenset[str] | None) -> object:
        calls.append((reading.component_id, wanted))
        return object()

    names = {n: name for name, n in v1.SIM_METRIC_NUMBERS.items()}
    serving = TelemetryServing(cast(SimHandler, _Nothing()), encode, lambda m: m, names)
    daemon = serving.wanted([v1.SIM_METRIC_NUMBERS["AC_ACTIVE_POWER"], 99_999])
    assert daemon == frozenset({"AC_ACTIVE_POWER"})  # a number it does not know: not had
    other = serving.wanted([v1.SIM_METRIC_NUMBERS["AC_FREQUENCY"]])
    assert serving.wanted(None) is None
    first = serving.message(INVERTER, daemon)
    assert serving.message(INVERTER, daemon) is first  # a second stream, the same filter
    assert serving.message(INVERTER, other) is not first
    assert serving.message(INVERTER, None) is not first
    assert serving.message(INVERTER, daemon) is first  # the others did not push it out
    newer = InverterTelemetry(
        component_id=2001,
        sampled_at=1_800_000_001.0,
        active_power_w=0.0,
        power_ranges=None,
        states=(),
    )
    assert serving.message(newer, daemon) is not first
    assert calls == [(2001, daemon), (2001, other), (2001, None), (2001, daemon)]


def test_made_up_filters_do_not_pile_up() -> None:
    serving = TelemetryServing(cast(SimHandler, _Nothing()), lambda r, w: object(), lambda m: m, {})
    for k in range(1_000):
        serving.message(INVERTER, frozenset({f"M{k}"}))
    assert len(serving._last[2001]) <= 8
