"""The manual pages and completions: complete, valid roff, and true to the code they come from."""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import distributord.core
from distributord.cli import main as daemon_cli
from distributord.cli import manpages
from distributord.cli.ctl import ExitCode
from distributord.cli.ctl import args as ctl_args
from distributord.core import config, methods, protocol
from distributord.core.arbitration import wire

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    "distributord.8": manpages.daemon_page,
    "distributorctl.1": manpages.ctl_page,
    "distributord.toml.5": manpages.config_page,
    "distributord-protocol.7": manpages.protocol_page,
}


def _plain(page: str) -> str:
    """The page's text with roff's escapes taken out, for searching."""
    text = page.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
    return re.sub(r"\\f[BIRP]", "", text)


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """Every action of ``parser`` and its subcommands, with the subcommand's name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name, a) for a in sub._actions)
        else:
            yield "", action


# --- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_without_warnings(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(PAGES[name](), encoding="utf-8")
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("name", PAGES)
def test_page_structure(name: str) -> None:
    page = PAGES[name]()
    title, section = name.rsplit(".", 1)
    lines = page.splitlines()
    th = next(line for line in lines if line.startswith(".TH "))
    assert th.split()[1:3] == [title.upper(), section]
    for heading in ("NAME", "SEE ALSO"):
        assert f".SH {heading}" in lines
    # No text line may start with a request character unless it is a request or escaped.
    for line in lines:
        if line.startswith((".", "'")):
            assert re.match(r"\.(\\\"|[A-Z]{1,2}\b|br\b|nf\b|fi\b)", line), line


def test_main_writes_every_page_and_completion(tmp_path: Path) -> None:
    assert manpages.main(["--out", str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(manpages.outputs())
    assert set(manpages.PAGES) <= set(written)


# --- distributord(8), distributorctl(1) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "parser"),
    [(manpages.daemon_page, daemon_cli.parser), (manpages.ctl_page, ctl_args.parser)],
)
def test_every_subcommand_and_flag_with_its_help(page: Any, parser: Any) -> None:
    text = _plain(page())
    top = parser()
    global_flags = {flag for action in top._actions for flag in action.option_strings}
    for command, action in _actions(top):
        if isinstance(action, argparse._HelpAction):
            continue
        if command and set(action.option_strings) & global_flags:
            continue  # distributorctl's global flags, also accepted after the command
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        assert f"{command}\n" in text or command == ""
        for flag in action.option_strings:
            assert flag in text
        assert " ".join(action.help.split()) in " ".join(text.split())


def test_a_flag_without_help_is_refused() -> None:
    parser = argparse.ArgumentParser(prog="x")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("go", help="go").add_argument("--fast", action="store_true")
    with pytest.raises(ValueError, match="--fast"):
        manpages._commands(parser)


def parser_epilog() -> str:
    epilog = ctl_args.parser().epilog
    assert epilog is not None
    return epilog


def test_ctl_exit_statuses_are_the_exit_codes() -> None:
    assert set(manpages.exit_statuses(parser_epilog())) == {int(code) for code in ExitCode}
    section = _plain(manpages.ctl_page()).split(".SH EXIT STATUS")[1].split(".SH")[0]
    for code in ExitCode:
        assert f"\n{int(code)}\n" in section


# --- distributord.toml(5) and the example file ----------------------------------------------------


def _keys() -> Iterator[tuple[str, attrs.Attribute[Any]]]:
    for table, cls in config.TABLES.items():
        for field in attrs.fields(cls):
            yield f"{table}.{field.name}", field
    for field in attrs.fields(config.ProgramConfig):
        yield f"{config.PROGRAMS}.NAME.{field.name}", field


def test_config_page_has_every_key_default_and_liveness() -> None:
    page = _plain(manpages.config_page())
    sections = dict(re.findall(r"\.SH \[([^]]+)\]\n(.*?)(?=\n\.SH )", page, flags=re.S))
    for key, field in _keys():
        table, name = key.rsplit(".", 1)
        entry = sections[table].split(f".TP\n{name}\n", 1)[1].split(".TP", 1)[0]
        if field.default is not None:
            assert f"Default: {config._toml_value(field.default)}." in entry, key
        assert ("Live." if config.is_live(key) else "Needs a restart.") in entry, key
        assert "Value: " in entry, key


def test_every_key_is_described_in_its_table_docstring() -> None:
    for _, _, keys in config.table_docs():
        for key in keys:
            assert key.meaning, key
            assert key.accepts, key


def test_example_file_has_every_key_with_its_default() -> None:
    text = (ROOT / "config" / "distributord.toml").read_text(encoding="utf-8")
    example = tomllib.loads(text)
    defaults = config.Config()
    for table, cls in config.TABLES.items():
        for field in attrs.fields(cls):
            assert field.name in example.get(table, {}), f"{table}.{field.name} not in the example"
            line = f"{field.name} = {config._toml_value(example[table][field.name])}"
            parsed = config.parse_config(f"[{table}]\n{line}\n".encode(), source="example")
            assert getattr(getattr(parsed, table), field.name) == getattr(
                getattr(defaults, table), field.name
            ), f"{table}.{field.name}: the example's value is not the default"
    # The programs' keys are shown in a commented-out table.
    for field in attrs.fields(config.ProgramConfig):
        assert re.search(rf"^#\s+{field.name} = ", text, flags=re.M), field.name


# --- distributord-protocol(7) ---------------------------------------------------------------------


def test_methods_are_the_served_ones() -> None:
    assert [m.name for m in methods.METHODS] == sorted(
        protocol.METHODS, key=[m.name for m in methods.METHODS].index
    )
    assert {m.name for m in methods.METHODS} == protocol.METHODS


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("set_power", protocol.SET_POWER_FIELDS),
        ("hello", wire.HELLO_FIELDS),
        ("propose", wire.PROPOSE_FIELDS),
        ("withdraw", wire.WITHDRAW_FIELDS),
        ("subscribe_bounds", wire.SUBSCRIBE_BOUNDS_FIELDS),
        ("ping", frozenset()),
        ("get_status", frozenset()),
        ("subscribe_status", frozenset()),
        ("list_components", frozenset()),
        ("get_proposals", frozenset()),
    ],
)
def test_method_params_are_what_the_parsers_accept(method: str, fields: frozenset[str]) -> None:
    documented = next(m for m in methods.METHODS if m.name == method)
    assert {p.name for p in documented.params} == fields


def test_every_error_code_is_documented() -> None:
    assert set(methods.ERRORS) == set(protocol.Code)
    page = _plain(manpages.protocol_page())
    for code in protocol.Code:
        assert f"\n{int(code)}\n{code.name.lower()}: " in page


def _reason_enums() -> set[type[enum.Enum]]:
    """Every enum in the core whose values the daemon sends as reasons, found by name."""
    found: set[type[enum.Enum]] = set()
    for module in pkgutil.walk_packages(distributord.core.__path__, "distributord.core."):
        for value in vars(importlib.import_module(module.name)).values():
            if (
                isinstance(value, type)
                and issubclass(value, enum.Enum)
                and value.__module__ == module.name
                and re.fullmatch(r"Reason|Allotment|Why|GrantChange", value.__name__)
            ):
                found.add(value)
    return found


def test_every_reason_enum_is_in_the_page() -> None:
    documented = {values for group in methods.REASONS for values in group.values}
    assert _reason_enums() == documented
    page = _plain(manpages.protocol_page())
    for values in documented:
        docs = manpages.member_docs(values)
        for member in values:
            assert f".TP\n{member.value}\n" in page, member
            assert docs.get(str(member.value)), f"{member!r} has no docstring"


def test_every_method_and_notification_is_in_the_page() -> None:
    page = _plain(manpages.protocol_page())
    for method in methods.METHODS:
        assert f".SS {method.name}\n" in page
    for notification in methods.NOTIFICATIONS:
        assert f".SS {notification.name}\n" in page


# --- completion -----------------------------------------------------------------------------------


def _complete(script: str, prog: str, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words`` (the command line typed so far)."""
    line = " ".join([prog, *words])
    program = f"""
{script}
COMP_WORDS=({" ".join(f"'{w}'" for w in [prog, *words])})
COMP_CWORD={len(words)}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
_{prog.replace("-", "_")}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        check=True,
    )
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.parametrize(
    ("prog", "parser"), [("distributord", daemon_cli.parser), ("distributorctl", ctl_args.parser)]
)
def test_bash_completion_parses(prog: str, parser: Any, tmp_path: Path) -> None:
    path = tmp_path / prog
    path.write_text(manpages.bash_completion(prog, parser()), encoding="utf-8")
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize(
    ("prog", "parser"), [("distributord", daemon_cli.parser), ("distributorctl", ctl_args.parser)]
)
def test_zsh_completion_parses(prog: str, parser: Any, tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    path = tmp_path / f"_{prog}"
    path.write_text(manpages.zsh_completion(prog, parser()), encoding="utf-8")
    subprocess.run(["zsh", "-n", str(path)], check=True)


@pytest.mark.parametrize(
    ("prog", "words", "expected"),
    [
        ("distributord", [""], ["run", "check-config", "sim", "demo"]),
        ("distributord", ["c"], ["check-config"]),
        (
            "distributord",
            ["run", "--"],
            ["--help", "--config", "--microgrid", "--socket", "--log-level"],
        ),
        ("distributord", ["run", "--log-level", ""], ["debug", "info", "warning", "error"]),
        ("distributord", ["run", "--log-level", "w"], ["warning"]),
        ("distributord", ["sim", "--api", "v1a"], ["v1alpha18", "v1alpha19"]),
        ("distributord", ["run", "--microgrid", ""], []),
        ("distributorctl", ["--socket", "/x", "set"], ["set-power"]),
        (
            "distributorctl",
            ["--json", ""],
            [
                "ping",
                "status",
                "components",
                "watch",
                "proposals",
                "set-power",
                "propose",
                "withdraw",
            ],
        ),
        ("distributorctl", ["set-power", "--no"], ["--no-adjust"]),
        ("distributorctl", ["propose", "--t"], ["--ttl"]),
    ],
)
def test_bash_completion_offers(prog: str, words: list[str], expected: list[str]) -> None:
    parser = daemon_cli.parser() if prog == "distributord" else ctl_args.parser()
    offered = _complete(manpages.bash_completion(prog, parser), prog, words)
    assert sorted(offered) == sorted(expected)


def test_bash_completion_offers_files_for_file_flags(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("", encoding="utf-8")
    script = manpages.bash_completion("distributord", daemon_cli.parser())
    for words in (["run", "--config"], ["sim", "--scenario"], ["run", "--socket"]):
        offered = _complete(script, "distributord", [*words, f"{tmp_path}/si"])
        assert offered == [f"{tmp_path}/site.toml"], words
