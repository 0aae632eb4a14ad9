"""The configuration file and its drop-ins (``conf.d/*.toml``), merged; the shipped short file."""

from __future__ import annotations

import json
import os
import pathlib
import tomllib
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributord.core import config
from distributord.core.config import Config, MicrogridConfig, load_config, parse_config
from distributord.core.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "shipped" / "distributord.toml"


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def site(tmp_path: pathlib.Path, main: str, **drop_ins: str) -> pathlib.Path:
    """``distributord.toml`` holding ``main``, and ``conf.d/NAME.toml`` for each drop-in."""
    path = write(tmp_path / "distributord.toml", main)
    for name, text in drop_ins.items():
        write(tmp_path / "conf.d" / f"{name}.toml", text)
    return path


def load_fails(path: pathlib.Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


# --- merging ------------------------------------------------------------------------------------


def test_a_drop_in_overrides_the_keys_it_sets_and_no_others(tmp_path: pathlib.Path) -> None:
    path = site(
        tmp_path,
        '[microgrid]\naddress = "grid:50051"\n[requests]\ndefault_timeout_s = 2\nqueue_size = 8\n',
        **{"50-site": "[requests]\ndefault_timeout_s = 7.5\n"},
    )
    loaded = load_config(path)
    assert loaded.requests.default_timeout_s == 7.5
    assert loaded.requests.queue_size == 8
    assert loaded.microgrid.address == "grid:50051"


def test_drop_ins_are_read_in_name_order_the_last_one_wins(tmp_path: pathlib.Path) -> None:
    path = site(
        tmp_path,
        "[setpoints]\nlifetime_s = 20\n",
        **{
            "90-late": "[setpoints]\nlifetime_s = 90\n",
            "10-early": "[setpoints]\nlifetime_s = 10\n[status]\nmax_data_age_s = 3\n",
            "50-mid": "[setpoints]\nlifetime_s = 50\n",
        },
    )
    loaded = load_config(path)
    assert loaded.setpoints.lifetime_s == 90
    assert loaded.status.max_data_age_s == 3.0
    assert config.config_files(path) == [
        str(path),
        *(str(tmp_path / "conf.d" / f"{n}.toml") for n in ("10-early", "50-mid", "90-late")),
    ]


def test_only_toml_files_are_drop_ins(tmp_path: pathlib.Path) -> None:
    # What dpkg and editors leave behind is not read, nor is a directory named like a drop-in.
    path = site(tmp_path, "", **{"50-site": "[setpoints]\nlifetime_s = 30\n"})
    for leftover in ("50-site.toml.dpkg-old", "60-x.toml.dpkg-dist", "70-y.toml~", "README"):
        write(tmp_path / "conf.d" / leftover, "not toml [[[\n")
    (tmp_path / "conf.d" / "80-dir.toml").mkdir()
    (tmp_path / "conf.d" / ".#50-site.toml").symlink_to("root@host.1234")  # an editor's lock
    assert load_config(path).setpoints.lifetime_s == 30
    assert len(config.config_files(path)) == 2


def test_no_drop_in_directory_is_fine(tmp_path: pathlib.Path) -> None:
    path = site(tmp_path, "[setpoints]\nlifetime_s = 30\n")
    assert load_config(path) == parse_config(path.read_bytes(), source="-")
    assert config.config_files(path) == [str(path)]


def test_a_key_checked_against_another_files_key_is_checked_merged(
    tmp_path: pathlib.Path,
) -> None:
    # Alone, the drop-in's min_blocking_s is above the default max_blocking_s (30).
    path = site(
        tmp_path,
        "[status]\nmax_blocking_s = 100\n",
        **{"50-site": "[status]\nmin_blocking_s = 40\n"},
    )
    assert load_config(path).status.min_blocking_s == 40.0


def test_a_drop_in_replaces_a_program_whole(tmp_path: pathlib.Path) -> None:
    path = site(
        tmp_path,
        '[programs.fcr]\npriority = 90\nusers = ["fcr"]\nmax_charge_w = 5000\n'
        "[programs.peak]\npriority = 10\n",
        **{"50-site": '[programs.fcr]\npriority = 80\nusers = ["fcr", "ops"]\n'},
    )
    programs = load_config(path).programs
    assert programs["fcr"] == config.ProgramConfig(priority=80, users=["fcr", "ops"])
    assert programs["fcr"].max_charge_w is None  # the limit is gone with the old definition
    assert programs["peak"].priority == 10  # the other program stays


# --- errors name the file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop_in", "key", "problem"),
    [
        ("[requests]\ndefault_timeout_s = 0\n", "requests.default_timeout_s", "must be a number"),
        ("[requests]\ndefault_timeouts = 1\n", "requests.default_timeouts", "unknown key"),
        ("[request]\ndefault_timeout_s = 1\n", "request", "unknown table"),
        ("requests = 1\n", "requests", "must be a table"),
        ("[programs.fcr]\npriority = 1.5\n", "programs.fcr.priority", "must be an integer"),
        ('[programs."a.b"]\npriority = "x"\n', "programs.a.b.priority", "must be an integer"),
        # Checked against the default max_blocking_s (30): the drop-in set in the table last.
        ("[status]\nmin_blocking_s = 40\n", "status.max_blocking_s", "must be at least"),
    ],
)
def test_an_error_names_the_drop_in_that_holds_the_key(
    tmp_path: pathlib.Path, drop_in: str, key: str, problem: str
) -> None:
    path = site(
        tmp_path,
        "[requests]\ndefault_timeout_s = 5\n[status]\nmax_data_age_s = 10\n",
        **{"10-fine": "[setpoints]\nlifetime_s = 30\n", "50-site": drop_in},
    )
    error = load_fails(path)
    assert error.source == str(tmp_path / "conf.d" / "50-site.toml")
    assert error.key == key
    assert error.problem.startswith(problem)
    assert str(error).startswith(f"{tmp_path}/conf.d/50-site.toml: {key}: {problem}")


