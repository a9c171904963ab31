"""The one error map: every error raised below a service becomes one gRPC status here.

The three services (claim_service, redeem_service, admin_service) end their calls through
`abort_for` (the hot path) or `grpc_errors` (everything else), so an error means the same
status whichever service meets it. Business outcomes never come here: they travel in the
reply (see the proto header). Anything this map does not know is INTERNAL, never UNKNOWN, and
is logged once per kind and UNEXPECTED_LOG_EVERY_S, with a count of the ones not logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
import redis.exceptions

from claimcore import validation as v
from claimcore.lifecycle.snregistry import SnHoldLost
from claimcore.node.batcher import Overloaded
from claimcore.security import auth
from claimcore.store.campaign_cache import CampaignNotFound
from claimcore.store.cluster_calls import ReplicaAckTimeout
from claimcore.store.replies import BorrowContention, ShardMissing, ShardMoving, StaleMap
from claimcore.store.reshard import ReshardBusy, ReshardRefused

log = logging.getLogger(__name__)

UNKNOWN_OUTCOME = "outcome unknown, retry with the same request_id or call GetClaim"
UNEXPECTED_LOG_EVERY_S = 10.0  # an unexpected error is logged once per this, per kind, with a count
_unexpected: dict[str, tuple[float, int]] = {}  # error type -> (monotonic time last logged, since then)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for an error raised below the service, or None if unexpected."""
    if isinstance(exc, v.InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, auth.PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, CampaignNotFound):
        return grpc.StatusCode.NOT_FOUND, f"no campaign {exc}"
    if isinstance(exc, ReshardBusy):
        return grpc.StatusCode.ABORTED, str(exc)
    if isinstance(exc, ReshardRefused):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"node overloaded, retry later: {exc}"
    if isinstance(exc, SnHoldLost):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}"
    if isinstance(exc, (BorrowContention, StaleMap, ShardMoving)):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; {UNKNOWN_OUTCOME}"
    if isinstance(exc, ShardMissing):
        return grpc.StatusCode.FAILED_PRECONDITION, f"campaign state incomplete: {exc}"
    if isinstance(exc, ReplicaAckTimeout):
        return grpc.StatusCode.UNAVAILABLE, f"grant not yet safe from a failover; {UNKNOWN_OUTCOME}: {exc}"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError, OSError)):
        return grpc.StatusCode.UNAVAILABLE, f"redis unavailable; {UNKNOWN_OUTCOME}: {exc}"
    if isinstance(exc, redis.exceptions.ResponseError):
        return grpc.StatusCode.UNAVAILABLE, f"redis refused: {exc}"
    return None


def log_unexpected(exc: BaseException, campaign: str = "", request_id: str = "") -> None:
    """One line (with its traceback) per kind of unexpected error and `UNEXPECTED_LOG_EVERY_S`,
    counting the ones not logged: a bug hit by every claim must not log every claim."""
    kind = type(exc).__name__
    now = time.monotonic()
    last, skipped = _unexpected.get(kind, (-UNEXPECTED_LOG_EVERY_S, 0))
    if now - last < UNEXPECTED_LOG_EVERY_S:
        _unexpected[kind] = (last, skipped + 1)
        return
    _unexpected[kind] = (now, 0)
    fields = {"code": "INTERNAL", "error": kind, "not_logged_before": skipped}
    if campaign:
        fields["campaign"] = campaign
    if request_id:
        fields["request_id"] = request_id
    log.error("unexpected error: answered INTERNAL", exc_info=exc, extra=fields)


async def abort_for(context: grpc.aio.ServicerContext, exc: Exception, campaign: str = "",
                    request_id: str = "") -> NoReturn:
    """End the call with the status for `exc`; anything unexpected is INTERNAL, never UNKNOWN
    (and logged, with the campaign and request_id when the caller names them)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    mapped = status_for(exc)
    if mapped is None:
        log_unexpected(exc, campaign, request_id)
        mapped = (grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
    await context.abort(*mapped)
    raise AssertionError("context.abort returned")


@contextlib.asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """`abort_for` as a context manager, for the calls off the hot path."""
    try:
        yield
    except Exception as exc:
        await abort_for(context, exc)
