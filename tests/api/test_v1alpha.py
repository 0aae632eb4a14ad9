"""The v1alpha18/19 adapters: the set-power reply stream, components, requests per version."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from frequenz.api.common.v1alpha8.microgrid.electrical_components import (
    electrical_components_pb2 as ec,
)
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2 as v1alpha18_pb2
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2 as v1alpha19_pb2
from google.protobuf import timestamp_pb2

from distributord.api import v1alpha
from distributord.api.adapter import Adapter, FinalReply, PowerType, Rest
from distributord.core.errors import (
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.topology import Category, Component, InverterType

T0 = 1_800_000_000

ALPHAS = pytest.mark.parametrize(
    ("adapter", "pb2"),
    [(v1alpha.V1ALPHA18, v1alpha18_pb2), (v1alpha.V1ALPHA19, v1alpha19_pb2)],
    ids=["v1alpha18", "v1alpha19"],
)


def reply(pb2: Any, status: str, until: int | None = None) -> Any:
    message = pb2.SetElectricalComponentPowerResponse(
        status=pb2.SetElectricalComponentPowerRequestStatus.Value(
            "SET_ELECTRICAL_COMPONENT_POWER_REQUEST_STATUS_" + status
        )
    )
    if until is not None:
        message.valid_until_time.CopyFrom(timestamp_pb2.Timestamp(seconds=until))
    return message


class FakeStub:
    """Answers ``SetElectricalComponentPower`` with the replies it was given, and records."""

    def __init__(self, replies: Sequence[Any]) -> None:
        self.replies = replies
        self.requests: list[Any] = []
        self.cancelled = False
        self.ended = False  # the server ended the stream (what grpc.aio's call.done() says)

    def SetElectricalComponentPower(self, request: Any) -> FakeStub:  # noqa: N802
        self.requests.append(request)
        return self

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def done(self) -> bool:
        return self.ended or self.cancelled

    async def __aiter__(self) -> AsyncIterator[Any]:
        for message in self.replies:
            yield message
        self.ended = True


def set_power(adapter: Adapter, stub: FakeStub) -> float:
    """The adapter's command, on asyncio (as in the daemon, where the bridge's loop runs it)."""
    return asyncio.run(adapter.set_power(stub, 2001, -2500.5, 60))


@ALPHAS
def test_success_returns_its_valid_until(adapter: Adapter, pb2: Any) -> None:
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "SUCCESS", T0 + 61)])
    assert set_power(adapter, stub) == T0 + 61
    (request,) = stub.requests
    assert isinstance(request, pb2.SetElectricalComponentPowerRequest)
    assert request.electrical_component_id == 2001
    assert request.power_type == pb2.POWER_TYPE_ACTIVE
    assert request.power == -2500.5
    assert request.request_lifetime == 60
    # The stream was read to its end: the call completed, it was not cancelled by us.
    assert stub.ended
    assert not stub.cancelled


@ALPHAS
def test_success_without_a_time_keeps_the_accepted_time(adapter: Adapter, pb2: Any) -> None:
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "SUCCESS")])
    assert set_power(adapter, stub) == T0 + 60


@ALPHAS
def test_overridden_is_reported_and_does_not_block(adapter: Adapter, pb2: Any) -> None:
    # We never have two commands in flight for one inverter: the newer one is someone else's,
    # so our setpoint does not hold. Not the battery's failure: it does not block.
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "OVERRIDDEN")])
    with pytest.raises(CommandOverriddenError) as caught:
        set_power(adapter, stub)
    assert caught.value.code == "OVERRIDDEN"
    assert not caught.value.blocks


@ALPHAS
def test_failed_is_a_failure(adapter: Adapter, pb2: Any) -> None:
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "FAILED")])
    with pytest.raises(CommandFailedError) as caught:
        set_power(adapter, stub)
    assert caught.value.code == "FAILED"
    assert caught.value.blocks


@ALPHAS
def test_rejected_is_a_refusal(adapter: Adapter, pb2: Any) -> None:
    stub = FakeStub([reply(pb2, "REJECTED")])
    with pytest.raises(CommandRejectedError) as caught:
        set_power(adapter, stub)
    assert caught.value.code == "REJECTED"
    assert not caught.value.blocks


@ALPHAS
@pytest.mark.parametrize(
    ("statuses", "said"),
    [(["ACCEPTED"], "after ACCEPTED"), ([], "without any reply")],
    ids=["accepted-then-end", "nothing"],
)
def test_a_stream_without_a_final_reply_is_a_failure(
    adapter: Adapter, pb2: Any, statuses: list[str], said: str
) -> None:
    stub = FakeStub([reply(pb2, s, T0 + 60) for s in statuses])
    with pytest.raises(CommandFailedError) as caught:
        set_power(adapter, stub)
    assert caught.value.code == "NO_FINAL_REPLY"
    assert said in str(caught.value)


@ALPHAS
def test_unknown_statuses_are_skipped(adapter: Adapter, pb2: Any) -> None:
    unknown = pb2.SetElectricalComponentPowerResponse(status=77)
    stub = FakeStub(
        [reply(pb2, "UNSPECIFIED"), reply(pb2, "ACCEPTED", T0), unknown, reply(pb2, "SUCCESS")]
    )
    assert set_power(adapter, stub) == T0


@ALPHAS
def test_a_bad_valid_until_is_nan_not_an_error(adapter: Adapter, pb2: Any) -> None:
    bad = reply(pb2, "SUCCESS")
    bad.valid_until_time.seconds = 2**62
    stub = FakeStub([reply(pb2, "ACCEPTED"), bad])
    assert math.isnan(set_power(adapter, stub))


# --- components and requests --------------------------------------------------------------------


def component(category: str, **info: Any) -> ec.ElectricalComponent:
    message = ec.ElectricalComponent(
        id=1,
        category=ec.ElectricalComponentCategory.Value("ELECTRICAL_COMPONENT_CATEGORY_" + category),
    )
    for kind, value in info.items():
        getattr(message.category_specific_info, kind).type = value
    return message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (component("GRID_CONNECTION_POINT"), Component(Category.GRID)),
        (component("BREAKER"), Component(Category.BREAKER)),
        (component("PRECHARGER"), Component(Category.PRECHARGER)),
        (component("BATTERY"), Component(Category.BATTERY)),
        (component("METER"), Component(Category.METER)),
        (component("CHP"), Component(Category.OTHER)),
        (component("INVERTER"), Component(Category.INVERTER, InverterType.UNSPECIFIED)),
        (
            component("INVERTER", inverter=ec.INVERTER_TYPE_BATTERY),
            Component(Category.INVERTER, InverterType.BATTERY),
        ),
        (
            component("INVERTER", inverter=ec.INVERTER_TYPE_HYBRID),
            Component(Category.INVERTER, InverterType.HYBRID),
        ),
        (
            component("INVERTER", inverter=ec.INVERTER_TYPE_PV),
            Component(Category.INVERTER, InverterType.PV),
        ),
        (
            component("INVERTER", inverter=99),
            Component(Category.INVERTER, InverterType.UNSPECIFIED),
        ),
        (
            ec.ElectricalComponent(id=1, category=ec.ElectricalComponentCategory.ValueType(99)),
            Component(Category.OTHER),
        ),
    ],
)
def test_components_by_name(message: ec.ElectricalComponent, expected: Component) -> None:
    assert v1alpha.component_of(message) == expected


@pytest.mark.parametrize(
    ("ours", "sent", "read"),
    [
        (Category.GRID, "GRID_CONNECTION_POINT", Category.GRID),
        (Category.RELAY, "BREAKER", Category.BREAKER),
        (Category.FUSE, "BREAKER", Category.BREAKER),
        (Category.BREAKER, "BREAKER", Category.BREAKER),
        (Category.PRECHARGER, "PRECHARGER", Category.PRECHARGER),
        (Category.OTHER, "UNSPECIFIED", Category.OTHER),
    ],
)
def test_categories_alpha_lacks_are_sent_as_their_substitutes(
    ours: Category, sent: str, read: Category
) -> None:
    message = v1alpha.encode_component(7, Component(ours))
    assert ec.ElectricalComponentCategory.Name(message.category).endswith("_" + sent)
    assert v1alpha.component_of(message) == Component(read)


def test_the_versions_differ_in_the_filter_message_only() -> None:
    table = v1alpha.VERSIONS
    assert table["v1alpha18"].stream_filter == "ComponentTelemetryStreamFilter"
    assert table["v1alpha19"].stream_filter == "ElectricalComponentTelemetryStreamFilter"
    assert v1alpha.V1ALPHA18.service == "frequenz.api.microgrid.v1alpha18.Microgrid"
    assert v1alpha.V1ALPHA19.service == "frequenz.api.microgrid.v1alpha19.Microgrid"
    assert (v1alpha.V1ALPHA18.name, v1alpha.V1ALPHA19.name) == ("v1alpha18", "v1alpha19")


@ALPHAS
def test_the_stream_request_asks_for_the_metrics_read(adapter: Adapter, pb2: Any) -> None:
    assert isinstance(adapter, v1alpha.AlphaAdapter)
    request = adapter.stream_request(1001)
    assert isinstance(request, pb2.ReceiveElectricalComponentTelemetryStreamRequest)
    assert request.electrical_component_id == 1001
    names = {ec_metric_name(m) for m in request.filter.metrics}
    assert names == {
        "METRIC_BATTERY_SOC_PCT",
        "METRIC_BATTERY_CAPACITY",
        "METRIC_DC_POWER",
        "METRIC_AC_POWER_ACTIVE",
        "METRIC_AC_POWER_REACTIVE",  # for their bounds (issue 24)
        "METRIC_AC_POWER_APPARENT",
    }


def ec_metric_name(number: int) -> str:
    from frequenz.api.common.v1alpha8.metrics import metrics_pb2

    return metrics_pb2.Metric.Name(number)  # type: ignore[arg-type]


# --- the command's success on ACCEPTED, the rest of the stream followed (issue 21) --------------


def followed(adapter: Adapter, stub: FakeStub) -> tuple[float, FinalReply | None, bool]:
    """The command with ``follow``: its result, then what the rest said; whether it was handed."""
    rests: list[Rest] = []

    async def main() -> tuple[float, FinalReply | None, bool]:
        until = await adapter.set_power(
            stub, 2001, -2500.5, 60, follow=lambda rest, stop: rests.append(rest)
        )
        handed = bool(rests)
        assert not stub.cancelled  # the call goes on after ACCEPTED: the caller reads on
        return until, (await rests[0]() if rests else None), handed

    return asyncio.run(main())


@ALPHAS
@pytest.mark.parametrize("final", ["SUCCESS", "FAILED", "OVERRIDDEN"])
def test_with_follow_the_command_succeeds_on_accepted_and_the_rest_says_how_it_ended(
    adapter: Adapter, pb2: Any, final: str
) -> None:
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, final, T0 + 61)])
    assert followed(adapter, stub) == (T0 + 60, FinalReply(final), True)
    assert stub.ended  # read to its end: completed, not cancelled by us
    assert not stub.cancelled


@ALPHAS
@pytest.mark.parametrize(
    ("statuses", "final"),
    [
        (["ACCEPTED"], FinalReply.END),  # the stream ended without a final reply
        (["ACCEPTED", "UNSPECIFIED", "ACCEPTED", "FAILED"], FinalReply.FAILED),  # read on
        (["ACCEPTED", "REJECTED"], FinalReply.FAILED),  # nonsense after ACCEPTED: not applied
    ],
    ids=["end", "read-on", "rejected-late"],
)
def test_the_rest_of_a_stream_without_a_plain_final_reply(
    adapter: Adapter, pb2: Any, statuses: list[str], final: FinalReply
) -> None:
    stub = FakeStub([reply(pb2, s, T0 + 60) for s in statuses])
    assert followed(adapter, stub) == (T0 + 60, final, True)


@ALPHAS
def test_with_follow_a_refusal_or_a_final_reply_before_accepted_is_judged_at_once(
    adapter: Adapter, pb2: Any
) -> None:
    with pytest.raises(CommandRejectedError):
        followed(adapter, FakeStub([reply(pb2, "REJECTED")]))
    with pytest.raises(CommandFailedError, match="without any reply"):
        followed(adapter, FakeStub([]))
    # A server that skips ACCEPTED: its final reply decides, nothing is left to follow.
    assert followed(adapter, FakeStub([reply(pb2, "SUCCESS", T0 + 61)])) == (T0 + 61, None, False)


@ALPHAS
def test_cancelling_the_rest_cancels_the_call(adapter: Adapter, pb2: Any) -> None:
    class Ramping(FakeStub):
        async def __aiter__(self) -> AsyncIterator[Any]:
            yield reply(pb2, "ACCEPTED", T0 + 60)
            await asyncio.Event().wait()  # the inverter ramps: no final reply yet
            yield reply(pb2, "SUCCESS")

    stub = Ramping([])

    async def main() -> None:
        rests: list[Rest] = []
        await adapter.set_power(stub, 2001, 1.0, 60, follow=lambda rest, stop: rests.append(rest))
        task = asyncio.create_task(rests[0]())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert stub.cancelled


# --- reactive power: the same command, another power type (issue 24) --------------------------


@ALPHAS
def test_a_reactive_command_is_the_same_command_with_the_reactive_power_type(
    adapter: Adapter, pb2: Any
) -> None:
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "SUCCESS", T0 + 61)])
    until = asyncio.run(adapter.set_power(stub, 2001, -750.25, 30, power_type=PowerType.REACTIVE))
    assert until == T0 + 61
    (request,) = stub.requests
    assert request.electrical_component_id == 2001
    assert request.power_type == pb2.POWER_TYPE_REACTIVE
    assert request.power == -750.25
    assert request.request_lifetime == 30
    assert stub.ended
    assert not stub.cancelled


@ALPHAS
def test_a_reactive_command_is_judged_as_an_active_one(adapter: Adapter, pb2: Any) -> None:
    def send(stub: FakeStub) -> float:
        return asyncio.run(adapter.set_power(stub, 2001, 1.0, 60, power_type=PowerType.REACTIVE))

    with pytest.raises(CommandRejectedError):
        send(FakeStub([reply(pb2, "REJECTED")]))
    with pytest.raises(CommandFailedError, match="FAILED"):
        send(FakeStub([reply(pb2, "ACCEPTED", T0), reply(pb2, "FAILED")]))
    with pytest.raises(CommandOverriddenError):
        send(FakeStub([reply(pb2, "ACCEPTED", T0), reply(pb2, "OVERRIDDEN")]))
    # With follow: it lands on ACCEPTED, and the rest says how it ended.
    stub = FakeStub([reply(pb2, "ACCEPTED", T0 + 60), reply(pb2, "FAILED", T0 + 61)])
    rests: list[Rest] = []

    async def main() -> tuple[float, FinalReply]:
        until = await adapter.set_power(
            stub,
            2001,
            1.0,
            60,
            follow=lambda rest, stop: rests.append(rest),
            power_type=PowerType.REACTIVE,
        )
        return until, await rests[0]()

    assert asyncio.run(main()) == (T0 + 60, FinalReply.FAILED)
    assert stub.requests[0].power_type == pb2.POWER_TYPE_REACTIVE