def test_a_bad_value_a_later_file_overrides_is_no_error(tmp_path: pathlib.Path) -> None:
    path = site(tmp_path, "[setpoints]\nlifetime_s = 5\n", **{"50-site": "[setpoints]\n"})
    assert load_fails(path).source == str(path)  # the main file's bad value, not overridden
    write(tmp_path / "conf.d" / "60-fix.toml", "[setpoints]\nlifetime_s = 30\n")
    assert load_config(path).setpoints.lifetime_s == 30  # a later drop-in fixed it


def test_an_error_in_the_main_file_names_it(tmp_path: pathlib.Path) -> None:
    path = site(tmp_path, "[setpoints]\nlifetime_s = 5\n", **{"50-site": "[status]\n"})
    error = load_fails(path)
    assert (error.source, error.key) == (str(path), "setpoints.lifetime_s")


def test_a_key_checked_against_a_drop_ins_value_names_the_file_that_holds_it(
    tmp_path: pathlib.Path,
) -> None:
    # The key at fault is the main file's, its bound the drop-in's; the message shows both.
    path = site(
        tmp_path,
        "[status]\nmax_blocking_s = 30\n",
        **{"50-site": "[status]\nmin_blocking_s = 40\n"},
    )
    assert str(load_fails(path)) == (
        f"{path}: status.max_blocking_s: must be at least min_blocking_s (40), got 30"
    )


@pytest.mark.parametrize(
    ("data", "problem"), [(b"[setpoints\n", "not valid TOML"), (b"# \xff\n", "not UTF-8 text")]
)
def test_a_drop_in_that_is_not_toml_is_named(
    tmp_path: pathlib.Path, data: bytes, problem: str
) -> None:
    path = site(tmp_path, "")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-site.toml").write_bytes(data)
    error = load_fails(path)
    assert error.source == str(tmp_path / "conf.d" / "50-site.toml")
    assert error.problem.startswith(problem)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_drop_in_that_cannot_be_read_is_named(tmp_path: pathlib.Path) -> None:
    path = site(tmp_path, "", **{"50-site": ""})
    (tmp_path / "conf.d" / "50-site.toml").chmod(0)
    error = load_fails(path)
    assert error.source == str(tmp_path / "conf.d" / "50-site.toml")
    assert error.problem == "cannot read the configuration file: Permission denied"


