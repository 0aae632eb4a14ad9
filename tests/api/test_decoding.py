"""The telemetry rules every version shares (``distributord.api``), for each version.

Messages are encoded by the simulator's side of each adapter and decoded by the daemon's side,
or built field by field (``versions.Version``) where a server might send what our encoder never
would.
"""

from __future__ import annotations

import math

import pytest

from distributord.api.adapter import BatteryTelemetry, Decoder, InverterTelemetry, Note
from distributord.core.bounds import Range
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from tests.api.versions import VERSIONS, Version

T0 = 1_800_000_000.0
BATTERY = 1001
INVERTER = 2001
MAX_SECONDS = 253_402_300_799

versions = pytest.mark.parametrize("version", VERSIONS, ids=repr)


def battery(**overrides: object) -> BatteryTelemetry:
    values: dict[str, object] = {
        "component_id": BATTERY,
        "sampled_at": T0,
        "soc_pct": 55.0,
        "soc_bounds": (10.0, 90.0),
        "capacity_wh": 10_000.0,
        "power_w": -300.0,
        "power_ranges": [(-5000.0, -100.0), (100.0, 5000.0)],
        "states": [StateCode.READY, StateCode.DISCHARGING],
    }
    values.update(overrides)
    return BatteryTelemetry(**values)  # type: ignore[arg-type]


def battery_decoder(version: Version, max_age: float = 10.0) -> Decoder:
    return version.adapter.decoder(BATTERY, battery=True, max_data_age_s=max_age)


def decode_battery(
    version: Version, message: object, decoder: Decoder | None = None, at: float = 100.0
) -> BatterySnapshot:
    snapshot = (decoder or battery_decoder(version)).decode(message, received_at=at)
    assert isinstance(snapshot, BatterySnapshot)
    return snapshot


@versions
def test_a_battery_round_trips(version: Version) -> None:
    message = version.encode(
        battery(errors=["overcurrent"], warnings=["undervoltage"], sampled_at=T0 + 0.25)
    )
    decoder = battery_decoder(version)
    assert decode_battery(version, message, decoder) == BatterySnapshot(
        component_id=BATTERY,
        sampled_at=T0 + 0.25,
        received_at=100.0,
        soc_pct=55.0,
        soc_lower_pct=10.0,
        soc_upper_pct=90.0,
        capacity_wh=10_000.0,
        power_w=-300.0,
        bounds=PowerBounds(
            inclusion_lower=-5000.0,
            exclusion_lower=-100.0,
            exclusion_upper=100.0,
            inclusion_upper=5000.0,
        ),
        states=frozenset({StateCode.READY, StateCode.DISCHARGING}),
        errors=frozenset({"overcurrent"}),
        warnings=frozenset({"undervoltage"}),
    )
    assert decoder.notes == set()
    assert decoder.ignored == 0


@versions
def test_an_inverter_round_trips(version: Version) -> None:
    message = version.encode(
        InverterTelemetry(
            component_id=INVERTER,
            sampled_at=T0,
            active_power_w=1234.5,
            power_ranges=[(-4000.0, 4000.0)],
            states=[StateCode.STANDBY],
            reactive_power_var=-250.0,
            reactive_ranges=[(-3000.0, 3000.0)],
            apparent_ranges=[(0.0, 4500.0)],
        )
    )
    decoder = version.adapter.decoder(INVERTER, battery=False, max_data_age_s=10.0)
    assert decoder.decode(message, received_at=5.0) == InverterSnapshot(
        component_id=INVERTER,
        sampled_at=T0,
        received_at=5.0,
        active_power_w=1234.5,
        bounds=PowerBounds.symmetric(4000.0),
        states=frozenset({StateCode.STANDBY}),
        reactive_bounds=PowerBounds.symmetric(3000.0),
        apparent_limit_va=4500.0,
    )


@versions
def test_an_inverter_decoder_ignores_battery_metrics(version: Version) -> None:
    message = version.message_of(
        INVERTER, [version.sample_of("soc", 50.0), version.sample_of("dc_power", 7.0)]
    )
    decoder = version.adapter.decoder(INVERTER, battery=False, max_data_age_s=10.0)
    snapshot = decoder.decode(message, received_at=1.0)
    assert isinstance(snapshot, InverterSnapshot)
    assert math.isnan(snapshot.active_power_w)


