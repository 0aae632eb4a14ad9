"""The configuration: the documented example, every key's checks, the flags."""

from __future__ import annotations

import math
import pathlib
import re
import tomllib

import attrs
import pytest

from distributord.core import config
from distributord.core.config import (
    MAX_ID,
    MAX_PRIORITY,
    TABLES,
    ArbitrationConfig,
    Config,
    ControlConfig,
    LimitConfig,
    LoggingConfig,
    MicrogridConfig,
    ProgramConfig,
    RequestsConfig,
    SetpointsConfig,
    StatusConfig,
    differences,
    load_config,
    parse_config,
    with_overrides,
)
from distributord.core.distribution import DEFAULT_SEARCH_BUDGET_S, Limit
from distributord.core.errors import ConfigError

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent.parent / "config" / "distributord.toml"

SOURCE = "distributord.toml"


def parse(text: str) -> Config:
    return parse_config(text.encode(), source=SOURCE)


def fails(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value


# --- the example file -------------------------------------------------------------------------


def test_the_example_file_is_exactly_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config() == Config.default()


def test_the_example_file_shows_every_table_and_key() -> None:
    text = EXAMPLE.read_text()
    doc = tomllib.loads(text)
    programs = doc.pop("programs")
    shown = {f"{table}.{key}" for table, keys in doc.items() for key in keys}
    known = {f"{table}.{f.name}" for table, cls in TABLES.items() for f in attrs.fields(cls)}
    assert shown == known
    # The programs: "default" at its default, and every key of a program in the commented
    # example (the optional ones have no value a file could show); the same for the limits,
    # whose example follows the programs'.
    assert programs == {"default": {"priority": 0}}
    programs_text, _, limits_text = text.partition("#     [[limits]]")
    example = set(re.findall(r"^#     (\w+) = ", programs_text, flags=re.MULTILINE))
    assert example == {f.name for f in attrs.fields(ProgramConfig)}
    example = set(re.findall(r"^#     (\w+) = ", limits_text, flags=re.MULTILINE))
    assert example == {f.name for f in attrs.fields(LimitConfig)}


def test_tables_name_every_field_of_config() -> None:
    assert [*TABLES, "programs", "limits"] == [f.name for f in attrs.fields(Config)]
    for name, cls in TABLES.items():
        assert isinstance(getattr(Config(), name), cls)


def test_an_empty_file_is_the_defaults() -> None:
    assert parse("") == Config()
    assert parse("# nothing but a comment\n") == Config()


def test_an_empty_table_is_its_defaults() -> None:
    assert parse("[control]\n") == Config()


def test_the_file_overrides_the_defaults_key_by_key() -> None:
    config = parse(
        """
        [microgrid]
        address = "[::1]:443"
        [control]
        allowed_uids = [1000, 0]
        allowed_gids = [998]
        [requests]
        default_timeout_s = 60
        [setpoints]
        lifetime_s = 900
        [logging]
        level = "WARNING"
        """
    )
    assert config.microgrid == MicrogridConfig(address="[::1]:443")
    assert config.control == ControlConfig(allowed_uids=(1000, 0), allowed_gids=(998,))
    assert config.requests.default_timeout_s == 60.0
    assert config.setpoints == SetpointsConfig(lifetime_s=900)
    assert config.logging.level == "warning"
    assert config.status == StatusConfig()
    assert config.distribution == Config().distribution


def test_an_integer_is_accepted_for_a_number_and_stored_as_a_float() -> None:
    config = parse("[requests]\ndefault_timeout_s = 5\n[status]\nbroken_cache_ttl_s = 9000")
    assert type(config.requests.default_timeout_s) is float
    assert type(config.status.broken_cache_ttl_s) is float
    assert config == Config()


def test_the_message_names_the_file_and_the_dotted_key() -> None:
    error = fails("[requests]\ndefault_timeout_s = 0")
    assert str(error) == (
        "distributord.toml: requests.default_timeout_s: must be a number in (0, 60], got 0"
    )
    assert (error.source, error.key) == (SOURCE, "requests.default_timeout_s")


# --- every key: wrong types, out of range ---------------------------------------------------

LONG_PATH = '"/' + "x" * 107 + '"'

BAD_VALUES = [
    # (dotted key, TOML value, fragment of the problem)
    ("microgrid.address", "5", "HOST:PORT"),
    ("microgrid.api", '"v2"', "one of auto, v1alpha18, v1alpha19, v1, got 'v2'"),
    ("microgrid.api", "1", "one of auto"),
    ("microgrid.address", '"localhost"', "HOST:PORT"),
    ("microgrid.address", '":50051"', "HOST:PORT"),
    ("microgrid.address", '"localhost:0"', "1..65535"),
    ("microgrid.address", '"localhost:65536"', "1..65535"),
    ("microgrid.address", '"localhost:http"', "1..65535"),
    ("microgrid.address", '"localhost:-1"', "1..65535"),
    ("microgrid.address", '"::1:50051"', "in brackets"),
    ("microgrid.address", '"[]:50051"', "HOST:PORT"),
    ("microgrid.address", '"[::1:50051"', "HOST:PORT"),
    ("microgrid.address", '"local host:50051"', "HOST:PORT"),
    ("microgrid.stream_silence_s", "true", "got true"),
    ("microgrid.stream_silence_s", '"5"', "got '5'"),
    ("microgrid.stream_silence_s", "0", "> 0"),
    ("microgrid.stream_silence_s", "-1.5", "got -1.5"),
    ("microgrid.stream_silence_s", "nan", "got nan"),
    ("microgrid.stream_silence_s", "inf", "finite"),
    ("control.socket", "5", "path"),
    ("control.socket", '""', "path"),
    ("control.socket", LONG_PATH, "at most 107"),
    ("control.allowed_uids", "1000", "list of uids"),
    ("control.allowed_uids", '"1000"', "list of uids"),
    ("control.allowed_uids", '["1000"]', "got '1000'"),
    ("control.allowed_uids", "[true]", "got true"),
    ("control.allowed_uids", "[1000.0]", "got 1000.0"),
    ("control.allowed_uids", "[-1]", "got -1"),
    ("control.allowed_uids", f"[{MAX_ID + 1}]", f"0..{MAX_ID}"),
    ("control.allowed_gids", "998", "list of gids"),
    ("control.allowed_gids", "[false]", "got false"),
    ("control.allowed_gids", "[-1]", "got -1"),
    ("control.allowed_gids", f"[{MAX_ID + 1}]", f"0..{MAX_ID}"),
    ("control.max_connections", "64.0", "got 64.0"),
    ("control.max_connections", "true", "integer"),
    ("control.max_connections", '"64"', "integer"),
    ("control.max_connections", "0", ">= 1"),
    ("control.max_connections", "-5", ">= 1"),
    ("distribution.exponent", "true", "got true"),
    ("distribution.exponent", '"1.0"', "number"),
    ("distribution.exponent", "-0.5", "[0, 16]"),
    ("distribution.exponent", "nan", "got nan"),
    ("distribution.exponent", "inf", "[0, 16]"),
    ("distribution.exponent", "16.5", "[0, 16]"),
    ("distribution.exponent", "17", "got 17"),
    ("distribution.exponent", "1e308", "[0, 16]"),
    ("distribution.search_budget_ms", "0", "(0, 1000]"),
    ("distribution.search_budget_ms", "1001", "(0, 1000]"),
    ("distribution.search_budget_ms", "true", "got true"),
    ("distribution.compensate_unused", "1", "true or false, got 1"),
    ("distribution.compensate_unused", '"yes"', "true or false, got 'yes'"),
    ("distribution.derate_band_pct", "-1", "[0, 100], got -1"),
    ("distribution.derate_band_pct", "100.5", "[0, 100], got 100.5"),
    ("distribution.derate_band_pct", "nan", "got nan"),
    ("distribution.derate_band_pct", "inf", "[0, 100]"),
    ("distribution.derate_band_pct", "true", "got true"),
    ("distribution.derate_band_pct", '"10%"', "number"),
    ("requests.default_timeout_s", "false", "got false"),
    ("requests.default_timeout_s", '"5s"', "number"),
    ("requests.default_timeout_s", "0", "(0, 60]"),
    ("requests.default_timeout_s", "-1", "(0, 60]"),
    ("requests.default_timeout_s", "60.5", "got 60.5"),
    ("requests.default_timeout_s", "nan", "(0, 60]"),
    ("requests.queue_size", "64.0", "integer"),
    ("requests.queue_size", "true", "integer"),
    ("requests.queue_size", "0", ">= 1"),
    ("requests.drain_timeout_s", "true", "number"),
    ("requests.drain_timeout_s", "[10]", "number"),
    ("requests.drain_timeout_s", "0", "> 0"),
    ("requests.drain_timeout_s", "inf", "finite"),
    ("setpoints.lifetime_s", "60.0", "got 60.0"),
    ("setpoints.lifetime_s", "true", "integer"),
    ("setpoints.lifetime_s", '"60"', "integer"),
    ("setpoints.lifetime_s", "9", "10..900"),
    ("setpoints.lifetime_s", "901", "10..900"),
    ("status.max_data_age_s", "true", "number"),
    ("status.max_data_age_s", "0", "> 0"),
    ("status.max_data_age_s", "nan", "got nan"),
    ("status.min_blocking_s", '"1"', "number"),
    ("status.min_blocking_s", "0", "> 0"),
    ("status.min_blocking_s", "-1", "> 0"),
    ("status.max_blocking_s", "true", "number"),
    ("status.max_blocking_s", "0", "> 0"),
    ("status.max_blocking_s", "inf", "finite"),
    ("status.broken_cache_ttl_s", "false", "number"),
    ("status.broken_cache_ttl_s", "0", "> 0"),
    ("status.broken_cache_ttl_s", "-9000", "> 0"),
    ("metrics.listen", '"9464"', 'must be "off" or HOST:PORT'),
    ("metrics.listen", '""', "got ''"),
    ("metrics.listen", "true", 'must be "off"'),
    ("metrics.listen", '"127.0.0.1:0"', "port in 1..65535"),
    ("logging.level", "3", "one of debug, info, warning, error"),
    ("logging.level", "true", "one of"),
    ("logging.level", '"verbose"', "got 'verbose'"),
    ("logging.level", '"critical"', "one of"),
    ("logging.libraries", '"loud"', "one of debug, info, warning, error, got 'loud'"),
    ("logging.libraries", "0", "one of"),
    ("arbitration.merge", '"sum"', "one of add, override, got 'sum'"),
    ("arbitration.merge", '"ADD"', "one of add, override"),
    ("arbitration.merge", "1", "one of add, override, got 1"),
    ("plant.pq_priority", '"both"', "one of active, reactive, got 'both'"),
    ("plant.pq_priority", "1", "one of active, reactive, got 1"),
    ("ramp.max_w_per_s", "-1", "must be a number >= 0 and finite, got -1"),
    ("ramp.max_w_per_s", "inf", "must be a number >= 0 and finite"),
    ("ramp.max_w_per_s", '"fast"', "got 'fast'"),
    ("ramp.step_s", "0", "must be a number in [0.1, 60], got 0"),
    ("ramp.step_s", "61", "must be a number in [0.1, 60], got 61"),
]


@pytest.mark.parametrize(
    ("key", "value", "fragment"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES]
)
def test_a_bad_value_fails_naming_the_file_and_the_key(key: str, value: str, fragment: str) -> None:
    table, name = key.split(".")
    error = fails(f"[{table}]\n{name} = {value}\n")
    assert (error.source, error.key) == (SOURCE, key)
    assert str(error).startswith(f"{SOURCE}: {key}: ")
    assert fragment in error.problem


def test_every_key_has_a_bad_value_in_the_table_above() -> None:
    known = {f"{table}.{f.name}" for table, cls in TABLES.items() for f in attrs.fields(cls)}
    assert {key for key, _, _ in BAD_VALUES} == known


GOOD_VALUES = [
    ("microgrid.api", '"V1ALPHA18"', "v1alpha18"),
    ("microgrid.api", '"v1"', "v1"),
    ("microgrid.address", '"[::1]:50051"', "[::1]:50051"),
    ("metrics.listen", '"127.0.0.1:9464"', "127.0.0.1:9464"),
    ("metrics.listen", '"[::1]:9464"', "[::1]:9464"),
    ("metrics.listen", '"off"', "off"),
    ("microgrid.address", '"grid.example.com:1"', "grid.example.com:1"),
    ("microgrid.address", '"10.0.0.1:65535"', "10.0.0.1:65535"),
    ("control.socket", '"ctl.sock"', "ctl.sock"),
    ("control.socket", '"/' + "x" * 106 + '"', "/" + "x" * 106),
    ("control.allowed_uids", f"[0, {MAX_ID}]", (0, MAX_ID)),
    ("control.max_connections", "1", 1),
    ("distribution.exponent", "0", 0.0),
    ("distribution.compensate_unused", "false", False),
    ("distribution.exponent", "3.5", 3.5),
    ("distribution.exponent", "16", 16.0),
    ("distribution.search_budget_ms", "0.5", 0.5),
    ("distribution.search_budget_ms", "20", 20.0),
    ("distribution.derate_band_pct", "0", 0.0),
    ("distribution.derate_band_pct", "10", 10.0),
    ("distribution.derate_band_pct", "2.5", 2.5),
    ("distribution.derate_band_pct", "100", 100.0),
    ("requests.default_timeout_s", "60", 60.0),
    ("requests.default_timeout_s", "0.001", 0.001),
    ("requests.queue_size", "1", 1),
    ("setpoints.lifetime_s", "10", 10),
    ("setpoints.lifetime_s", "900", 900),
    ("logging.level", '"Debug"', "debug"),
    ("logging.level", '"error"', "error"),
    ("logging.libraries", '"DEBUG"', "debug"),
    ("plant.pq_priority", '"Reactive"', "reactive"),
    ("ramp.max_w_per_s", "10000", 10000.0),
    ("ramp.step_s", "0.1", 0.1),
    ("ramp.step_s", "60", 60.0),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"), GOOD_VALUES, ids=[f"{k}={v}" for k, v, _ in GOOD_VALUES]
)
def test_edge_values_are_accepted(key: str, value: str, expected: object) -> None:
    table, name = key.split(".")
    config = parse(f"[{table}]\n{name} = {value}\n")
    assert getattr(getattr(config, table), name) == expected


def test_max_blocking_below_min_blocking_fails_naming_max_blocking() -> None:
    error = fails("[status]\nmin_blocking_s = 5\nmax_blocking_s = 2.5\n")
    assert error.key == "status.max_blocking_s"
    assert error.problem == "must be at least min_blocking_s (5), got 2.5"


def test_max_blocking_equal_to_min_blocking_is_fine() -> None:
    config = parse("[status]\nmin_blocking_s = 4\nmax_blocking_s = 4\n")
    assert (config.status.min_blocking_s, config.status.max_blocking_s) == (4.0, 4.0)


def test_values_built_in_python_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"^default_timeout_s: must be a number in \(0, 60\]"):
        RequestsConfig(default_timeout_s=0)
    with pytest.raises(ConfigError, match=r"^level: must be one of"):
        LoggingConfig(level="loud")
    with pytest.raises(ConfigError, match=r"^stream_silence_s: .*got true"):
        MicrogridConfig(stream_silence_s=True)
    with pytest.raises(ConfigError, match=r"^max_blocking_s: must be at least min_blocking_s"):
        StatusConfig(min_blocking_s=5, max_blocking_s=2.5)
    with pytest.raises(ConfigError, match=r"^max_blocking_s: must be at least min_blocking_s"):
        attrs.evolve(StatusConfig(), min_blocking_s=31)  # against the other's default


