"""Undecodable request bytes are the caller's mistake: INVALID_ARGUMENT, not UNKNOWN.

grpc.aio answers a request its protobuf parser refuses with UNKNOWN
("Unexpected <class DecodeError>"), which reads like a server fault. This
interceptor parses the bytes itself, ahead of every handler, and refuses what
does not parse with INVALID_ARGUMENT and the parser's reason. Valid requests
pass through unchanged (parsed once, here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from claimcore.handlers import rewrapped


class DecodeErrors(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse, behaviour = handler.request_deserializer, handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception as exc:  # noqa: BLE001 - any parser failure is the request's fault
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request is not a valid {details.method} message: {exc}"[:300])
            return await behaviour(request, context)

        return rewrapped(handler, unary_unary, raw=True)