def test_a_drop_in_directory_that_is_a_file_means_no_drop_ins(tmp_path: pathlib.Path) -> None:
    path = site(tmp_path, "[setpoints]\nlifetime_s = 30\n")
    write(tmp_path / "conf.d", "[setpoints]\nlifetime_s = 5\n")
    assert load_config(path).setpoints.lifetime_s == 30


# --- splitting a configuration over drop-ins changes nothing -----------------------------------

WHOLE = """
[microgrid]
address = "[fd00::7]:50051"
api = "v1alpha19"
stream_silence_s = 7.5

[control]
socket = "/run/site/ctl.sock"
allowed_uids = [1000, 1001]
max_connections = 9

[arbitration]
merge = "override"

[distribution]
exponent = 2.5
compensate_unused = false

[requests]
default_timeout_s = 3.25
queue_size = 16

[setpoints]
lifetime_s = 120

[status]
min_blocking_s = 2.0
max_blocking_s = 45.0

[metrics]
listen = "127.0.0.1:9464"

[logging]
level = "warning"

[programs.default]
priority = -5

[programs.fcr]
priority = 90
users = ["fcr", 1200]
max_charge_w = 5000.0

[programs."peak.shaving"]
priority = 20
batteries = [1001, 1002]
"""

DOC = tomllib.loads(WHOLE)
LEAVES = [(table, key) for table, keys in DOC.items() for key in keys]
"""Every key, and every program whole (a drop-in replaces a program whole)."""


def toml_file(tables: dict[str, dict[str, Any]]) -> str:
    """``tables`` as TOML (JSON's scalars and arrays are TOML's; a program a subtable)."""
    lines = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        for key, value in keys.items():
            if table == config.PROGRAMS:
                lines.append(f"[programs.{json.dumps(key)}]")
                lines.extend(f"{k} = {json.dumps(v)}" for k, v in value.items())
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    homes=st.lists(st.integers(0, 4), min_size=len(LEAVES), max_size=len(LEAVES)),
    decoys=st.lists(st.integers(0, 4), min_size=len(LEAVES), max_size=len(LEAVES)),
)
def test_the_keys_of_a_configuration_split_over_drop_ins_give_the_same_configuration(
    tmp_path_factory: pytest.TempPathFactory, homes: list[int], decoys: list[int]
) -> None:
    # File 0 is the main file, 1..4 the drop-ins. Each key lives in one file ("home"); an
    # earlier file may hold a different value for it ("decoy"), which the home file overrides.
    files: list[dict[str, dict[str, Any]]] = [{} for _ in range(5)]
    for (table, key), home, decoy in zip(LEAVES, homes, decoys, strict=True):
        files[home].setdefault(table, {})[key] = DOC[table][key]
        if decoy < home:
            files[decoy].setdefault(table, {})[key] = decoy_value(DOC[table][key])
    directory = tmp_path_factory.mktemp("split")
    path = site(
        directory,
        toml_file(files[0]),
        **{f"{n}0-part": toml_file(files[n]) for n in range(1, 5)},
    )
    assert load_config(path) == parse_config(WHOLE.encode(), source="whole")


def decoy_value(value: Any) -> Any:
    """A value the home file overrides: a wrong one (checked only merged), or another program."""
    if isinstance(value, dict):
        return {"priority": 1, "max_discharge_w": 1.0}  # replaced whole, not merged in
    return "decoy"


# --- the shipped file ---------------------------------------------------------------------------


def test_the_shipped_file_sets_the_address_only_and_else_is_the_defaults() -> None:
    text = SHIPPED.read_text()
    doc = tomllib.loads(text)
    assert list(doc) == ["microgrid"]
    assert list(doc["microgrid"]) == ["address"]
    address = doc["microgrid"]["address"]
    wanted = attrs.evolve(Config(), microgrid=MicrogridConfig(address=address))
    assert load_config(SHIPPED) == wanted
    # It points the operator at the documentation of every key, and at the drop-ins.
    assert "distributord.toml(5)" in text
    assert "/usr/share/doc/distributord/examples/distributord.toml" in text
    assert "/etc/distributord/conf.d/" in text


def test_the_example_and_the_shipped_file_are_distinct() -> None:
    # The package installs the short one as the conffile; the example documents every key.
    assert SHIPPED.name == "distributord.toml"
    assert len(SHIPPED.read_text()) < len((ROOT / "config" / "distributord.toml").read_text()) / 4