# --- what else a file can get wrong ---------------------------------------------------------


def test_an_unknown_key_fails_naming_it_and_listing_the_known_ones() -> None:
    error = fails('[control]\nsockett = "/run/x.sock"\n')
    assert error.key == "control.sockett"
    assert str(error) == (
        "distributord.toml: control.sockett: unknown key; "
        "known keys: socket, allowed_uids, allowed_gids, max_connections"
    )


def test_an_unknown_table_fails_naming_it() -> None:
    error = fails("[controll]\nsocket = 'x'\n")
    assert error.key == "controll"
    assert error.problem.startswith("unknown table; known tables: microgrid, control,")


def test_an_unknown_top_level_key_fails_naming_it() -> None:
    error = fails('address = "127.0.0.1:50051"\n')
    assert error.key == "address"
    assert error.problem.startswith("unknown key")


def test_an_unknown_subtable_fails_naming_it() -> None:
    error = fails("[control.extra]\nx = 1\n")
    assert error.key == "control.extra"
    assert error.problem.startswith("unknown key")


def test_a_table_that_is_not_a_table_fails() -> None:
    error = fails('microgrid = "127.0.0.1:50051"\n')
    assert error.key == "microgrid"
    assert error.problem.startswith("must be a table ([microgrid])")


def test_an_array_of_tables_is_not_a_table() -> None:
    error = fails("[[status]]\nmax_data_age_s = 1\n")
    assert error.key == "status"