# The spec's worked examples, "From ranges to the four power bounds", and a few more.
RANGE_EXAMPLES: list[tuple[list[Range], tuple[float, float, float, float]]] = [
    ([(-5000.0, 5000.0)], (-5000.0, 0.0, 0.0, 5000.0)),
    ([(-5000.0, -300.0), (300.0, 5000.0)], (-5000.0, -300.0, 300.0, 5000.0)),
    ([(200.0, 4000.0)], (0.0, 0.0, 200.0, 4000.0)),
    ([(-4000.0, -200.0)], (-4000.0, -200.0, 0.0, 0.0)),
    ([(None, 100.0)], (-math.inf, 0.0, 0.0, 100.0)),
]


@versions
@pytest.mark.parametrize(("ranges", "expected"), RANGE_EXAMPLES)
def test_ranges_become_the_four_bounds(
    version: Version, ranges: list[Range], expected: tuple[float, float, float, float]
) -> None:
    snapshot = decode_battery(version, version.encode(battery(power_ranges=ranges)))
    bounds = snapshot.bounds
    assert (
        bounds.inclusion_lower,
        bounds.exclusion_lower,
        bounds.exclusion_upper,
        bounds.inclusion_upper,
    ) == expected


@versions
def test_no_ranges_mean_unknown_bounds(version: Version) -> None:
    snapshot = decode_battery(version, version.encode(battery(power_ranges=None, soc_bounds=None)))
    assert not snapshot.bounds.is_known
    assert math.isnan(snapshot.soc_lower_pct)
    assert snapshot.power_w == -300.0


@versions
def test_an_unrepresentable_gap_keeps_the_nearest_range_and_is_noted(version: Version) -> None:
    decoder = battery_decoder(version)
    message = version.encode(battery(power_ranges=[(1000.0, 2000.0), (3000.0, 4000.0)]))
    assert decode_battery(version, message, decoder).bounds.inclusion_upper == 2000.0
    assert decoder.notes == {Note.LOSSY_BOUNDS}
    # The same ranges again (the decoder's shortcut) are noted again.
    decode_battery(version, message, decoder)
    assert decoder.notes == {Note.LOSSY_BOUNDS}


@versions
def test_aggregated_values_count_by_their_average(version: Version) -> None:
    message = version.message_of(
        BATTERY,
        [
            version.sample_of("soc", 42.5, aggregated=True),
            version.sample_of("dc_power", -700.0, aggregated=True, ranges=[(-1000.0, 1000.0)]),
        ],
    )
    snapshot = decode_battery(version, message)
    assert snapshot.soc_pct == 42.5
    assert snapshot.power_w == -700.0
    assert snapshot.bounds == PowerBounds.symmetric(1000.0)


@versions
def test_another_components_message_is_ignored_and_counted(version: Version) -> None:
    decoder = battery_decoder(version)
    before = decode_battery(version, version.encode(battery()), decoder, at=1.0)
    foreign = version.encode(battery(component_id=BATTERY + 1, soc_pct=1.0))
    assert decoder.decode(foreign, received_at=2.0) is None
    assert decoder.notes == {Note.FOREIGN_ID}
    assert decoder.ignored == 1
    after = decode_battery(version, version.message_of(BATTERY), decoder, at=2.0)
    assert after.soc_pct == before.soc_pct == 55.0


@versions
@pytest.mark.parametrize(
    "at",
    [(MAX_SECONDS + 1, 0), (-62_135_596_801, 0), (2**63 - 1, 0), (1, 1_000_000_000), (1, -1)],
    ids=["after-9999", "before-year-1", "int64-max", "nanos-too-big", "nanos-negative"],
)
def test_a_timestamp_out_of_range_is_ignored_but_its_value_is_used(
    version: Version, at: tuple[int, int]
) -> None:
    decoder = battery_decoder(version)
    decode_battery(version, version.encode(battery(sampled_at=T0)), decoder)
    message = version.message_of(
        BATTERY, [version.sample_of("soc", 60.0, at=at)], [version.state_of([7], at=at)]
    )
    snapshot = decode_battery(version, message, decoder)
    assert snapshot.soc_pct == 60.0
    assert snapshot.sampled_at == T0  # the bad times changed nothing
    assert decoder.notes == {Note.BAD_TIMESTAMP}


