"""The details every error status of the node carries, for clients in any language (docs/errors.md).

A google.rpc.Status in the `grpc-status-details-bin` trailer, whose code and message are the call's,
with an ErrorInfo (a stable `reason` from REASONS, domain DOMAIN, metadata such as campaign_id), a
BadRequest naming the field for INVALID_ARGUMENT, and a RetryInfo where waiting is the cure. They
are built only on the error path; the parts that do not depend on the message are serialized once
per (reason, metadata) and kept (`_tail`).

errors.py maps exceptions to an Error; the call pipeline (pipeline.py) ends its refusals with
`abort_with`. This module imports nothing else of the node, so both can import it.
"""

from __future__ import annotations

import re
from typing import NamedTuple, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from claimcore import validation as v
from claimcore.v1 import claims_pb2

DOMAIN = "claimcore.dev"  # ErrorInfo.domain of every error the node sends
DETAILS_KEY = "grpc-status-details-bin"  # the trailer holding the serialized google.rpc.Status

C = grpc.StatusCode
# Every ErrorInfo reason the node sends -> (its status code, RetryInfo's delay in ms, 0 for none).
# Reasons are API: add new ones, never rename one (docs/errors.md is the table for clients).
REASONS: dict[str, tuple[grpc.StatusCode, int]] = {
    "INVALID_FIELD": (C.INVALID_ARGUMENT, 0),        # BadRequest names the field
    "MALFORMED_REQUEST": (C.INVALID_ARGUMENT, 0),    # bytes that are no such message; field ""
    "API_KEY_MISSING": (C.UNAUTHENTICATED, 0),
    "API_KEY_UNKNOWN": (C.UNAUTHENTICATED, 0),
    "ADMIN_REQUIRED": (C.PERMISSION_DENIED, 0),
    "CHANNEL_NOT_YOURS": (C.PERMISSION_DENIED, 0),
    "CAMPAIGN_CLOSED_TO_CHANNEL": (C.PERMISSION_DENIED, 0),
    "VOUCHER_OF_ANOTHER_CHANNEL": (C.PERMISSION_DENIED, 0),
    "ORDER_OF_ANOTHER_CHANNEL": (C.PERMISSION_DENIED, 0),
    "PERMISSION_DENIED": (C.PERMISSION_DENIED, 0),   # any other refusal of a known caller
    "CAMPAIGN_NOT_FOUND": (C.NOT_FOUND, 0),
    "CAMPAIGN_EXISTS": (C.ALREADY_EXISTS, 0),
    "CAMPAIGN_ARCHIVED": (C.FAILED_PRECONDITION, 0),
    "CAMPAIGN_OPEN": (C.FAILED_PRECONDITION, 0),
    "CAMPAIGN_INCOMPLETE": (C.FAILED_PRECONDITION, 0),
    "RESHARD_UNFINISHED": (C.FAILED_PRECONDITION, 0),
    "RESHARD_BUSY": (C.ABORTED, 1000),
    "NODE_OVERLOADED": (C.RESOURCE_EXHAUSTED, 200),
    "SHARD_MOVING": (C.UNAVAILABLE, 1000),
    "STALE_SHARD_MAP": (C.UNAVAILABLE, 50),
    "BORROW_CONTENTION": (C.UNAVAILABLE, 50),
    "SN_HOLD_LOST": (C.UNAVAILABLE, 100),
    "REPLICA_ACK_TIMEOUT": (C.UNAVAILABLE, 1000),
    "REDIS_UNAVAILABLE": (C.UNAVAILABLE, 1000),
    "REDIS_REFUSED": (C.UNAVAILABLE, 1000),
    "INTERNAL": (C.INTERNAL, 0),
}


class Error(NamedTuple):
    """What a call that failed answers: the status, and the details its trailer carries."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str | None = None  # INVALID_ARGUMENT: the field's path ("" for the request as a whole)
    metadata: tuple[tuple[str, str], ...] = ()  # ErrorInfo.metadata, e.g. (("campaign_id", "c1"),)


def error(reason: str, message: str, field: str | None = None, **metadata: str) -> Error:
    """The Error of one of the REASONS (KeyError for any other)."""
    return Error(REASONS[reason][0], message, reason, field, tuple((k, m) for k, m in metadata.items() if m))


# ------------------------------------------------------------------ the field of an InvalidInput


def _field_names() -> frozenset[str]:
    """Every field name of every message of the node's proto, nested messages included."""
    names: set[str] = set()
    todo = list(claims_pb2.DESCRIPTOR.message_types_by_name.values())
    while todo:
        message = todo.pop()
        names.update(f.name for f in message.fields)
        todo.extend(message.nested_types)
    return frozenset(names)


FIELD_NAMES = _field_names()
_LEADING_PATH = re.compile(r"[a-z][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z][a-z0-9_]*(?:\[\d+\])?)*(?=[ :]|$)")


def field_of(exc: v.InvalidInput) -> str:
    """The path of the field an InvalidInput is about: the one it was raised with, else the path its
    message starts with when that names a field of the proto ("name must be ..." -> "name"), else ""
    (no one field: a rule across fields, or bytes that do not decode)."""
    if exc.field is not None:
        return exc.field
    found = _LEADING_PATH.match(str(exc))
    if found and found.group().split("[", 1)[0].split(".", 1)[0] in FIELD_NAMES:
        return found.group()
    return ""


# ------------------------------------------------------------------ the trailer

_TAIL_CACHE_MAX = 4096
_tails: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _details_bytes(reason: str, metadata: tuple[tuple[str, str], ...], field: str | None,
                   message: str) -> bytes:
    """The details of a google.rpc.Status (its repeated field 3), serialized."""
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=dict(metadata)))]
    if field is not None:
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)])))
    retry_ms = REASONS[reason][1]
    if retry_ms:
        delay = duration_pb2.Duration(seconds=retry_ms // 1000, nanos=retry_ms % 1000 * 1_000_000)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(details=details).SerializeToString()


def _tail(err: Error) -> bytes:
    """The details of `err`, kept once per (reason, metadata) unless they hold the message."""
    if err.field is not None:
        return _details_bytes(err.reason, err.metadata, err.field, err.message)
    key = (err.reason, err.metadata)
    tail = _tails.get(key)
    if tail is None:
        if len(_tails) >= _TAIL_CACHE_MAX:
            _tails.clear()
        tail = _tails[key] = _details_bytes(err.reason, err.metadata, None, "")
    return tail


def status_details(err: Error) -> bytes:
    """The `grpc-status-details-bin` trailer of `err`: a serialized google.rpc.Status whose code and
    message are the call's (grpc_status.rpc_status.from_call checks that they match). Protobuf
    concatenates: the code and message, then the kept details."""
    return status_pb2.Status(code=err.code.value[0], message=err.message).SerializeToString() + _tail(err)


# ------------------------------------------------------------------ ending a call


async def abort_error(context: grpc.aio.ServicerContext, err: Error) -> NoReturn:
    """End the call with `err`, its details in the trailer."""
    await context.abort(err.code, err.message, ((DETAILS_KEY, status_details(err)),))
    raise AssertionError("context.abort returned")


async def abort_with(context: grpc.aio.ServicerContext, reason: str, message: str, field: str | None = None,
                     **metadata: str) -> NoReturn:
    """End the call with one of the REASONS, for a refusal that is no exception (pipeline.py)."""
    await abort_error(context, error(reason, message, field, **metadata))
