"""The sign of reactive power, pinned against the Microgrid API's own documentation.

The reference SDK documents it backwards (its ``reactive_power``: "Positive power means
capacitive (current leading w.r.t. voltage)"), so distributord takes it from the API package it
speaks: the documentation of the request fields, which the installed ``frequenz-api-microgrid``
carries in its generated type stubs (``microgrid_pb2.pyi``, the ``.proto`` comments; the
package ships no ``.proto`` files).

What our ``reactive_var`` means, in every version: **positive is inductive, the current
lagging the voltage, seen from the inverter** (it absorbs reactive power, as an inductor does);
**negative is capacitive, the current leading the voltage** (it supplies reactive power). It is
the API's own convention (IEEE 1459-2010), so the adapters send it as it is.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from frequenz.api.microgrid.v1 import microgrid_pb2 as v1_pb2
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2 as v1alpha18_pb2
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2 as v1alpha19_pb2

from distributord.api import v1, v1alpha
from distributord.api.adapter import PowerType

V1_TEXT = """\
    The standard of polarity is as per the IEEE 1459-2010 standard
    definitions:
    - positive reactive is inductive (current is lagging the voltage)
    - negative reactive is capacitive (current is leading the voltage)
"""
"""``SetComponentPowerReactiveRequest.power``, v1."""

ALPHA_TEXT = """\
    For Reactive power:
    - This value is in volt-amperes reactive (VAR).
    - Negative values indicate capacitive reactive power, i.e., the current
      is leading the voltage when viewed from the perspective of the
      electrical component.
    - Positive values indicate inductive reactive power, i.e., the current
      is lagging the voltage when viewed from the perspective of the
      electrical component.
"""
"""``SetElectricalComponentPowerRequest.power``, v1alpha18 and v1alpha19."""


def documentation(pb2: ModuleType) -> str:
    """The installed generated module's type stub: the ``.proto`` file's comments."""
    assert pb2.__file__ is not None
    return Path(pb2.__file__).with_suffix(".pyi").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("pb2", "text"),
    [(v1_pb2, V1_TEXT), (v1alpha18_pb2, ALPHA_TEXT), (v1alpha19_pb2, ALPHA_TEXT)],
    ids=["v1", "v1alpha18", "v1alpha19"],
)
def test_the_api_says_positive_reactive_power_is_inductive(pb2: ModuleType, text: str) -> None:
    assert text in documentation(pb2)


@pytest.mark.parametrize("version", ["v1alpha18", "v1alpha19"])
def test_reactive_power_is_sent_as_it_is_in_v1alpha(version: str) -> None:
    adapter = v1alpha.AlphaAdapter(v1alpha.VERSIONS[version])
    pb2 = v1alpha.VERSIONS[version].pb2
    inductive = adapter.set_power_request(2001, 1500.0, 60, PowerType.REACTIVE)
    assert inductive.power == 1500.0
    assert inductive.power_type == pb2.PowerType.Value("POWER_TYPE_REACTIVE")
    assert adapter.set_power_request(2001, -1500.0, 60, PowerType.REACTIVE).power == -1500.0


def test_reactive_power_is_sent_as_it_is_in_v1() -> None:
    inductive = v1.set_power_request(2001, 1500.0, 60, PowerType.REACTIVE)
    assert isinstance(inductive, v1_pb2.SetComponentPowerReactiveRequest)
    assert inductive.power == 1500.0
    assert v1.set_power_request(2001, -1500.0, 60, PowerType.REACTIVE).power == -1500.0