@versions
def test_the_edges_of_the_timestamp_range_are_fine(version: Version) -> None:
    decoder = battery_decoder(version)
    message = version.message_of(
        BATTERY, [version.sample_of("soc", 60.0, at=(MAX_SECONDS, 999_999_999))]
    )
    assert decode_battery(version, message, decoder).sampled_at == pytest.approx(MAX_SECONDS + 1)
    assert decoder.notes == set()


@versions
def test_inverted_power_bounds_are_unknown_and_noted(version: Version) -> None:
    decoder = battery_decoder(version)
    message = version.encode(battery(power_ranges=[(-5000.0, 5000.0), (300.0, 200.0)]))
    snapshot = decode_battery(version, message, decoder)
    assert not snapshot.bounds.is_known
    assert decoder.notes == {Note.INVERTED_BOUNDS}


@versions
def test_inverted_soc_bounds_are_unknown_and_noted(version: Version) -> None:
    decoder = battery_decoder(version)
    snapshot = decode_battery(version, version.encode(battery(soc_bounds=(90.0, 10.0))), decoder)
    assert math.isnan(snapshot.soc_lower_pct)
    assert math.isnan(snapshot.soc_upper_pct)
    assert decoder.notes == {Note.INVERTED_SOC_BOUNDS}


@versions
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e38, -1e38, 2e15])
def test_implausible_values_are_unknown_and_noted(version: Version, bad: float) -> None:
    decoder = battery_decoder(version)
    message = version.encode(battery(soc_pct=bad, capacity_wh=bad, power_w=bad))
    snapshot = decode_battery(version, message, decoder)
    assert math.isnan(snapshot.soc_pct)
    assert math.isnan(snapshot.capacity_wh)
    assert math.isnan(snapshot.power_w)
    assert snapshot.bounds.is_known  # the ranges were fine
    assert decoder.notes == {Note.BAD_VALUE}


@versions
@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e38])
def test_implausible_range_ends_make_the_bounds_unknown(version: Version, bad: float) -> None:
    decoder = battery_decoder(version)
    message = version.encode(battery(power_ranges=[(-5000.0, bad)], soc_bounds=(bad, 90.0)))
    snapshot = decode_battery(version, message, decoder)
    assert not snapshot.bounds.is_known
    assert math.isnan(snapshot.soc_lower_pct)
    assert snapshot.soc_upper_pct == 90.0
    assert decoder.notes == {Note.BAD_VALUE}


@versions
def test_subnormal_and_tiny_values_are_kept(version: Version) -> None:
    tiny = 1e-45  # the smallest float32 subnormal, about 1.4e-45
    snapshot = decode_battery(version, version.encode(battery(power_w=tiny)))
    assert 0.0 < snapshot.power_w < 1e-44


@versions
def test_of_duplicate_samples_the_newest_counts(version: Version) -> None:
    t = int(T0)
    message = version.message_of(
        BATTERY,
        [
            version.sample_of("soc", 10.0, at=(t + 5, 0)),
            version.sample_of("soc", 20.0, at=(t + 9, 0)),
            version.sample_of("soc", 30.0, at=(t + 1, 0)),
            version.sample_of("capacity", 1.0, at=(t, 0)),
            version.sample_of("capacity", 2.0, at=(t, 0)),  # a tie: the last counts
            version.sample_of("dc_power", 5.0),  # no time: older than any
            version.sample_of("dc_power", 6.0, at=(t, 0)),
            version.sample_of("dc_power", 7.0),
        ],
        [version.state_of([7], at=(t + 3, 0)), version.state_of([10], at=(t + 2, 0))],
    )
    snapshot = decode_battery(version, message)
    assert snapshot.soc_pct == 20.0
    assert snapshot.capacity_wh == 2.0
    assert snapshot.power_w == 6.0
    assert snapshot.states == {StateCode.READY}
    assert snapshot.sampled_at == t + 9


