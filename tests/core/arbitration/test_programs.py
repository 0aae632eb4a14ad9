"""Which program a peer may act as, and what ``hello`` answers (``spec/arbitration.md``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from distributord.core.arbitration.programs import (
    Acting,
    Limits,
    NotAllowed,
    acting_as,
    hello,
    may_act_as,
)
from distributord.core.config import Config, parse_config

CONFIG = parse_config(
    b"""
    [programs.fcr]
    priority = 90
    users = ["fcr", 1207]
    groups = ["grid", 998]
    max_discharge_w = 500000
    max_charge_w = 250000
    batteries = [1002, 1001]

    [programs.trading]
    priority = 10

    [programs.default]
    priority = -1
    """,
    source="test.toml",
)

NOBODY = {"uid": 3000, "user_name": "alice", "gids": (3000, 100), "group_names": ("alice",)}
"""A peer the socket let in that is listed for no program."""


@pytest.mark.parametrize(
    ("program", "peer", "allowed"),
    [
        ("fcr", {"uid": 3000, "user_name": "fcr"}, True),  # its user name
        ("fcr", {"uid": 1207, "user_name": None}, True),  # its uid, with no name
        ("fcr", {"uid": 1207, "user_name": "someone"}, True),
        ("fcr", {"gids": (3000, 998)}, True),  # a supplementary gid
        ("fcr", {"gids": (998,)}, True),  # the primary gid
        ("fcr", {"group_names": ("alice", "grid")}, True),  # a group's name
        ("fcr", {"uid": 0, "user_name": "root"}, True),  # root may act as any
        ("trading", {"uid": 0, "user_name": None}, True),
        ("fcr", {}, False),
        ("fcr", {"user_name": "1207"}, False),  # a name is not a uid
        ("fcr", {"uid": 998}, False),  # a uid is not a gid
        ("fcr", {"gids": (1207,)}, False),
        ("fcr", {"group_names": ("fcr",)}, False),  # a user name is not a group name
        ("trading", {"uid": 3000, "user_name": "trading"}, False),  # nobody listed: root only
        ("default", {}, True),  # any peer the socket let in
        ("Fcr", {"uid": 0}, False),  # not configured: not even root
        ("peak", {"uid": 0}, False),
    ],
)
def test_who_may_act_as_a_program(program: str, peer: dict[str, object], allowed: bool) -> None:
    credentials = {**NOBODY, **peer}
    assert may_act_as(program, **credentials, config=CONFIG) is allowed  # type: ignore[arg-type]


def test_hello_answers_the_program_its_priority_and_its_limits() -> None:
    acting = hello("fcr", uid=3000, user_name="fcr", gids=(), group_names=(), config=CONFIG)
    assert acting == Acting(
        program="fcr",
        priority=90,
        limits=Limits(
            max_discharge_w=500000.0, max_charge_w=250000.0, batteries=frozenset({1001, 1002})
        ),
    )
    assert acting.to_json() == {
        "program": "fcr",
        "priority": 90,
        "limits": {
            "max_discharge_w": 500000.0,
            "max_charge_w": 250000.0,
            "batteries": [1001, 1002],
        },
    }


def test_a_program_without_limits_says_null_for_each() -> None:
    acting = hello("trading", uid=0, user_name="root", gids=(0,), group_names=(), config=CONFIG)
    assert isinstance(acting, Acting)
    assert acting.to_json() == {
        "program": "trading",
        "priority": 10,
        "limits": {"max_discharge_w": None, "max_charge_w": None, "batteries": None},
    }
    assert json.loads(json.dumps(acting.to_json())) == acting.to_json()  # JSON as it is


def test_hello_refuses_a_peer_not_listed_saying_who_and_which_program() -> None:
    assert hello("fcr", **NOBODY, config=CONFIG) == NotAllowed(  # type: ignore[arg-type]
        message=(
            "not authorised: uid 3000 (alice) may not act as program 'fcr' (neither its user nor"
            " any of its groups is listed for it)"
        )
    )
    refused = hello("fcr", uid=3001, user_name=None, gids=(), group_names=(), config=CONFIG)
    assert isinstance(refused, NotAllowed)
    assert refused.message.startswith("not authorised: uid 3001 may not act as program 'fcr'")


def test_hello_refuses_a_program_not_configured_naming_those_that_are() -> None:
    assert hello("peak", uid=0, user_name="root", gids=(), group_names=(), config=CONFIG) == (
        NotAllowed(message="not authorised: no program 'peak'; programs: default, fcr, trading")
    )


def test_the_default_program_always_exists_at_priority_0_unless_configured() -> None:
    assert acting_as("default", Config()) == Acting(program="default", priority=0, limits=Limits())
    assert acting_as("default", CONFIG) == Acting(program="default", priority=-1, limits=Limits())
    assert acting_as("fcr", Config()) is None
    assert hello("default", **NOBODY, config=Config()) == acting_as(  # type: ignore[arg-type]
        "default", Config()
    )


def test_the_batteries_outside_a_program_s_limit() -> None:
    limits = acting_as("fcr", CONFIG)
    assert limits is not None
    assert limits.limits.batteries_outside([1001, 1003, 1004]) == {1003, 1004}
    assert limits.limits.batteries_outside([1001, 1002]) == frozenset()
    assert Limits().batteries_outside([1, 2, 3]) == frozenset()  # no limit: every battery


def test_the_module_is_pure() -> None:
    # The core does no IO: no trio, no grpc, and the user database is the shell's to read.
    code = (
        "import sys, distributord.core.arbitration.programs\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'trio', 'grpc', 'pwd',"
        " 'grp'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
