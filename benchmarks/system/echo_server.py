"""The ceiling of a Python gRPC front node: ClaimService on grpc.aio + uvloop that does no work.

Each call is answered at once with a reply of the size claimcore would send:
`--reply granted` gives a GRANTED reply with a full voucher built from the
request (the size of claimcore's granting replies), `--reply sold-out` a bare
SOLD_OUT (the size of its sold-out replies). No validation, no Redis.

    python -m benchmarks.system.echo_server --port 50061 [--reply granted|sold-out]
"""

from __future__ import annotations

import argparse
import itertools
import time

import grpc
import uvloop
from benchmarks.system.common import CATEGORY, MIN_SPEND_CENTS, VALUE_CENTS, serve

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc


class EchoService(pb_grpc.ClaimServiceServicer):
    def __init__(self, granted: bool) -> None:
        self.granted = granted
        self.seq = itertools.count(1)

    def reply(self, req: pb.ClaimRequest) -> pb.ClaimResponse:
        if not self.granted:
            return pb.ClaimResponse(outcome=pb.OUTCOME_SOLD_OUT)
        return pb.ClaimResponse(outcome=pb.OUTCOME_GRANTED, voucher=pb.Voucher(
            voucher_id=f"{req.campaign_id}-3-{next(self.seq)}", campaign_id=req.campaign_id,
            user_id=req.user_id, request_id=req.request_id, granted_at_ms=time.time_ns() // 1_000_000,
            value_cents=VALUE_CENTS, min_spend_cents=MIN_SPEND_CENTS, category=CATEGORY,
            channel_id=req.channel_id,
        ))

    async def Claim(self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext) -> pb.ClaimResponse:
        return self.reply(request)

    async def ClaimBatch(self, request: pb.ClaimBatchRequest,
                         context: grpc.aio.ServicerContext) -> pb.ClaimBatchResponse:
        return pb.ClaimBatchResponse(replies=[self.reply(c) for c in request.claims])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", choices=["granted", "sold-out"], default="granted")
    args = parser.parse_args()
    uvloop.run(serve(EchoService(args.reply == "granted"), args.port))


if __name__ == "__main__":
    main()
