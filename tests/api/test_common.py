"""The stub every version builds from its service's descriptor (``api/common.py``).

The decoder, also in ``api/common.py``, is tested for every version in ``test_decoding``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.api.versions import VERSIONS, Version


class RecordingChannel:
    """A channel that records each call a stub prepares (grpc's four factories)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def _factory(self, kind: str) -> Any:
        def prepare(
            path: str,
            request_serializer: Any = None,
            response_deserializer: Any = None,
            _registered_method: bool = False,
        ) -> tuple[str, str]:
            self.calls.append(
                (kind, path, request_serializer, response_deserializer, _registered_method)
            )
            return kind, path

        return prepare

    def __getattr__(self, kind: str) -> Any:
        if kind not in {"unary_unary", "unary_stream", "stream_unary", "stream_stream"}:
            raise AttributeError(kind)
        return self._factory(kind)


@pytest.mark.parametrize("version", VERSIONS, ids=repr)
def test_the_stub_prepares_the_calls_the_generated_stub_prepares(version: Version) -> None:
    # The generated module imports grpc, which the adapters must not; the calls must not differ.
    generated = importlib.import_module(f"frequenz.api.microgrid.{version.name}.microgrid_pb2_grpc")
    theirs, ours = RecordingChannel(), RecordingChannel()
    their_stub = generated.MicrogridStub(theirs)
    our_stub = version.adapter.stub(ours)
    assert ours.calls == theirs.calls
    assert len(ours.calls) > 4
    assert vars(our_stub) == vars(their_stub)  # each method under its name


def test_a_stub_has_no_method_its_service_lacks() -> None:
    stub = VERSIONS[0].adapter.stub(RecordingChannel())
    with pytest.raises(AttributeError):
        _ = stub.ListComponents  # v1's name; v1alpha18 says ListElectricalComponents
