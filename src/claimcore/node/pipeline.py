"""The node's call pipeline: what every call passes before it reaches a service, built once per method.

A layer takes a method's handler and returns one with new behaviour around it. `Pipeline` is the
server as the generated add_*_to_server functions see it: it stacks the layers around every
method's handler once, when the service is added, and serves the results. Two costs of grpc.aio
are avoided that way, both paid by every call whatever it is:

- a server interceptor runs per call (two coroutines, a partial and a new handler: a few µs);
- each method registered with gRPC core costs every call too: the accept loop keeps one pending
  request per registered method and waits on all of them for each call it takes. With our ~12
  methods registered, a sold-out Claim cost the node ~10 % more CPU than with only the hot ones
  (`python -m benchmarks.system --only echo_sold_out,claimcore_sold_out`). So only HOT_METHODS
  are registered; the rest are found by name (`service`) when their call arrives.

The layers (server.py stacks them, outermost first):
- metrics (metrics.py, when served): sees every status, the inner layers' refusals included;
- `decoded`: undecodable request bytes are the caller's mistake, INVALID_ARGUMENT, whoever sends
  them. grpc.aio answers a request its protobuf parser refuses with UNKNOWN ("Unexpected <class
  DecodeError>"), which reads like a server fault; this layer parses the bytes itself;
- tracing (tracing.py, when on): reads the decoded requests;
- `authenticated` (with a credentials file): the door to security/auth.py's policy. An unknown or
  missing key is UNAUTHENTICATED, a channel calling AdminService is PERMISSION_DENIED, and the call
  never reaches Redis; the caller reaches the handler through `auth.current()`.

Layers cover unary-unary and unary-stream handlers (WatchCampaigns): a stream is refused before its
handler runs, and its handler runs as its caller for the stream's whole life. The node has no
client-streaming RPC; such a handler would pass through unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from claimcore.node.error_details import abort_with
from claimcore.security.auth import ADMIN_SERVICE, OPEN_PREFIXES, Credentials, acting_as, bearer_key
from claimcore.v1 import claims_pb2 as pb

# A layer: (full method name "/package.Service/Method", handler) -> the handler with it around.
Layer = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]

_CLAIMS = pb.DESCRIPTOR.services_by_name["ClaimService"].full_name
# The methods registered with gRPC core (see the module docstring).
HOT_METHODS = frozenset({f"/{_CLAIMS}/Claim", f"/{_CLAIMS}/ClaimBatch"})


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
    """A handler layers wrap: unary-unary or unary-stream."""
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


# ------------------------------------------------------------------ layers


def decoded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Parse the request here: what does not parse is INVALID_ARGUMENT with the parser's reason.
    A handler without a deserializer takes bytes and answers for them itself (ClaimBatch)."""
    if not wrappable(handler) or handler.request_deserializer is None:
        return handler
    parse, behaviour = handler.request_deserializer, behaviour_of(handler)

    async def parsed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the request's fault
            await abort_with(context, "MALFORMED_REQUEST",
                             f"request is not a valid {method} message: {exc}"[:300], field="")
        return await behaviour(request, context)

    return rewrapped(handler, parsed, raw=True)


def authenticated(credentials: Credentials) -> Layer:
    """Authenticate every claimcore call and keep channels out of AdminService."""

    def layer(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not wrappable(handler) or method.startswith(OPEN_PREFIXES):
            return handler
        behaviour, admin_only, identify = behaviour_of(handler), method.startswith(ADMIN_SERVICE), \
            credentials.identify

        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key = bearer_key(context.invocation_metadata())
            caller = identify(key) if key else None
            if caller is None:
                if key is None:
                    await abort_with(context, "API_KEY_MISSING",
                                     "no API key (metadata authorization: Bearer <key>)")
                await abort_with(context, "API_KEY_UNKNOWN", "unknown API key")
            if admin_only and not caller.admin:
                await abort_with(context, "ADMIN_REQUIRED",
                                 f"channel {caller.name!r} may not call {method}: admin credential needed")
            with acting_as(caller):
                return await behaviour(request, context)

        return rewrapped(handler, run)

    return layer


# ------------------------------------------------------------------ the pipeline


class Pipeline(grpc.GenericRpcHandler):
    """Give it to the generated add_*_to_server functions in place of the server, then `install` it.

    `layers` are outermost first; `on_unknown(method)` hears of each call of a method nobody serves
    (gRPC answers it UNIMPLEMENTED).
    """

    def __init__(self, layers: Iterable[Layer], on_unknown: Callable[[str], None] | None = None) -> None:
        self.layers = list(layers)
        self.on_unknown = on_unknown
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}  # full method name -> wrapped handler
        self._generic_only: set[str] = set()  # services that came without their handlers

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        # The generated code gives each service twice: as an opaque generic handler, then as its
        # method handlers (add_registered_method_handlers), which is what gets wrapped and served.
        for handler in handlers:
            self._generic_only.add(handler.service_name())

    def add_registered_method_handlers(self, service: str,
                                       handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._generic_only.discard(service)
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            for layer in reversed(self.layers):
                handler = layer(method, handler)
            self.handlers[method] = handler

    def install(self, server: grpc.aio.Server) -> None:
        if self._generic_only:
            raise RuntimeError(f"services given without their method handlers: {sorted(self._generic_only)}")
        server.add_generic_rpc_handlers((self,))
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in HOT_METHODS & self.handlers.keys():
            service, _, name = method[1:].partition("/")
            by_service.setdefault(service, {})[name] = self.handlers[method]
        for service, hot in by_service.items():
            server.add_registered_method_handlers(service, hot)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self.handlers.get(details.method)
        if handler is None and self.on_unknown is not None:
            self.on_unknown(details.method)
        return handler
