"""Check a finished burst against the server's own figures.

Shared by `claimcore demo` and `claimcore loadgen`: merge the workers'
results, read the campaign (AdminService.GetCampaign), re-read a sample of
the grants clients saw (ClaimService.GetClaim), and build the report whose
checks decide the exit code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import grpc

from claimcore.loadtest.report import EXAMPLES_KEPT, build_report, merge_worker_results
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc


class ServerCheckError(RuntimeError):
    """The server could not be asked for its figures."""


def _rpc_error(exc: grpc.RpcError) -> str:
    return f"{exc.code().name} {exc.details()}"  # type: ignore[attr-defined]


def check_against_server(target: str, campaign_id: str, results: Sequence[dict[str, Any]],
                         verify_sample_size: int, seed: int, **report_fields: Any) -> dict[str, Any]:
    """The report of a run: its merged results judged against the server's figures."""
    merged = merge_worker_results(results)
    with access.dial(target) as channel:
        server = get_campaign(channel, campaign_id)
        checked, missing, lost_examples = verify_sample(
            channel, campaign_id, merged["pairs"], verify_sample_size, seed)
    return build_report(campaign_id=campaign_id, merged=merged, server=server, lost_vouchers=missing,
                        verified=checked, lost_examples=lost_examples, **report_fields)


def get_campaign(channel: grpc.Channel, campaign_id: str) -> dict[str, Any]:
    admin = claims_pb2_grpc.AdminServiceStub(channel)
    try:
        info = admin.GetCampaign(claims_pb2.GetCampaignRequest(campaign_id=campaign_id), timeout=30).campaign
    except grpc.RpcError as exc:
        raise ServerCheckError(f"GetCampaign failed: {_rpc_error(exc)}") from exc
    return {
        "granted": info.granted,
        "remaining": info.remaining,
        "sold_out_at_ms": info.sold_out_at_ms,
        "shards": [
            {"shard": s.shard, "granted": s.granted, "remaining": s.remaining} for s in info.shards
        ],
    }


def verify_sample(
    channel: grpc.Channel,
    campaign_id: str,
    pairs: Sequence[tuple[str, str]],
    sample: int,
    seed: int,
) -> tuple[int, int, list[str]]:
    """GetClaim(user_id) for a sample of client-seen grants: is each voucher recorded?

    Returns (checked, missing, examples).
    """
    by_user: dict[str, set[str]] = {}
    for user, voucher in pairs:
        by_user.setdefault(user, set()).add(voucher)
    users = sorted(by_user)
    if sample <= 0 or not users:
        return 0, 0, []
    chosen = random.Random(seed).sample(users, min(sample, len(users)))
    stub = claims_pb2_grpc.ClaimServiceStub(channel)
    missing = 0
    examples: list[str] = []
    for start in range(0, len(chosen), 100):
        batch = chosen[start : start + 100]
        futures = [
            stub.GetClaim.future(
                claims_pb2.GetClaimRequest(campaign_id=campaign_id, user_id=u), timeout=30
            )
            for u in batch
        ]
        for user, fut in zip(batch, futures, strict=True):
            try:
                reply = fut.result()
            except grpc.RpcError as exc:
                raise ServerCheckError(f"GetClaim({user}) failed: {_rpc_error(exc)}") from exc
            held = {v.voucher_id for v in reply.vouchers} if reply.found else set()
            absent = by_user[user] - held
            if absent:
                missing += 1
                if len(examples) < EXAMPLES_KEPT:
                    examples.append(
                        f"{user}: client saw {sorted(by_user[user])}, server holds {sorted(held)}"
                    )
    return len(chosen), missing, examples


# ---------------------------------------------------------------- the command
