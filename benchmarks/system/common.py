"""What the benchmark servers share: the gRPC server set-up of a claimcore node, and the campaign.

The echo server and the naive baseline are configured like claimcore's own
node (claimcore.node.server.Node), so the comparison measures the work done per
call and nothing else.
"""

from __future__ import annotations

import asyncio
import signal

import grpc

from claimcore.v1 import claims_pb2_grpc as pb_grpc

#: The options claimcore.node.server.Node gives its grpc.aio server.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 1 << 20),
    ("grpc.max_send_message_length", 4 << 20),
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]
MAX_CONCURRENT_RPCS = 20_000

#: Every benchmark campaign's voucher terms, so every server sends replies of the same size.
VALUE_CENTS = 5_000
MIN_SPEND_CENTS = 20_000
CATEGORY = "dining"


async def serve(servicer: pb_grpc.ClaimServiceServicer, port: int) -> None:
    """Serve ClaimService on 127.0.0.1:port until SIGTERM or SIGINT."""
    server = grpc.aio.server(maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS, options=SERVER_OPTIONS)
    pb_grpc.add_ClaimServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
