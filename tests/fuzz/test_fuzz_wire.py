"""Raw bytes on the wire, for every RPC, through a real node (issue 7).

Each call goes through a generic `channel.unary_unary` with identity (de)serializers, so the node
gets exactly the bytes made here: random bytes, truncated valid messages, valid messages with
unknown fields, invalid UTF-8 inside a string field, and messages over the node's receive limit.

The oracle, decided from the bytes alone:
- above the receive limit (server.py: grpc.max_receive_message_length, 1 MiB): RESOURCE_EXHAUSTED;
- bytes this protobuf runtime cannot decode (the node runs the same one): INTERNAL with grpcio's own
  "Exception deserializing request!" (its built-in answer; the handler never runs);
- bytes it can decode: what the typed fuzzing allows for that RPC (test_fuzz_rpcs.ALLOWED), never
  UNKNOWN or INTERNAL;
and always: no change in Redis unless OK, the node alive, and SERVING at the end.
"""

from __future__ import annotations

import os
from collections import Counter

import grpc
import pytest
import redis
import test_fuzz_rpcs as rpcs
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_fuzz_rpcs import ALLOWED, MAX_RECEIVE, METHODS, TARGETS, VALID, C, method_path, names_a_field

from conftest import LocalNode, health_status, redis_dump

# This module's own redis-server, node and targets: the same fixtures, a fresh instance (module scope).
fuzz_redis = rpcs.fuzz_redis
fuzz_node = rpcs.fuzz_node
fuzz_channel = rpcs.fuzz_channel
fuzz_redis_client = rpcs.fuzz_redis_client
world = rpcs.world
report_stats = rpcs.report_stats

EXAMPLES = max(5, int(os.environ.get("CLAIMCORE_FUZZ_EXAMPLES", "25")) // 2)
# No shrinking: the failing bytes are in the assertion, and shrinking costs hundreds of calls.
WIRE_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, report_multiple_bugs=False,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def raw_call(ch: grpc.Channel, rpc: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    method = METHODS[rpc]
    try:
        if method.server_streaming:  # a watch never ends by itself: its first message, then cancel
            stream = ch.unary_stream(method_path(method), request_serializer=None,
                                     response_deserializer=None)(data, timeout=30)
            try:
                next(stream)
            finally:
                stream.cancel()
        else:
            ch.unary_unary(method_path(method), request_serializer=None, response_deserializer=None)(
                data, timeout=30)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    except StopIteration:  # the stream ended without a message: its status is OK
        return C.OK, ""
    return C.OK, ""


def decodes(rpc: str, data: bytes) -> bool:
    try:
        GetMessageClass(METHODS[rpc].input_type).FromString(data)
    except DecodeError:
        return False
    return True


def exercise_raw(ch: grpc.Channel, client: redis.Redis, node: LocalNode, rpc: str, data: bytes,
                 counts: Counter[tuple[str, str]]) -> grpc.StatusCode:
    before = redis_dump(client, *TARGETS)
    code, details = raw_call(ch, rpc, data)
    counts[rpc, code.name] += 1
    shown = data[:120]
    assert node.alive(), f"node died on {rpc}({shown!r}):\n{node.log_tail()}"
    assert code != C.UNKNOWN, (rpc, details, shown)
    if len(data) > MAX_RECEIVE:
        assert code == C.RESOURCE_EXHAUSTED, (rpc, code, details, len(data))
    elif not decodes(rpc, data):
        # grpc.aio alone answers UNKNOWN ("Unexpected <class DecodeError>"); the node's decoding layer
        # makes it INVALID_ARGUMENT with the parser's reason.
        assert code == C.INVALID_ARGUMENT and "not a valid" in details, (rpc, code, details, shown)
    else:
        assert code == C.OK or code in ALLOWED[rpc], (rpc, code, details, shown)
        if code == C.INVALID_ARGUMENT:
            assert names_a_field(details, rpc), (rpc, details)
    if code != C.OK:
        assert details.strip(), (rpc, code)
        assert redis_dump(client, *TARGETS) == before, f"{rpc} rejected {shown!r} but changed Redis"
    return code


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def string_fields(rpc: str) -> list[FieldDescriptor]:
    return [f for f in METHODS[rpc].input_type.fields if f.type == FieldDescriptor.TYPE_STRING]


RPCS = sorted(METHODS)
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok\x80", b"\xe2\x82"]


@pytest.mark.parametrize("rpc", RPCS)
def test_random_bytes(rpc, fuzz_channel, fuzz_redis_client, fuzz_node, world, report_stats):
    @WIRE_SETTINGS
    @given(data=st.one_of(st.binary(max_size=2000),
                          st.sampled_from([b"", b"\x00", b"\xff" * 64, b"\x0a\xff"])))
    def run(data: bytes) -> None:
        exercise_raw(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, data, report_stats)

    run()


@pytest.mark.parametrize("rpc", RPCS)
def test_truncated_and_extended_valid_messages(rpc, fuzz_channel, fuzz_redis_client, fuzz_node, world,
                                               report_stats):
    """A valid request cut short, or followed by unknown fields (which a decoder must skip), or mutated."""
    @WIRE_SETTINGS
    @given(base=VALID[rpc], how=st.sampled_from(["cut", "unknown", "flip"]), at=st.integers(0, 10_000),
           extra=st.binary(max_size=40))
    def run(base: Message, how: str, at: int, extra: bytes) -> None:
        data = base.SerializeToString()
        if how == "cut":
            data = data[: at % (len(data) + 1)]
        elif how == "unknown":  # field 1000: a varint and a length-delimited blob, both unknown
            data += tag(1000, 0) + varint(at) + length_delimited(1001, extra)
        elif data:
            i = at % len(data)
            data = data[:i] + bytes([data[i] ^ (1 + at % 255)]) + data[i + 1:]
        exercise_raw(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, data, report_stats)

    run()


@pytest.mark.parametrize("rpc", [r for r in RPCS if string_fields(r)])
def test_invalid_utf8_in_string_fields(rpc, fuzz_channel, fuzz_redis_client, fuzz_node, world, report_stats):
    """proto3 strings must be UTF-8: a node decoding them must refuse, not store mojibake."""
    for field in string_fields(rpc):
        for bad in INVALID_UTF8:
            data = length_delimited(field.number, bad)
            assert not decodes(rpc, data)
            code = exercise_raw(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, data, report_stats)
            assert code == C.INVALID_ARGUMENT


@pytest.mark.parametrize("rpc", RPCS)
def test_over_the_receive_limit(rpc, fuzz_channel, fuzz_redis_client, fuzz_node, world, report_stats):
    """Just above 1 MiB is RESOURCE_EXHAUSTED, whatever the bytes; just below is decoded as usual."""
    for size in (MAX_RECEIVE + 1, 4 * MAX_RECEIVE):
        for data in (b"\xff" * size, (length_delimited(1000, b"a" * size))[:size]):
            assert exercise_raw(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, data, report_stats) \
                == C.RESOURCE_EXHAUSTED
    payload = MAX_RECEIVE - len(tag(1000, 2)) - len(varint(MAX_RECEIVE))
    just_below = length_delimited(1000, b"a" * payload)  # an unknown field filling exactly 1 MiB
    assert len(just_below) == MAX_RECEIVE and decodes(rpc, just_below)
    assert exercise_raw(fuzz_channel, fuzz_redis_client, fuzz_node, rpc, just_below, report_stats) \
        != C.RESOURCE_EXHAUSTED


def test_node_still_serving(fuzz_node, report_stats):
    assert fuzz_node.alive()
    assert health_status(fuzz_node.address) == health_pb2.HealthCheckResponse.SERVING
