"""A version's ``Microgrid`` service on the simulator's gRPC server: the grpc glue, and only that.

Theory of operation
-------------------
Each version's adapter (``distributord.api``) knows its messages and serves the methods it
implements as plain async functions of the request message (:meth:`Adapter.serve
<distributord.api.adapter.Adapter.serve>`), which end a call with a status by raising
:class:`~distributord.api.adapter.SimAbort`. The adapters import no grpc; this module is where
those functions meet it. :func:`add_servicer` registers every method of the service
(:attr:`Adapter.rpcs <distributord.api.adapter.Adapter.rpcs>`), as the generated
``add_MicrogridServicer_to_server`` does:

* a served method runs its function; a :class:`~distributord.api.adapter.SimAbort` from it
  (or from the simulator underneath) ends the call with that status code and details;
* a method the adapter does not serve answers ``UNIMPLEMENTED``, as the generated servicer
  base class does, with details that say so: ``"StopElectricalComponent is not simulated by
  distributord sim"`` (the generated base class says ``"Method not implemented!"``, which
  reads like a server bug, not like a simulator that leaves the method out on purpose).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from distributord.api.adapter import Adapter, Rpc, Served, SimAbort, SimHandler

NOT_IMPLEMENTED = "is not simulated by distributord sim"
"""The details of a method the adapter does not serve, after the method's name."""


def not_simulated(method: str) -> str:
    """The details of ``UNIMPLEMENTED`` for a method the simulator does not serve."""
    return f"{method} {NOT_IMPLEMENTED}"


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: str, details: str) -> NoReturn:
    """End a call with the gRPC status code named ``code`` (it raises)."""
    status = grpc.StatusCode.__members__.get(code, grpc.StatusCode.UNKNOWN)
    await context.abort(status, details)
    raise AssertionError("unreachable: context.abort raises")


def _unary(method: Served) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(request)
        except SimAbort as error:
            await abort(context, error.code, error.details)

    return call


def _streaming(method: Served) -> Any:
    # An async generator function: grpc.aio tells a streaming handler by that.
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        responses = method(request)
        try:
            async for response in responses:
                yield response
        except SimAbort as error:
            await abort(context, error.code, error.details)
        finally:
            await responses.aclose()

    return call


def _unimplemented(name: str) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await abort(context, "UNIMPLEMENTED", not_simulated(name))

    return call


def _method_handlers(
    adapter: Adapter, handler: SimHandler
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Every method of ``adapter``'s service as a grpc method handler, by method name."""
    served = adapter.serve(handler)
    unknown = sorted(set(served) - {rpc.name for rpc in adapter.rpcs})
    if unknown:
        raise ValueError(f"{adapter.name} serves methods its service does not have: {unknown}")
    return {rpc.name: _method_handler(rpc, served.get(rpc.name)) for rpc in adapter.rpcs}


def _method_handler(rpc: Rpc, method: Served | None) -> grpc.RpcMethodHandler[Any, Any]:
    if method is None:
        behaviour = _unimplemented(rpc.name)
    elif rpc.kind.endswith("_stream"):
        behaviour = _streaming(method)
    else:
        behaviour = _unary(method)
    make = getattr(grpc, f"{rpc.kind}_rpc_method_handler")  # grpc.unary_unary_rpc_method_handler
    handler: grpc.RpcMethodHandler[Any, Any] = make(
        behaviour,
        request_deserializer=rpc.request.FromString,
        response_serializer=rpc.response.SerializeToString,
    )
    return handler


def add_servicer(adapter: Adapter, handler: SimHandler, server: grpc.aio.Server) -> None:
    """Serve ``adapter``'s ``Microgrid`` service from ``handler`` on a grpc.aio server."""
    handlers = _method_handlers(adapter, handler)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(adapter.service, handlers),)
    )
    server.add_registered_method_handlers(adapter.service, handlers)