def test_invalid_toml_fails_naming_the_file() -> None:
    error = fails("[requests\nqueue_size = 1\n")
    assert error.source == SOURCE
    assert error.key == ""
    assert str(error).startswith(f"{SOURCE}: not valid TOML: ")
    assert "line 1" in str(error)


def test_a_duplicate_key_is_invalid_toml() -> None:
    assert fails("[requests]\nqueue_size = 1\nqueue_size = 2\n").problem.startswith(
        "not valid TOML"
    )


def test_text_that_is_not_utf8_fails_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(SOURCE)}: not UTF-8 text"):
        parse_config(b'[logging]\nlevel = "\xff"\n', source=SOURCE)


def test_a_missing_file_fails_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert (
        str(caught.value)
        == f"{path}: cannot read the configuration file: No such file or directory"
    )


def test_a_directory_is_not_a_readable_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file") as caught:
        load_config(tmp_path)
    assert caught.value.source == str(tmp_path)


def test_load_config_names_the_file_in_errors_inside_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[requests]\nqueue_size = 0\n")
    with pytest.raises(
        ConfigError, match=f"^{re.escape(str(path))}: requests\\.queue_size: must be an integer"
    ):
        load_config(str(path))


# --- flags ---------------------------------------------------------------------------------


def test_flags_override_the_file() -> None:
    from_file = parse('[microgrid]\naddress = "grid:1"\n[control]\nmax_connections = 3\n')
    config = with_overrides(
        from_file, microgrid="[fd00::2]:50051", socket="/tmp/ctl.sock", log_level="DEBUG"
    )
    assert config.microgrid.address == "[fd00::2]:50051"
    assert config.control.socket == "/tmp/ctl.sock"
    assert config.logging.level == "debug"
    assert config.control.max_connections == 3  # untouched by the flags