@versions
def test_unknown_enum_numbers(version: Version) -> None:
    message = version.message_of(
        BATTERY,
        [version.sample_of(99_999, 5.0), version.sample_of("soc", 50.0)],
        [version.state_of([7, 9_999], [1, 8_888])],
    )
    snapshot = decode_battery(version, message)
    assert snapshot.soc_pct == 50.0
    assert snapshot.states == {StateCode.READY, StateCode.UNKNOWN}
    assert snapshot.errors == {"unknown", "unknown_8888"}


@versions
def test_an_empty_message_is_fine(version: Version) -> None:
    decoder = version.adapter.decoder(0, battery=True, max_data_age_s=10.0)
    snapshot = decoder.decode(version.message(), received_at=1.0)
    assert isinstance(snapshot, BatterySnapshot)
    assert math.isnan(snapshot.soc_pct)
    assert math.isnan(snapshot.sampled_at)
    # For any other component, an empty message carries another (the default) id.
    assert battery_decoder(version).decode(version.message(), received_at=1.0) is None


@versions
def test_a_missing_metric_keeps_its_value_only_while_fresh(version: Version) -> None:
    decoder = battery_decoder(version, max_age=10.0)
    decode_battery(version, version.encode(battery()), decoder, at=100.0)
    only_soc = version.encode(
        battery(capacity_wh=None, power_w=None, power_ranges=None, soc_pct=56.0)
    )
    fresh = decode_battery(version, only_soc, decoder, at=109.9)
    assert fresh.capacity_wh == 10_000.0
    assert fresh.bounds.is_known
    stale = decode_battery(version, only_soc, decoder, at=110.1)
    assert stale.soc_pct == 56.0
    assert math.isnan(stale.capacity_wh)
    assert not stale.bounds.is_known
    decoder.max_data_age_s = 1000.0  # a reload: the caller sets it before each message
    assert decode_battery(version, only_soc, decoder, at=110.2).capacity_wh == 10_000.0


@versions
def test_a_changed_message_is_not_mistaken_for_the_last_one(version: Version) -> None:
    # The decoder remembers the last power ranges (a shortcut); a reused, changed message
    # must still be read afresh.
    decoder = battery_decoder(version)
    message = version.encode(battery(power_ranges=[(-5000.0, 5000.0)]))
    decode_battery(version, message, decoder)
    message.metric_samples[-1].bounds[0].upper = 3000.0
    assert decode_battery(version, message, decoder).bounds.inclusion_upper == 3000.0


# --- reactive power bounds and the apparent-power limit (issue 24) ------------------------------


def inverter_decoder(version: Version, max_age: float = 10.0) -> Decoder:
    return version.adapter.decoder(INVERTER, battery=False, max_data_age_s=max_age)


def decode_inverter(
    version: Version, message: object, decoder: Decoder | None = None, at: float = 100.0
) -> InverterSnapshot:
    snapshot = (decoder or inverter_decoder(version)).decode(message, received_at=at)
    assert isinstance(snapshot, InverterSnapshot)
    return snapshot


def ac_message(
    version: Version,
    reactive: list[Range] | None = None,
    apparent: list[Range] | None = None,
) -> object:
    """An inverter's message with active power, and reactive and apparent samples if given."""
    samples = [version.sample_of("ac_power", 100.0, ranges=[(-5000.0, 5000.0)])]
    if reactive is not None:
        samples.append(version.sample_of("ac_reactive", -200.0, ranges=reactive))
    if apparent is not None:
        samples.append(version.sample_of("ac_apparent", 223.6, ranges=apparent))
    return version.message_of(INVERTER, samples)


@versions
def test_an_inverter_reports_its_reactive_bounds_and_apparent_limit(version: Version) -> None:
    decoder = inverter_decoder(version)
    message = ac_message(
        version, reactive=[(-3000.0, -100.0), (100.0, 3000.0)], apparent=[(0.0, 4500.0)]
    )
    snapshot = decode_inverter(version, message, decoder)
    assert snapshot.bounds == PowerBounds.symmetric(5000.0)
    assert snapshot.reactive_bounds == PowerBounds.symmetric(3000.0, 100.0)
    assert snapshot.apparent_limit_va == 4500.0
    assert decoder.notes == set()


