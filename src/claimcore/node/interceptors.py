"""The node's server interceptors: what every call passes before it reaches a service.

- `DecodeErrors`: undecodable request bytes are the caller's mistake, INVALID_ARGUMENT, not
  UNKNOWN. grpc.aio answers a request its protobuf parser refuses with UNKNOWN ("Unexpected
  <class DecodeError>"), which reads like a server fault; this interceptor parses the bytes
  itself, ahead of every handler, and refuses what does not parse with the parser's reason.
  Valid requests pass through unchanged (parsed once, here).
- `AuthInterceptor`: the door to security/auth.py's policy. An unknown or missing key is
  UNAUTHENTICATED, a channel calling AdminService is PERMISSION_DENIED, and the call never
  reaches Redis; the caller reaches the handler through `auth.current()`.

Both cover unary-unary and unary-stream handlers (WatchCampaigns): a stream is refused before
its handler runs, and its handler runs as its caller for the stream's whole life. The node has
no client-streaming RPC; such a handler would pass through unchanged.

Every interceptor (these, metrics.py's and tracing.py's) rebuilds a handler around new
behaviour on every call. grpc.unary_unary_rpc_method_handler builds a 7-field namedtuple
(about 2 µs), so they share the slotted `UnaryHandler` instead (`rewrapped`; a unary-stream
handler gets a `UnaryStreamHandler`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from claimcore.security.auth import ADMIN_SERVICE, OPEN_PREFIXES, Caller, Credentials, acting_as, bearer_key


class UnaryHandler(grpc.RpcMethodHandler):
    __slots__ = ("unary_unary", "request_deserializer", "response_serializer")
    request_streaming = response_streaming = False
    unary_stream = stream_unary = stream_stream = None

    def __init__(self, unary_unary: Any, request_deserializer: Any, response_serializer: Any) -> None:
        self.unary_unary = unary_unary
        self.request_deserializer = request_deserializer
        self.response_serializer = response_serializer


class UnaryStreamHandler(grpc.RpcMethodHandler):
    __slots__ = ("unary_stream", "request_deserializer", "response_serializer")
    request_streaming = False
    response_streaming = True
    unary_unary = stream_unary = stream_stream = None

    def __init__(self, unary_stream: Any, request_deserializer: Any, response_serializer: Any) -> None:
        self.unary_stream = unary_stream
        self.request_deserializer = request_deserializer
        self.response_serializer = response_serializer


def wrappable(handler: grpc.RpcMethodHandler | None) -> bool:
    """A handler these interceptors wrap: unary-unary or unary-stream."""
    return handler is not None and (handler.unary_unary is not None or handler.unary_stream is not None)


def behaviour_of(handler: grpc.RpcMethodHandler) -> Any:
    """The handler's call as a coroutine function (request, context). A unary-stream handler that is
    an async generator becomes one that writes what it yields, so that a wrapper around it runs
    the whole stream within its own block (acting_as) and in one context."""
    if handler.unary_unary is not None:
        return handler.unary_unary
    stream = handler.unary_stream
    if not inspect.isasyncgenfunction(stream):
        return stream  # the reader-writer form (context.write), returning None

    async def written(request: Any, context: grpc.aio.ServicerContext) -> None:
        async for response in stream(request, context):
            await context.write(response)

    return written


def rewrapped(handler: grpc.RpcMethodHandler, behaviour: Any, *,
              raw: bool = False) -> UnaryHandler | UnaryStreamHandler:
    """`handler` with `behaviour` as its call (a unary-stream handler's behaviour writes its responses
    with context.write); raw: the behaviour gets the request bytes."""
    deserializer = None if raw else handler.request_deserializer
    if handler.unary_unary is None and handler.unary_stream is not None:
        return UnaryStreamHandler(behaviour, deserializer, handler.response_serializer)
    return UnaryHandler(behaviour, deserializer, handler.response_serializer)


class DecodeErrors(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if not wrappable(handler) or handler.request_deserializer is None:
            return handler
        parse, behaviour = handler.request_deserializer, behaviour_of(handler)

        async def parsed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception as exc:  # noqa: BLE001 - any parser failure is the request's fault
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request is not a valid {details.method} message: {exc}"[:300])
            return await behaviour(request, context)

        return rewrapped(handler, parsed, raw=True)


def _refusal(code: grpc.StatusCode, details: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, details)

    return rewrapped(handler, refuse)


def _as(caller: Caller, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    behaviour = behaviour_of(handler)

    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with acting_as(caller):
            return await behaviour(request, context)

    return rewrapped(handler, run)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticate every claimcore call and keep channels out of AdminService."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method or ""
        if not wrappable(handler) or method.startswith(OPEN_PREFIXES):
            return handler
        key = bearer_key(details.invocation_metadata)
        caller = self.credentials.identify(key) if key else None
        if caller is None:
            why = "no API key (metadata authorization: Bearer <key>)" if key is None else "unknown API key"
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, why, handler)
        if method.startswith(ADMIN_SERVICE) and not caller.admin:
            return _refusal(grpc.StatusCode.PERMISSION_DENIED,
                            f"channel {caller.name!r} may not call {method}: admin credential needed",
                            handler)
        return _as(caller, handler)
