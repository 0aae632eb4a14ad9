"""The value rules every parser shares (core/values.py)."""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.values import (
    floats32_toward_zero,
    ids_brief,
    ids_text,
    is_component_id,
    is_integer,
    is_number,
    short_number,
)


@pytest.mark.parametrize(
    ("value", "number", "integer", "component"),
    [
        (1, True, True, True),
        (0, True, True, True),
        (-1, True, True, False),
        (1.5, True, False, False),
        (float("nan"), True, False, False),
        (True, False, False, False),  # bool is an int in Python, never a number here
        (False, False, False, False),
        ("1", False, False, False),
        (None, False, False, False),
    ],
)
def test_numbers_are_numbers_and_bools_are_not(
    value: object, number: bool, integer: bool, component: bool
) -> None:
    assert is_number(value) is number
    assert is_integer(value) is integer
    assert is_component_id(value) is component


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.0, "5"), (2.5, "2.5"), (1e-7, "1e-07"), (0.1 + 0.2, "0.30000000000000004")],
)
def test_short_numbers_keep_their_value(value: float, text: str) -> None:
    assert short_number(value) == text
    assert float(short_number(value)) == value


def test_ids_are_sorted_and_a_long_list_is_written_as_runs() -> None:
    assert ids_text([3, 1, 2]) == "1, 2, 3"
    assert ids_brief(range(1, 17)) == ", ".join(map(str, range(1, 17)))
    assert ids_brief([*range(1, 10), 20, *range(30, 40)]) == "20 ids: 1-9, 20, 30-39"
    many = ids_brief(range(0, 100, 2))  # 50 runs of one
    assert many == "50 ids: 0, 2, 4, 6, 8, 10, 12, 14, … and 42 more runs"


FLOATS32 = st.floats(
    allow_nan=False, allow_infinity=False, width=64, max_value=3e38, min_value=-3e38
)


@given(st.lists(FLOATS32, max_size=8))
def test_floats32_toward_zero_are_the_nearest_float32s_no_farther_from_zero(
    values: list[float],
) -> None:
    # The exact oracle: every float32 is exactly a double, so compare as Fractions.
    converted = floats32_toward_zero(values)
    assert len(converted) == len(values)
    for value, sent in zip(values, converted, strict=True):
        assert struct.unpack("<f", struct.pack("<f", sent))[0] == sent  # a float32
        assert Fraction(abs(sent)) <= Fraction(abs(value))
        assert sent == 0.0 or math.copysign(1.0, sent) == math.copysign(1.0, value)
        # Nearest: the next float32 away from zero is beyond the value.
        (bits,) = struct.unpack("<I", struct.pack("<f", sent))
        if abs(sent) < 3.4e38:
            (further,) = struct.unpack("<f", struct.pack("<I", bits + 1))
            if sent == 0.0:
                further = math.copysign(further, value)
            assert Fraction(abs(further)) > Fraction(abs(value))


def test_floats32_toward_zero_examples() -> None:
    third, minus_third, whole, zero = floats32_toward_zero([1000.0 / 3, -1000.0 / 3, 500.0, 0.0])
    assert third < 1000.0 / 3
    assert 3 * third <= 1000.0
    assert minus_third == -third
    assert (whole, zero) == (500.0, 0.0)
    assert floats32_toward_zero([]) == []