def test_no_flags_change_nothing() -> None:
    config = parse("[setpoints]\nlifetime_s = 30\n")
    assert with_overrides(config) == config


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"microgrid": "nowhere"}, "--microgrid: microgrid.address: must be HOST:PORT"),
        ({"socket": ""}, "--socket: control.socket: must be a file system path"),
        ({"log_level": "loud"}, "--log-level: logging.level: must be one of"),
    ],
)
def test_a_bad_flag_fails_naming_the_flag_and_the_key(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_overrides(Config(), **flags)
    assert str(caught.value).startswith(message)


# --- derived values -------------------------------------------------------------------------


def test_the_search_budget_is_also_given_in_seconds() -> None:
    config = parse("[distribution]\nsearch_budget_ms = 20\n")
    assert config.distribution.search_budget_s == 0.02
    assert Config().distribution.search_budget_s == DEFAULT_SEARCH_BUDGET_S


def test_differences_lists_changed_keys_in_file_order() -> None:
    old = Config()
    new = parse('[logging]\nlevel = "debug"\n[microgrid]\naddress = "grid:1"\n')
    assert differences(old, new) == ["microgrid.address", "logging.level"]
    assert differences(old, Config()) == []


def test_the_live_keys_are_declared_beside_the_settings() -> None:
    # Marked with metadata=LIVE on each field; a reload applies exactly these.
    assert {
        "control.allowed_uids",
        "control.allowed_gids",
        "control.max_connections",
        "distribution.exponent",
        "distribution.search_budget_ms",
        "distribution.compensate_unused",
        "distribution.derate_band_pct",
        "requests.default_timeout_s",
        "requests.drain_timeout_s",
        "setpoints.lifetime_s",
        "status.max_data_age_s",
        "status.min_blocking_s",
        "status.max_blocking_s",
        "status.broken_cache_ttl_s",
        "logging.level",
        "logging.libraries",
        "arbitration.merge",
        "ramp.max_w_per_s",
        "ramp.step_s",
        "plant.pq_priority",
    } == config.LIVE_KEYS


def test_a_reload_takes_the_live_keys_and_keeps_the_running_value_of_the_others() -> None:
    running = parse('[requests]\nqueue_size = 8\n[microgrid]\naddress = "grid:1"\n')
    loaded = parse(
        '[requests]\nqueue_size = 2\ndrain_timeout_s = 3\n[microgrid]\naddress = "grid:2"\n'
        "[distribution]\nexponent = 2.5\n[control]\nmax_connections = 3\n"
    )
    applied = config.reloaded(running, loaded)
    assert applied.requests.queue_size == 8  # the channel was built with 8
    assert applied.microgrid.address == "grid:1"
    assert applied.requests.drain_timeout_s == 3.0
    assert applied.distribution.exponent == 2.5
    assert applied.control.max_connections == 3


def test_after_a_reload_only_live_keys_differ_from_the_running_and_only_others_from_the_file() -> (
    None
):
    # Every field, not a hand-picked few: each table's fields are changed where the defaults
    # allow, through the same metadata that declares them live.
    running = Config()
    loaded = parse(
        '[microgrid]\naddress = "grid:9"\nstream_silence_s = 9\n'
        '[control]\nsocket = "/run/x.sock"\nallowed_uids = [7]\nallowed_gids = [8]\n'
        "max_connections = 9\n"
        '[arbitration]\nmerge = "override"\n'
        "[programs.default]\npriority = 3\n[programs.fcr]\npriority = 9\n"
        "[distribution]\nexponent = 3\nsearch_budget_ms = 9\nderate_band_pct = 9\n"
        "[requests]\nqueue_size = 9\ndefault_timeout_s = 9\ndrain_timeout_s = 9\n"
        "[setpoints]\nlifetime_s = 99\n"
        "[status]\nmax_data_age_s = 9\nmin_blocking_s = 2\nmax_blocking_s = 9\n"
        "broken_cache_ttl_s = 9\n"
        '[logging]\nlevel = "debug"\nlibraries = "info"\n'
    )
    everything = set(differences(running, loaded))
    applied = config.reloaded(running, loaded)
    live = {key for key in everything if config.is_live(key)}
    assert set(differences(running, applied)) == live
    assert set(differences(applied, loaded)) == everything - live
    assert everything - live  # the check can fail: some key needs a restart
    assert {"programs.default.priority", "programs.fcr"} <= live


# --- programs and arbitration ---------------------------------------------------------------


def test_by_default_there_is_the_default_program_at_priority_0_and_the_merge_adds() -> None:
    assert dict(Config().programs) == {"default": ProgramConfig(priority=0)}
    assert Config().arbitration == ArbitrationConfig(merge="add")
    assert parse('[arbitration]\nmerge = "override"\n').arbitration.merge == "override"


def test_programs_are_read_with_their_limits_and_the_default_is_added() -> None:
    config = parse(
        """
        [programs.fcr]
        priority = 90
        users = ["fcr", 1207]
        groups = ["fcr", 998]
        max_discharge_w = 500000
        max_charge_w = 250000.5
        batteries = [1001, 1002]
        [programs.peak-shaving]
        priority = -3
        """
    )
    assert dict(config.programs) == {
        "fcr": ProgramConfig(
            priority=90,
            users=("fcr", 1207),
            groups=("fcr", 998),
            max_discharge_w=500000.0,
            max_charge_w=250000.5,
            batteries=(1001, 1002),
        ),
        "peak-shaving": ProgramConfig(priority=-3),
        "default": ProgramConfig(),
    }
    assert type(config.programs["fcr"].max_discharge_w) is float
    assert config.programs["peak-shaving"].batteries is None  # every battery


def test_the_default_program_may_have_its_own_priority_and_limits() -> None:
    config = parse("[programs.default]\npriority = -1\nmax_charge_w = 1000\nbatteries = [7]\n")
    assert config.programs["default"] == ProgramConfig(
        priority=-1, max_charge_w=1000.0, batteries=(7,)
    )


@pytest.mark.parametrize("key", ["users", "groups"])
def test_the_default_program_names_no_users_or_groups(key: str) -> None:
    error = fails(f'[programs.default]\n{key} = ["alice"]\n')
    assert error.key == f"programs.default.{key}"
    assert "control.allowed_uids and control.allowed_gids" in error.problem


def test_the_programs_cannot_be_changed_in_place() -> None:
    programs = Config().programs
    with pytest.raises(TypeError):
        programs["fcr"] = ProgramConfig()  # type: ignore[index]
    assert hash(parse("[programs.a]\n")) == hash(parse("[programs.a]\n"))  # still hashable


BAD_PROGRAM_VALUES = [
    # (key in [programs.fcr], TOML value, fragment of the problem)
    ("priority", "1.5", f"an integer in {-MAX_PRIORITY}..{MAX_PRIORITY}, got 1.5"),
    ("priority", '"high"', "got 'high'"),
    ("priority", "true", "got true"),
    ("priority", str(MAX_PRIORITY + 1), f"got {MAX_PRIORITY + 1}"),
    ("users", '"fcr"', "must be a list of user names or uids"),
    ("users", '[""]', "must hold user names or uids (integers in 0..4294967294), got ''"),
    ("users", '[" fcr"]', "got ' fcr'"),
    ("users", "[-1]", "got -1"),
    ("users", f"[{MAX_ID + 1}]", f"got {MAX_ID + 1}"),
    ("users", "[1.0]", "got 1.0"),
    ("users", "[true]", "got true"),
    ("groups", "998", "must be a list of group names or gids"),
    ("groups", "[[998]]", "must hold group names or gids"),
    ("max_discharge_w", "0", "must be a number > 0 and finite, got 0"),
    ("max_discharge_w", "-5", "got -5"),
    ("max_discharge_w", "nan", "got nan"),
    ("max_discharge_w", "inf", "got inf"),
    ("max_discharge_w", '"5kW"', "got '5kW'"),
    ("max_discharge_w", "true", "got true"),
    ("ramp_exempt", '"yes"', "true or false, got 'yes'"),
    ("ramp_exempt", "1", "true or false, got 1"),
    ("max_charge_w", "0.0", "must be a number > 0"),
    ("batteries", "[]", "must be a non-empty list of battery ids (leave it out for every"),
    ("batteries", "1001", "got 1001"),
    ("batteries", "[-1]", "must hold battery ids (integers >= 0), got -1"),
    ("batteries", "[1001.0]", "got 1001.0"),
    ("batteries", '["1001"]', "got '1001'"),
]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    BAD_PROGRAM_VALUES,
    ids=[f"{k}={v}" for k, v, _ in BAD_PROGRAM_VALUES],
)
def test_a_bad_program_value_fails_naming_the_file_the_program_and_the_key(
    key: str, value: str, fragment: str
) -> None:
    error = fails(f"[programs.fcr]\n{key} = {value}\n")
    assert (error.source, error.key) == (SOURCE, f"programs.fcr.{key}")
    assert str(error).startswith(f"{SOURCE}: programs.fcr.{key}: ")
    assert fragment in error.problem


