"""``distributord``'s command line (``distributord.cli.main``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.cli import demo
from distributord.cli import main as cli
from distributord.core import config
from distributord.core.errors import ConfigError
from distributord.sim import server
from tests.core.test_config_dropins import site


def test_the_help_states_the_real_defaults() -> None:
    helps = {
        action.dest: action.help
        for sub in cli.parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
        for action in sub._actions
    }
    assert helps["port"] == f"loopback port (default {server.DEFAULT_PORT})"
    assert helps["duration"] == f"4..600 s (default {demo.DEFAULT_DURATION_S:g})"
    assert f"(default {demo.DEFAULT_BATTERIES})" in str(helps["batteries"])


def test_check_config_prints_the_effective_settings_which_read_back_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "distributord.toml"
    path.write_text(
        "[setpoints]\nlifetime_s = 30\n[programs.fcr]\npriority = 90\nmax_charge_w = 5e3\n"
        '[programs."peak.shaving"]\nbatteries = [1001]\n'
    )
    assert cli.main(["check-config", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "lifetime_s = 30\n" in printed
    assert '[programs."peak.shaving"]\n' in printed  # a dot in a name: quoted
    effective = config.parse_config(printed.encode(), source="printed")
    assert effective == config.load_config(path)
    assert effective.programs["fcr"].max_charge_w == 5000.0


def test_check_config_accepts_and_prints_a_derating_band(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "distributord.toml"
    path.write_text("[distribution]\nderate_band_pct = 10\n")
    assert cli.main(["check-config", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "derate_band_pct = 10.0\n" in printed
    assert config.parse_config(printed.encode(), source="-").distribution.derate_band_pct == 10.0


def test_check_config_without_a_file_prints_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check-config"]) == 0
    assert config.parse_config(capsys.readouterr().out.encode(), source="-") == config.Config()


def test_the_documented_example_reads_back_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "distributord.toml"
    assert cli.main(["check-config", "--config", str(example)]) == 0
    printed = capsys.readouterr().out
    assert config.parse_config(printed.encode(), source="-") == config.load_config(example)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[setpoints]\nlifetime_s = 5\n", "setpoints.lifetime_s"),
        (
            "[distribution]\nderate_band_pct = 101\n",
            "distribution.derate_band_pct: must be a number in [0, 100], got 101",
        ),
        ("[setpoint]\nlifetime_s = 30\n", "setpoint"),
        ("[setpoints\n", "not valid TOML"),
    ],
)
def test_check_config_rejects_a_bad_file_naming_the_key_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert cli.main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"distributord: {path}: ")
    assert named in captured.err
    assert captured.err.count("\n") == 1


def test_check_config_names_a_file_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    assert cli.main(["check-config", "--config", str(missing)]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err


def test_check_config_prints_the_file_and_its_drop_ins_merged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(
        tmp_path,
        '[microgrid]\naddress = "grid:50051"\n[requests]\ndefault_timeout_s = 2\n',
        **{"50-site": "[requests]\ndefault_timeout_s = 7.5\n"},
    )
    (tmp_path / "conf.d" / "50-site.toml.dpkg-old").write_text("not read [[\n")
    assert cli.main(["check-config", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    effective = config.parse_config(printed.encode(), source="printed")
    assert effective.requests.default_timeout_s == 7.5
    assert effective.microgrid.address == "grid:50051"
    assert effective == config.load_config(path)
    # The files read, in order, as comments before the settings.
    comments = [line for line in printed.splitlines() if line.startswith("#")]
    assert comments[1:] == [f"#   {path}", f"#   {tmp_path}/conf.d/50-site.toml"]


def test_check_config_names_the_drop_in_that_holds_a_bad_key_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(
        tmp_path,
        "[requests]\ndefault_timeout_s = 2\n",
        **{"50-site": "[requests]\ndefault_timeout_s = 0\n"},
    )
    assert cli.main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"distributord: {tmp_path}/conf.d/50-site.toml: requests.default_timeout_s: must be a"
        " number in (0, 60], got 0\n"
    )


@given(
    # Mostly names the configuration takes (dots among them: quoted keys), some it refuses.
    name=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,11}", fullmatch=True) | st.text(max_size=4),
    priority=st.integers(-1000, 1000),
    users=st.lists(st.text(min_size=1, max_size=8) | st.integers(0, 2**32), max_size=2),
    max_charge_w=st.none() | st.floats(min_value=1.0, max_value=1e9),
    batteries=st.none() | st.lists(st.integers(1, 2**32), min_size=1, max_size=3, unique=True),
    # Group limits: names with quotes and control characters, over inverters or the grid,
    # nested, disjoint or overlapping (refused), maxima from 0 up or left out.
    limits=st.lists(
        st.builds(
            dict,
            name=st.text(max_size=6),
            inverters=st.none() | st.lists(st.integers(1, 6), min_size=1, max_size=4),
            max_charge_w=st.none() | st.floats(min_value=0.0, max_value=1e9),
            max_discharge_w=st.none() | st.floats(min_value=0.0, max_value=1e9),
        ),
        max_size=4,
    ),
)
def test_any_program_reads_back_the_same(
    name: str,
    priority: int,
    users: list[str | int],
    max_charge_w: float | None,
    batteries: list[int] | None,
    limits: list[dict[str, Any]],
) -> None:
    try:
        program = config.ProgramConfig(
            priority=priority, users=users, max_charge_w=max_charge_w, batteries=batteries
        )
        groups = [config.LimitConfig(**limit, grid=limit["inverters"] is None) for limit in limits]
        wanted = config.Config(programs={name: program}, limits=groups)
    except ConfigError:
        return  # a name, a principal or a limit the configuration refuses: nothing to print
    printed = config.to_toml(wanted)
    assert config.parse_config(printed.encode(), source="-") == wanted


def test_the_units_reload_checks_the_file_the_daemon_runs_on_before_signalling() -> None:
    root = Path(__file__).resolve().parents[2]
    unit = root / "systemd" / "distributord.service"
    assert (root / "debian" / "distributord.service").resolve() == unit.resolve()  # one file
    lines = unit.read_text().splitlines()
    start = next(line for line in lines if line.startswith("ExecStart="))
    reloads = [line.removeprefix("ExecReload=") for line in lines if line.startswith("ExecReload=")]
    assert len(reloads) == 2
    check, signal = reloads
    binary, *argv = check.split()
    assert binary == start.removeprefix("ExecStart=").split()[0]
    args = cli.parser().parse_args(argv)
    assert args.command == "check-config"
    assert args.config == start.split("--config ")[1].split()[0]
    assert signal == "/bin/kill -HUP $MAINPID"
