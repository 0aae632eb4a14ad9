"""Power in human units: the grammar ``distributorctl`` accepts and the way it prints watts."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from distributord.core.errors import PowerSyntaxError
from distributord.core.units import format_power, parse_power


@pytest.mark.parametrize(
    ("text", "watts"),
    [
        ("-5kW", -5000.0),
        ("1.2MW", 1_200_000.0),
        ("300W", 300.0),
        ("-250 W", -250.0),
        ("0", 0.0),
        ("1.5e3W", 1500.0),
        ("-250", -250.0),
        ("+2kW", 2000.0),
        (".5kW", 500.0),
        ("5.kW", 5000.0),
        ("2E-3MW", 2000.0),
        ("  7 kw  ", 7000.0),
        ("3KW", 3000.0),
        ("3Kw", 3000.0),
        ("1w", 1.0),
        # Scaled in decimal: exactly 1100, not 1100.0000000000002.
        ("1.1kW", 1100.0),
        ("0.1kW", 100.0),
        ("1e-400W", 0.0),
    ],
)
def test_parse_power_accepts_the_grammar(text: str, watts: float) -> None:
    assert parse_power(text) == watts


@pytest.mark.parametrize("text", ["-0", "-0kW", "-0.0 MW", "-1e-400W"])
def test_parse_power_never_returns_minus_zero(text: str) -> None:
    watts = parse_power(text)
    assert watts == 0.0
    assert math.copysign(1.0, watts) == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no power given"),
        ("   ", "no power given"),
        ("kW", "is not a power"),
        ("5 k W", "is not a power"),
        ("--5kW", "is not a power"),
        ("5kW!", "is not a power"),
        ("1,5kW", "is not a power"),
        ("1_000W", "is not a power"),
        ("0x10W", "is not a power"),
        ("inf", "is not a power"),
        ("nan W", "is not a power"),
        ("-inf kW", "is not a power"),
        ("e3W", "is not a power"),
        ("5e", "unknown unit 'e'"),
        ("٣W", "is not a power"),  # Arabic-Indic three: digits are ASCII only
        ("5kWh", "unknown unit 'kWh'"),
        ("5GW", "unknown unit 'GW'"),
        ("5k", "unknown unit 'k'"),
        ("5A", "unknown unit 'A'"),
        # mW is an SI milliwatt; it used to be read as a megawatt. MW only, exactly.
        ("1mW", "unit 'mW' is ambiguous: write MW"),
        ("1mw", "unit 'mw' is ambiguous: write MW"),
        ("-2 Mw", "unit 'Mw' is ambiguous: write MW"),
        ("1e400W", "too large"),
        ("1e999999999MW", "too large"),
    ],
)
def test_parse_power_rejects_everything_else(text: str, message: str) -> None:
    with pytest.raises(PowerSyntaxError, match=message):
        parse_power(text)


def test_parse_power_errors_are_value_errors_that_say_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"W, kW or MW, e\.g\. -5kW"):
        parse_power("five kilowatts")


@pytest.mark.parametrize(
    ("watts", "text"),
    [
        (0.0, "0.00 W"),
        (-0.0, "0.00 W"),
        (-0.001, "0.00 W"),
        (300.0, "300.00 W"),
        (-250.0, "-250.00 W"),
        (999.99, "999.99 W"),
        (999.996, "1.00 kW"),  # 1000.00 W would need a fourth integer digit
        (-5000.0, "-5.00 kW"),
        (1234.5, "1.23 kW"),
        (999_990.0, "999.99 kW"),
        (1_200_000.0, "1.20 MW"),
        (-3.5e9, "-3500.00 MW"),
        (math.nan, "nan W"),
        (-math.inf, "-inf W"),
    ],
)
def test_format_power_picks_a_unit(watts: float, text: str) -> None:
    assert format_power(watts) == text


@pytest.mark.parametrize(
    ("watts", "unit", "text"),
    [
        (-2500.0, "kW", "-2.50 kW"),
        (300.0, "kW", "0.30 kW"),
        (-1.0, "kW", "0.00 kW"),
        (1_200_000.0, "kW", "1200.00 kW"),
        (1_200_000.0, "W", "1200000.00 W"),
        (5000.0, "MW", "0.01 MW"),
    ],
)
def test_format_power_in_a_fixed_unit(watts: float, unit: str, text: str) -> None:
    assert format_power(watts, unit) == text


def test_format_power_refuses_an_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unit must be one of W, kW, MW"):
        format_power(1.0, "kw")


@pytest.mark.parametrize("text", ["-5kW", "1.2MW", "300W", "-250 W", "0", "1.5e3W"])
def test_formatted_power_parses_back(text: str) -> None:
    watts = parse_power(text)
    assert parse_power(format_power(watts)) == watts


def test_units_is_pure_standard_library() -> None:
    code = (
        "import sys\n"
        "import distributord.core.units\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'trio', 'grpc', 'attrs'})\n"
        "print(','.join(leaked))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