def test_every_program_key_has_a_bad_value_in_the_table_above() -> None:
    assert {key for key, _, _ in BAD_PROGRAM_VALUES} == {
        f.name for f in attrs.fields(ProgramConfig)
    }


def test_an_unknown_program_key_fails_naming_it_and_listing_the_known_ones() -> None:
    error = fails("[programs.fcr]\nprio = 5\n")
    assert str(error) == (
        "distributord.toml: programs.fcr.prio: unknown key; "
        "known keys: priority, users, groups, max_discharge_w, max_charge_w, batteries, ramp_exempt"
    )


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("programs = 5\n", "programs", "must be a table ([programs]), got 5"),
        ("[programs]\nfcr = 5\n", "programs.fcr", "must be a table ([programs.fcr]), got 5"),
        ("[[programs.fcr]]\npriority = 1\n", "programs.fcr", "must be a table"),
        ('[programs."a b"]\n', "programs.a b", "a program's name is 1 to 64 letters"),
        ('[programs."-x"]\n', "programs.-x", "not starting with '.' or '-'"),
        ('[programs.""]\n', "programs.", "a program's name"),
        (f'[programs."{"x" * 65}"]\n', f"programs.{'x' * 65}", "a program's name"),
        ("[programz.fcr]\n", "programz", "known tables: microgrid, control, arbitration,"),
    ],
)
def test_a_bad_programs_table_fails_naming_it(text: str, key: str, fragment: str) -> None:
    error = fails(text)
    assert (error.source, error.key) == (SOURCE, key)
    assert fragment in error.problem


