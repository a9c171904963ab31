"""The one error map: every error raised below a service becomes one gRPC status here.

The three services (claim_service, redeem_service, admin_service) end their calls through
`abort_for` (the hot path) or `grpc_errors` (everything else), and the call pipeline (pipeline.py:
undecodable requests, API keys) through `abort_with`, so an error means the same status whichever
service meets it. Business outcomes never come here: they travel in the reply (see the proto
header). Anything this map does not know is INTERNAL, never UNKNOWN, and is logged once per kind
and UNEXPECTED_LOG_EVERY_S, with a count of the ones not logged.

Every status sent from here carries its details for clients in any language (ErrorInfo with a
stable reason, BadRequest, RetryInfo: error_details.py, docs/errors.md).
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
from claimcore.node.error_details import (  # noqa: F401 - abort_with, REASONS, DETAILS_KEY: for the callers
    DETAILS_KEY,
    REASONS,
    Error,
    abort_error,
    abort_with,
    error,
    field_of,
)
from claimcore.security import auth
from claimcore.store.campaign_cache import CampaignNotFound
from claimcore.store.cluster_calls import ReplicaAckTimeout
from claimcore.store.replies import BorrowContention, EpochRefusal, ShardMissing, ShardMoving, StaleMap
from claimcore.store.reshard import ReshardBusy, ReshardRefused

log = logging.getLogger(__name__)

UNKNOWN_OUTCOME = "outcome unknown, retry with the same request_id or call GetClaim"
UNEXPECTED_LOG_EVERY_S = 10.0  # an unexpected error is logged once per this, per kind, with a count
_unexpected: dict[str, tuple[float, int]] = {}  # error type -> (monotonic time last logged, since then)


def error_for(exc: BaseException, campaign: str = "") -> Error | None:
    """The Error for an exception raised below the service, or None if unexpected; `campaign`: the
    campaign the call was about, when the caller knows it (ErrorInfo metadata campaign_id)."""
    if campaign and v.CAMPAIGN_ID.fullmatch(campaign) is None:
        campaign = ""  # unchecked input (the call may be refused for it): not echoed in the metadata
    if isinstance(exc, v.InvalidInput):
        reason = "MALFORMED_REQUEST" if isinstance(exc, v.MalformedRequest) else "INVALID_FIELD"
        return error(reason, str(exc), field_of(exc), campaign_id=campaign)
    if isinstance(exc, auth.PermissionDenied):
        return error(exc.reason, str(exc), campaign_id=campaign)
    if isinstance(exc, CampaignNotFound):
        return error("CAMPAIGN_NOT_FOUND", f"no campaign {exc}", campaign_id=str(exc))
    if isinstance(exc, ReshardBusy):
        return error("RESHARD_BUSY", str(exc), campaign_id=campaign)
    if isinstance(exc, ReshardRefused):
        return error("RESHARD_UNFINISHED", str(exc), campaign_id=campaign)
    if isinstance(exc, Overloaded):
        return error("NODE_OVERLOADED", f"node overloaded, retry later: {exc}", campaign_id=campaign)
    if isinstance(exc, SnHoldLost):
        return error("SN_HOLD_LOST", f"{exc}", campaign_id=campaign)
    if isinstance(exc, (BorrowContention, StaleMap, ShardMoving)):
        reason = ("BORROW_CONTENTION" if isinstance(exc, BorrowContention)
                  else "SHARD_MOVING" if isinstance(exc, ShardMoving) else "STALE_SHARD_MAP")
        if isinstance(exc, EpochRefusal):
            return error(reason, f"{exc}; {UNKNOWN_OUTCOME}", campaign_id=exc.campaign_id,
                         epoch=str(exc.epoch))
        return error(reason, f"{exc}; {UNKNOWN_OUTCOME}", campaign_id=campaign)
    if isinstance(exc, ShardMissing):
        return error("CAMPAIGN_INCOMPLETE", f"campaign state incomplete: {exc}", campaign_id=campaign)
    if isinstance(exc, ReplicaAckTimeout):
        return error("REPLICA_ACK_TIMEOUT", f"grant not yet safe from a failover; {UNKNOWN_OUTCOME}: {exc}",
                     campaign_id=campaign)
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError, OSError)):
        return error("REDIS_UNAVAILABLE", f"redis unavailable; {UNKNOWN_OUTCOME}: {exc}",
                     campaign_id=campaign)
    if isinstance(exc, redis.exceptions.ResponseError):
        return error("REDIS_REFUSED", f"redis refused: {exc}", campaign_id=campaign)
    return None


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for an error raised below the service, or None if unexpected."""
    found = error_for(exc)
    return None if found is None else (found.code, found.message)


# ------------------------------------------------------------------ ending a call


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
    err = error_for(exc, campaign)
    if err is None:
        log_unexpected(exc, campaign, request_id)
        err = error("INTERNAL", f"internal error: {type(exc).__name__}", campaign_id=campaign)
    await abort_error(context, err)


@contextlib.asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """`abort_for` as a context manager, for the calls off the hot path."""
    try:
        yield
    except Exception as exc:
        await abort_for(context, exc)
