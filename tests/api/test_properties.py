"""Whatever a server sends, a decoder never raises and never lets a bad value through.

For each version, hypothesis builds that version's raw telemetry messages field by field
(any ids, metric numbers known and unknown, floats including nan, infinities, 1e38 and
subnormals, timestamps far outside what a ``Timestamp`` may hold, inverted or half-open
ranges, simple or aggregated values, unknown state and error numbers), and also parses
arbitrary and mutated bytes, and feeds a sequence of them to one decoder.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from distributord.api.adapter import Note
from distributord.core.model import PLAUSIBLE_LIMIT, BatterySnapshot, InverterSnapshot
from tests.api.versions import VERSIONS, Version, same

OWN_ID = 1001
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
INT32 = st.integers(-(2**31), 2**31 - 1)

FLOATS = st.one_of(
    st.floats(width=32),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e38, -1e38, 3.4e38, 1e-45, -1e-45, 0.0, -0.0, 1e15, 2e15]
    ),
)
"""What a 32-bit float field can hold, with the troublesome values drawn often."""

TIMES = st.one_of(
    st.none(),
    st.tuples(st.integers(MIN_SECONDS, MAX_SECONDS), st.integers(0, 999_999_999)),
    st.tuples(st.integers(-(2**63), 2**63 - 1), INT32),
    st.tuples(st.sampled_from([MIN_SECONDS - 1, MAX_SECONDS + 1]), st.integers(0, 999_999_999)),
)
"""Raw ``(seconds, nanos)``: none, valid, anything, or just outside the range."""

RANGES = st.lists(st.tuples(st.none() | FLOATS, st.none() | FLOATS), max_size=2)


CODES = st.lists(st.integers(0, 12) | INT32, max_size=2)
IDS = st.sampled_from([OWN_ID, OWN_ID, OWN_ID + 1, 0]) | st.integers(0, 2**64 - 1)
CHANGES = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4)


def _changed(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    changed = bytearray(data)
    for index, byte in changes:
        if changed:
            changed[index % len(changed)] = byte
    return bytes(changed)


def _strategy(version: Version) -> st.SearchStrategy[Any]:
    """Raw messages of ``version``: built field by field, or parsed from (changed) bytes."""
    sample = st.builds(
        version.sample_of,
        st.sampled_from(sorted(version.metrics.values())) | INT32,
        st.none() | FLOATS,
        at=TIMES,
        ranges=RANGES,
        aggregated=st.booleans(),
    )
    state = st.builds(version.state_of, CODES, CODES, at=TIMES)
    structured = st.builds(
        version.message_of, IDS, st.lists(sample, max_size=3), st.lists(state, max_size=2)
    )

    def parse(data: bytes) -> Any:
        try:
            return version.message.FromString(data)
        except DecodeError:
            return version.message()

    changed = st.builds(_changed, structured.map(lambda m: m.SerializeToString()), CHANGES)
    return structured | (changed | st.binary(max_size=120)).map(parse)


# Built once per version: building strategies inside a draw costs more than drawing from them.
MESSAGES = {version.name: _strategy(version) for version in VERSIONS}


def assert_valid(snapshot: object, battery: bool) -> None:
    if battery:
        assert isinstance(snapshot, BatterySnapshot)
        values = [snapshot.soc_pct, snapshot.capacity_wh, snapshot.power_w]
        bounds = [snapshot.soc_lower_pct, snapshot.soc_upper_pct]
        assert not snapshot.soc_lower_pct > snapshot.soc_upper_pct
    else:
        assert isinstance(snapshot, InverterSnapshot)
        values = [snapshot.active_power_w]
        bounds = []
    assert snapshot.component_id == OWN_ID
    for value in values + bounds:
        assert math.isnan(value) or abs(value) <= PLAUSIBLE_LIMIT
    every_bounds = [snapshot.bounds]
    if isinstance(snapshot, InverterSnapshot):
        every_bounds.append(snapshot.reactive_bounds)
    for power in every_bounds:
        for bound in (
            power.inclusion_lower,
            power.exclusion_lower,
            power.exclusion_upper,
            power.inclusion_upper,
        ):
            # Known bounds are plausible; only an absent (open) range end reads as infinite.
            assert math.isnan(bound) or math.isinf(bound) or abs(bound) <= PLAUSIBLE_LIMIT
    if isinstance(snapshot, InverterSnapshot):
        limit = snapshot.apparent_limit_va
        assert math.isnan(limit) or limit == math.inf or 0.0 <= limit <= PLAUSIBLE_LIMIT
    assert math.isnan(snapshot.sampled_at) or (
        MIN_SECONDS <= snapshot.sampled_at <= MAX_SECONDS + 1
    )


SCENARIOS = {
    name: st.tuples(
        st.booleans(),
        st.floats(0.0, 30.0),
        st.lists(st.tuples(st.floats(0.0, 20.0), messages), min_size=1, max_size=4),
    )
    for name, messages in MESSAGES.items()
}
"""Battery or inverter, ``max_data_age_s``, and messages with the time since the last."""


@pytest.mark.parametrize("version", VERSIONS, ids=repr)
@given(data=st.data())
def test_decoding_never_raises_and_ignores_other_components(
    version: Version, data: st.DataObject
) -> None:
    battery, max_age, stream = data.draw(SCENARIOS[version.name])
    decoder = version.adapter.decoder(OWN_ID, battery=battery, max_data_age_s=max_age)
    # A twin that never sees another component's messages: the outputs must not differ.
    twin = version.adapter.decoder(OWN_ID, battery=battery, max_data_age_s=max_age)
    now = 0.0
    foreign = 0
    for elapsed, message in stream:
        now += elapsed
        snapshot = decoder.decode(message, received_at=now)
        own = getattr(message, version.id_field) == OWN_ID
        if not own:
            foreign += 1
            assert snapshot is None
            assert decoder.notes == {Note.FOREIGN_ID}
            continue
        assert_valid(snapshot, battery)
        assert same(snapshot, twin.decode(message, received_at=now))
        assert decoder.notes == twin.notes
    assert decoder.ignored == foreign
    assert twin.ignored == 0