@versions
def test_without_reactive_or_apparent_samples_both_are_unknown(version: Version) -> None:
    snapshot = decode_inverter(version, ac_message(version))
    assert snapshot.bounds.is_known
    assert not snapshot.reactive_bounds.is_known
    assert math.isnan(snapshot.apparent_limit_va)


@versions
def test_samples_without_bounds_leave_them_unknown(version: Version) -> None:
    snapshot = decode_inverter(version, ac_message(version, reactive=[], apparent=[]))
    assert not snapshot.reactive_bounds.is_known
    assert math.isnan(snapshot.apparent_limit_va)


# Apparent power is a magnitude: a range from 0 (or above) gives its upper end; a signed range
# around 0 the smaller of its two ends, which is what is safe either way.
APPARENT_EXAMPLES: list[tuple[list[Range], float]] = [
    ([(0.0, 5000.0)], 5000.0),
    ([(-5000.0, 5000.0)], 5000.0),
    ([(-4000.0, 6000.0)], 4000.0),
    ([(-6000.0, 4000.0)], 4000.0),
    ([(1000.0, 5000.0)], 5000.0),
    ([(-5000.0, 0.0)], 0.0),
    ([(None, 7000.0)], 7000.0),
    ([(0.0, None)], math.inf),
    ([(0.0, 3000.0), (4000.0, 5000.0)], 3000.0),  # a gap: the piece from 0 counts
]


@versions
@pytest.mark.parametrize(("ranges", "expected"), APPARENT_EXAMPLES)
def test_the_apparent_limit_of_its_ranges(
    version: Version, ranges: list[Range], expected: float
) -> None:
    assert decode_inverter(version, ac_message(version, apparent=ranges)).apparent_limit_va == (
        expected
    )


@versions
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e38, 2e15])
def test_implausible_reactive_and_apparent_ranges_are_unknown_and_noted(
    version: Version, bad: float
) -> None:
    decoder = inverter_decoder(version)
    message = ac_message(version, reactive=[(-3000.0, bad)], apparent=[(bad, 5000.0)])
    snapshot = decode_inverter(version, message, decoder)
    assert snapshot.bounds.is_known  # the active power's were fine
    assert not snapshot.reactive_bounds.is_known
    assert math.isnan(snapshot.apparent_limit_va)
    assert decoder.notes == {Note.BAD_VALUE}


@versions
def test_inverted_reactive_and_apparent_ranges_are_unknown_and_noted(version: Version) -> None:
    decoder = inverter_decoder(version)
    message = ac_message(version, reactive=[(3000.0, -3000.0)], apparent=[(5000.0, 0.0)])
    snapshot = decode_inverter(version, message, decoder)
    assert snapshot.bounds.is_known
    assert not snapshot.reactive_bounds.is_known
    assert math.isnan(snapshot.apparent_limit_va)
    assert decoder.notes == {Note.INVERTED_BOUNDS}


@versions
def test_reactive_and_apparent_bounds_keep_only_while_fresh(version: Version) -> None:
    decoder = inverter_decoder(version, max_age=10.0)
    full = ac_message(version, reactive=[(-3000.0, 3000.0)], apparent=[(0.0, 4000.0)])
    decode_inverter(version, full, decoder, at=100.0)
    fresh = decode_inverter(version, ac_message(version), decoder, at=109.9)
    assert fresh.reactive_bounds == PowerBounds.symmetric(3000.0)
    assert fresh.apparent_limit_va == 4000.0
    stale = decode_inverter(version, ac_message(version), decoder, at=110.1)
    assert not stale.reactive_bounds.is_known
    assert math.isnan(stale.apparent_limit_va)


@versions
def test_a_battery_decoder_ignores_reactive_and_apparent_samples(version: Version) -> None:
    message = version.message_of(
        BATTERY,
        [
            version.sample_of("ac_reactive", 1.0, ranges=[(5.0, -5.0)]),
            version.sample_of("ac_apparent", 1.0, ranges=[(math.nan, 5.0)]),
        ],
    )
    decoder = battery_decoder(version)
    decode_battery(version, message, decoder)
    assert decoder.notes == set()