def test_program_names_may_use_letters_digits_and_punctuation_within_reason() -> None:
    names = ["fcr", "peak_shaving", "trading-2", "site.operator", "A", "x" * 64, "_"]
    config = parse("".join(f'[programs."{name}"]\n' for name in names))
    assert list(config.programs) == [*names, "default"]


def test_programs_built_in_python_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"^priority: must be an integer"):
        ProgramConfig(priority=True)
    with pytest.raises(ConfigError, match=r"^max_charge_w: must be a number > 0"):
        ProgramConfig(max_charge_w=-1)
    with pytest.raises(ConfigError, match=r"^programs\.a b: a program's name"):
        Config(programs={"a b": ProgramConfig()})
    with pytest.raises(ConfigError, match=r"^programs\.x: must be a table"):
        Config(programs={"x": 5})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"^programs: must be a table of programs"):
        Config(programs=5)  # type: ignore[arg-type]


def test_differences_name_programs_added_removed_and_the_keys_changed() -> None:
    old = parse("[programs.a]\npriority = 1\n[programs.b]\n")
    new = parse(
        "[programs.a]\npriority = 2\nbatteries = [1]\n[programs.c]\n"
        '[arbitration]\nmerge = "override"\n'
    )
    assert differences(old, new) == [
        "arbitration.merge",
        "programs.a.priority",
        "programs.a.batteries",
        "programs.b",
        "programs.c",
    ]
    assert differences(new, new) == []


