"""What every version's adapter shares (``api/adapter.py``): the error codes, the served methods."""

from __future__ import annotations

from typing import cast

import pytest

from distributord.api.adapter import Adapter, SimHandler, command_error
from distributord.core.errors import CommandFailedError, CommandRejectedError
from tests.api.versions import VERSIONS, Version


@pytest.mark.parametrize(
    ("code", "kind", "blocks"),
    [
        ("OUT_OF_RANGE", CommandRejectedError, False),
        ("INVALID_ARGUMENT", CommandRejectedError, False),
        ("UNAVAILABLE", CommandFailedError, True),
        ("INTERNAL", CommandFailedError, True),
        ("DEADLINE_EXCEEDED", CommandFailedError, True),
    ],
)
def test_status_codes_become_domain_errors(code: str, kind: type, blocks: bool) -> None:
    error = command_error(code, "details")
    assert type(error) is kind
    assert error.blocks is blocks
    assert error.code == code
    assert str(error) == f"{code}: details"


@pytest.mark.parametrize("version", VERSIONS, ids=repr)
def test_an_adapter_serves_methods_of_its_own_service(version: Version) -> None:
    adapter: Adapter = version.adapter
    served = adapter.serve(cast(SimHandler, object()))  # nothing is called yet
    names = [rpc.name for rpc in adapter.rpcs]
    assert set(served) <= set(names)
    # The graph, the telemetry stream, the command, the site, its sensors, added bounds.
    assert len(served) >= (9 if version.name.startswith("v1alpha") else 8)
    assert all(rpc.path == f"/{adapter.service}/{rpc.name}" for rpc in adapter.rpcs)
