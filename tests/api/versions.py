"""The three API versions as the tests see them: adapter, encoder, and how messages are spelled.

The spelling table lets one test (or one hypothesis strategy) build a raw telemetry message of
any version field by field, the way a server that does not use our encoder would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from frequenz.api.common.v1.metrics import metric_sample_pb2
from frequenz.api.common.v1.microgrid.components import components_pb2
from frequenz.api.common.v1alpha8.metrics import metrics_pb2
from frequenz.api.common.v1alpha8.microgrid.electrical_components import (
    electrical_components_pb2,
)

from distributord.api import v1, v1alpha
from distributord.api.adapter import Adapter, Telemetry


@attrs.frozen(kw_only=True)
class Version:
    """One API version, for tests.

    Attributes:
        name: As the configuration spells it.
        adapter: Its adapter.
        encode: A reading as the inner telemetry message (what the decoder takes).
        message: The inner telemetry message class.
        sample: The metric sample class.
        state: The state snapshot class.
        id_field: The message's component id field.
        time_field: A sample's time field.
        states_field: The message's state snapshots field.
        state_time_field: A state snapshot's time field.
        error: A state snapshot's error entry from an error number.
        metrics: Our metric names to the version's numbers.
        metric_enum: The version's metric enum.
        state_enum: The version's state code enum.
        error_enum: The version's error code enum.
    """

    name: str
    adapter: Adapter
    encode: Callable[[Telemetry], Any]
    message: Any
    sample: Any
    state: Any
    id_field: str
    time_field: str
    states_field: str
    state_time_field: str
    error: Callable[[int], Any]
    metrics: dict[str, int]
    metric_enum: Any
    state_enum: Any
    error_enum: Any

    def __repr__(self) -> str:
        return self.name

    def sample_of(
        self,
        metric: str | int,
        value: float | None = None,
        *,
        at: tuple[int, int] | None = None,
        ranges: list[tuple[float | None, float | None]] | None = None,
        aggregated: bool = False,
    ) -> Any:
        """A metric sample; ``at`` is a raw ``(seconds, nanos)``."""
        sample = self.sample(metric=self.metrics[metric] if isinstance(metric, str) else metric)
        if at is not None:
            timestamp = getattr(sample, self.time_field)
            timestamp.seconds, timestamp.nanos = at
        if value is not None:
            if aggregated:
                sample.value.aggregated_metric.avg_value = value
                sample.value.aggregated_metric.raw_values.extend([value])
            else:
                sample.value.simple_metric.value = value
        for lower, upper in ranges or ():
            bounds = sample.bounds.add()
            if lower is not None:
                bounds.lower = lower
            if upper is not None:
                bounds.upper = upper
        return sample

    def state_of(
        self,
        states: Sequence[int],
        errors: Sequence[int] = (),
        *,
        at: tuple[int, int] | None = None,
    ) -> Any:
        """A state snapshot of raw numbers."""
        state = self.state(states=states, errors=[self.error(e) for e in errors])
        if at is not None:
            timestamp = getattr(state, self.state_time_field)
            timestamp.seconds, timestamp.nanos = at
        return state

    def message_of(
        self, component_id: int, samples: Sequence[Any] = (), states: Sequence[Any] = ()
    ) -> Any:
        """A telemetry message."""
        return self.message(
            **{self.id_field: component_id, "metric_samples": samples, self.states_field: states}
        )


V1 = Version(
    name="v1",
    adapter=v1.V1,
    encode=v1.encode_telemetry,
    message=components_pb2.ComponentData,
    sample=metric_sample_pb2.MetricSample,
    state=components_pb2.ComponentState,
    id_field="component_id",
    time_field="sampled_at",
    states_field="states",
    state_time_field="sampled_at",
    error=lambda code: code,
    metrics={
        "soc": metric_sample_pb2.Metric.Value("METRIC_BATTERY_SOC_PCT"),
        "capacity": metric_sample_pb2.Metric.Value("METRIC_BATTERY_CAPACITY"),
        "dc_power": metric_sample_pb2.Metric.Value("METRIC_DC_POWER"),
        "ac_power": metric_sample_pb2.Metric.Value("METRIC_AC_ACTIVE_POWER"),
        "ac_reactive": metric_sample_pb2.Metric.Value("METRIC_AC_REACTIVE_POWER"),
        "ac_apparent": metric_sample_pb2.Metric.Value("METRIC_AC_APPARENT_POWER"),
    },
    metric_enum=metric_sample_pb2.Metric,
    state_enum=components_pb2.ComponentStateCode,
    error_enum=components_pb2.ComponentErrorCode,
)


def _alpha(name: str, adapter: Adapter) -> Version:
    e = electrical_components_pb2
    return Version(
        name=name,
        adapter=adapter,
        encode=v1alpha.encode_telemetry,
        message=e.ElectricalComponentTelemetry,
        sample=metrics_pb2.MetricSample,
        state=e.ElectricalComponentStateSnapshot,
        id_field="electrical_component_id",
        time_field="sample_time",
        states_field="state_snapshots",
        state_time_field="origin_time",
        error=lambda code: e.ElectricalComponentDiagnostic(
            diagnostic_code=e.ElectricalComponentDiagnosticCode.ValueType(code)
        ),
        metrics={
            "soc": metrics_pb2.Metric.Value("METRIC_BATTERY_SOC_PCT"),
            "capacity": metrics_pb2.Metric.Value("METRIC_BATTERY_CAPACITY"),
            "dc_power": metrics_pb2.Metric.Value("METRIC_DC_POWER"),
            "ac_power": metrics_pb2.Metric.Value("METRIC_AC_POWER_ACTIVE"),
            "ac_reactive": metrics_pb2.Metric.Value("METRIC_AC_POWER_REACTIVE"),
            "ac_apparent": metrics_pb2.Metric.Value("METRIC_AC_POWER_APPARENT"),
        },
        metric_enum=metrics_pb2.Metric,
        state_enum=e.ElectricalComponentStateCode,
        error_enum=e.ElectricalComponentDiagnosticCode,
    )


V1ALPHA18 = _alpha("v1alpha18", v1alpha.V1ALPHA18)
V1ALPHA19 = _alpha("v1alpha19", v1alpha.V1ALPHA19)
VERSIONS = [V1ALPHA18, V1ALPHA19, V1]


def same(a: object, b: object) -> bool:
    """Equality that counts nan as equal to nan (snapshots hold nan for unknown)."""
    if attrs.has(type(a)) and type(a) is type(b):
        names = [f.name for f in attrs.fields(type(a))]  # type: ignore[arg-type]
        return all(same(getattr(a, name), getattr(b, name)) for name in names)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