def test_a_reload_applies_the_programs_and_the_merge() -> None:
    # The request loop reads them at each decision (the module docstring).
    running = parse("[programs.a]\npriority = 1\n")
    loaded = parse('[programs.a]\npriority = 5\n[arbitration]\nmerge = "override"\n')
    applied = config.reloaded(running, loaded)
    assert applied.programs == loaded.programs
    assert applied.arbitration.merge == "override"
    assert config.is_live("arbitration.merge")
    assert config.is_live("programs.a.priority")
    assert config.is_live("programs.b")
    assert not config.is_live("control.socket")


# --- group limits ----------------------------------------------------------------------------


LIMITS_TEXT = """
[[limits]]
name = "grid"
grid = true
max_charge_w = 300000
max_discharge_w = 250000

[[limits]]
name = "feeder-a"
inverters = [2001, 2002, 2003]
max_charge_w = 100000

[[limits]]
name = "fuse-1"
inverters = [2001]
max_discharge_w = 0
"""


def test_there_are_no_limits_by_default() -> None:
    assert Config().limits == ()


def test_limits_are_read_in_file_order_a_maximum_left_out_is_no_limit() -> None:
    limits = parse(LIMITS_TEXT).limits
    assert limits == (
        LimitConfig(name="grid", grid=True, max_charge_w=300000.0, max_discharge_w=250000.0),
        LimitConfig(name="feeder-a", inverters=(2001, 2002, 2003), max_charge_w=100000.0),
        LimitConfig(name="fuse-1", inverters=(2001,), max_discharge_w=0.0),
    )
    feeder = limits[1].limit()
    assert feeder == Limit(
        name="feeder-a",
        inverters=frozenset({2001, 2002, 2003}),
        max_charge_w=100000.0,
        max_discharge_w=math.inf,
    )
    # A grid limit covers the inverters behind the grid connection point, given by the caller;
    # a limit over inverters ignores them.
    assert limits[0].limit([2001, 2004]).inverters == frozenset({2001, 2004})
    assert limits[2].limit([2001, 2004]).inverters == frozenset({2001})


BAD_LIMITS = [
    ('name = ""\ninverters = [1]\nmax_charge_w = 1', "limits[0].name", "must be a non-empty name"),
    ("name = 5\ninverters = [1]\nmax_charge_w = 1", "limits[0].name", "got 5"),
    ("inverters = [1]\nmax_charge_w = 1", "limits[0].name", "is required"),
    ('name = "a"\nmax_charge_w = 1', "limits[0].inverters", "give either inverters"),
    (
        'name = "a"\ngrid = true\ninverters = [1]\nmax_charge_w = 1',
        "limits[0].inverters",
        "not both",
    ),
    ('name = "a"\ninverters = []\nmax_charge_w = 1', "limits[0].inverters", "non-empty list"),
    ('name = "a"\ninverters = [0]\nmax_charge_w = 1', "limits[0].inverters", "got 0"),
    ('name = "a"\ninverters = [1.0]\nmax_charge_w = 1', "limits[0].inverters", "got 1.0"),
    ('name = "a"\ninverters = ["x"]\nmax_charge_w = 1', "limits[0].inverters", "got 'x'"),
    ('name = "a"\ninverters = 1\nmax_charge_w = 1', "limits[0].inverters", "got 1"),
    ('name = "a"\ngrid = 1\nmax_charge_w = 1', "limits[0].grid", "true or false"),
    ('name = "a"\ninverters = [1]', "limits[0].max_charge_w", "give max_charge_w"),
    ('name = "a"\ninverters = [1]\nmax_charge_w = -1', "limits[0].max_charge_w", "got -1"),
    ('name = "a"\ninverters = [1]\nmax_charge_w = inf', "limits[0].max_charge_w", "got inf"),
    ('name = "a"\ninverters = [1]\nmax_charge_w = nan', "limits[0].max_charge_w", "got nan"),
    ('name = "a"\ninverters = [1]\nmax_discharge_w = true', "limits[0].max_discharge_w", "true"),
    ('name = "a"\ninverters = [1]\nmax_discharge_w = "1"', "limits[0].max_discharge_w", "'1'"),
    ('name = "a"\ninverters = [1]\nmax_w = 1', "limits[0].max_w", "unknown key; known keys:"),
]


