"""node/pipeline.py on a real grpc.aio server: layers are stacked once per method, at start, and run on
every call; an unknown method is heard of and answered UNIMPLEMENTED; undecodable bytes are
INVALID_ARGUMENT; a service given without its method handlers is refused at install."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from claimcore.node.pipeline import Pipeline, behaviour_of, decoded, rewrapped

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Counting:
    """A layer that counts how often it wraps a method and how often each wrapped method runs."""

    def __init__(self) -> None:
        self.wrapped: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.wrapped[method] += 1
        if handler.unary_unary is None:
            return handler
        behaviour, calls = behaviour_of(handler), self.calls

        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            calls[method] += 1
            return await behaviour(request, context)

        return rewrapped(handler, counted)


async def _serve(pipeline: Pipeline) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), pipeline)
    pipeline.install(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def test_layers_wrap_each_method_once_and_run_on_every_call() -> None:
    async def scenario() -> None:
        counting, unknown = Counting(), []
        server, port = await _serve(Pipeline([counting, decoded], on_unknown=unknown.append))
        try:
            assert HEALTH_CHECK in counting.wrapped
            assert set(counting.wrapped.values()) == {1}  # every method wrapped once, at install
            wrapped_at_start = dict(counting.wrapped)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(3):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary("/nobody.Serves/This")(b"", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
                with pytest.raises(grpc.aio.AioRpcError) as err:  # a field longer than the message
                    await channel.unary_unary(HEALTH_CHECK)(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid" in (err.value.details() or "")
            assert counting.calls[HEALTH_CHECK] == 4  # three checks and the undecodable one
            assert dict(counting.wrapped) == wrapped_at_start  # nothing wrapped per call
            assert unknown == ["/nobody.Serves/This"]
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_service_without_its_method_handlers_is_refused_at_install() -> None:
    async def scenario() -> None:
        pipeline = Pipeline([decoded])
        pipeline.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("some.Service", {}),))
        with pytest.raises(RuntimeError, match="some.Service"):
            pipeline.install(grpc.aio.server())

    asyncio.run(scenario())
