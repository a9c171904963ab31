"""A unary gRPC method handler rebuilt around new behaviour: what every server interceptor does.

grpc.unary_unary_rpc_method_handler builds a 7-field namedtuple (about 2 µs); the interceptors
(decode_errors, auth, metrics, tracing) rebuild a handler on every call, so they share this
slotted class instead.
"""

from __future__ import annotations

from typing import Any

import grpc


class UnaryHandler(grpc.RpcMethodHandler):
    __slots__ = ("unary_unary", "request_deserializer", "response_serializer")
    request_streaming = response_streaming = False
    unary_stream = stream_unary = stream_stream = None

    def __init__(self, unary_unary: Any, request_deserializer: Any, response_serializer: Any) -> None:
        self.unary_unary = unary_unary
        self.request_deserializer = request_deserializer
        self.response_serializer = response_serializer


def rewrapped(handler: grpc.RpcMethodHandler, behaviour: Any, *, raw: bool = False) -> UnaryHandler:
    """`handler` with `behaviour` as its unary-unary call; raw: the behaviour gets the request bytes."""
    return UnaryHandler(behaviour, None if raw else handler.request_deserializer, handler.response_serializer)