@pytest.mark.parametrize(("body", "key", "fragment"), BAD_LIMITS, ids=[k for _, k, _ in BAD_LIMITS])
def test_a_bad_limit_fails_naming_the_file_the_index_and_the_key(
    body: str, key: str, fragment: str
) -> None:
    # After a good limit: the index is the bad one's.
    error = fails(
        f'[[limits]]\nname = "ok"\ninverters = [9]\nmax_charge_w = 1\n[[limits]]\n{body}\n'
    )
    assert (error.source, error.key) == (SOURCE, key.replace("[0]", "[1]"))
    assert fragment in error.problem


def test_every_limit_key_has_a_bad_value_in_the_table_above() -> None:
    assert {key.rsplit(".", 1)[1] for _, key, _ in BAD_LIMITS} >= {
        f.name for f in attrs.fields(LimitConfig)
    }


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("limits = 5\n", "limits", "must be an array of tables ([[limits]]), got 5"),
        ('[limits]\nname = "a"\n', "limits", "must be an array of tables"),
        ("limits = [1, 2]\n", "limits", "must be an array of tables"),
    ],
)
def test_limits_that_are_not_an_array_of_tables_fail(text: str, key: str, fragment: str) -> None:
    error = fails(text)
    assert (error.source, error.key) == (SOURCE, key)
    assert fragment in error.problem


def test_limit_names_are_unique() -> None:
    error = fails(
        LIMITS_TEXT + '[[limits]]\nname = "feeder-a"\ninverters = [7]\nmax_charge_w = 1\n'
    )
    assert error.key == "limits[3].name"
    assert error.problem == "'feeder-a' is also the name of limits[1]; names are unique"


def test_limits_that_overlap_without_nesting_fail_naming_both_and_an_inverter() -> None:
    error = fails(
        LIMITS_TEXT + '[[limits]]\nname = "feeder-b"\ninverters = [2003, 2004]\nmax_charge_w = 1\n'
    )
    assert error.key == "limits[3].inverters"
    assert error.problem == (
        "overlaps limits[1] ('feeder-a') without one containing the other (both hold inverter"
        " 2003); limits must nest or be disjoint"
    )


def test_nested_disjoint_equal_and_grid_limits_are_fine() -> None:
    text = LIMITS_TEXT + (
        '[[limits]]\nname = "feeder-b"\ninverters = [2004, 2005]\nmax_charge_w = 1\n'
        '[[limits]]\nname = "feeder-b2"\ninverters = [2005, 2004]\nmax_charge_w = 2\n'
        '[[limits]]\nname = "grid-2"\ngrid = true\nmax_discharge_w = 1\n'
    )
    assert [limit.name for limit in parse(text).limits] == [
        "grid",
        "feeder-a",
        "fuse-1",
        "feeder-b",
        "feeder-b2",
        "grid-2",
    ]


def test_limits_built_in_python_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"^max_charge_w: must be a number >= 0"):
        LimitConfig(name="a", inverters=[1], max_charge_w=-1.0)
    with pytest.raises(ConfigError, match=r"^limits: must be an array of tables"):
        Config(limits=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^limits\[0\]: must be a table"):
        Config(limits=[5])  # type: ignore[list-item]
    a = LimitConfig(name="a", inverters=[1, 2], max_charge_w=1.0)
    b = LimitConfig(name="b", inverters=[2, 3], max_charge_w=1.0)
    with pytest.raises(ConfigError, match=r"^limits\[1\]\.inverters: overlaps limits\[0\]"):
        Config(limits=[a, b])


def test_the_limits_are_live_and_a_reload_applies_them() -> None:
    running = Config()
    loaded = parse(LIMITS_TEXT)
    assert differences(running, loaded) == ["limits"]
    assert config.is_live("limits")
    assert config.is_live("limits[2].max_charge_w")
    assert config.reloaded(running, loaded).limits == loaded.limits
    assert differences(loaded, parse(LIMITS_TEXT.replace("100000", "90000"))) == ["limits"]


def test_a_drop_in_with_limits_replaces_them_all(tmp_path: pathlib.Path) -> None:
    (tmp_path / "distributord.toml").write_text(LIMITS_TEXT)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-site.toml").write_text(
        '[[limits]]\nname = "only"\ninverters = [1]\nmax_charge_w = 5\nmax_discharge_w = -1\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "distributord.toml")
    # The error names the drop-in that set the key, and the index in the merged array.
    assert str(caught.value).startswith(
        f"{tmp_path}/conf.d/50-site.toml: limits[0].max_discharge_w: must be a number >= 0"
    )
    (tmp_path / "conf.d" / "50-site.toml").write_text(
        '[[limits]]\nname = "only"\ninverters = [1]\nmax_charge_w = 5\n'
    )
    assert [limit.name for limit in load_config(tmp_path / "distributord.toml").limits] == ["only"]
