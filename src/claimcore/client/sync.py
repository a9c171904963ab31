"""SyncClaimClient: ClaimClient for thread-based app backends (Django, Flask, a thread pool).

    with SyncClaimClient(["10.0.0.5:50051", "10.0.0.6:50051"]) as client:
        reply = client.claim("spring-2027", user_id="u-123")   # blocks this thread only

One background thread runs an asyncio event loop holding a ClaimClient; every
method hands its call to that loop and blocks the calling thread until the
answer. So claims made at once by many threads are batched together exactly
as concurrent coroutines' are, and deadlines, retries and errors are the same
(AioRpcError, ClaimOutcomeUnknown). Thread-safe; close() (or the with block)
stops the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from claimcore.client.batching import BatchStats
from claimcore.client.claims import ClaimClient
from claimcore.v1 import claims_pb2 as pb

T = TypeVar("T")


class SyncClaimClient:
    def __init__(self, targets: Sequence[str], **options: Any) -> None:
        """The same arguments as ClaimClient (deadline_s, max_attempts, backoff_s, reach,
        connections_per_node, max_batch, linger_s, metadata)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="claimcore-client",
                                        daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> ClaimClient:  # grpc.aio channels belong to the loop that made them
            return ClaimClient(targets, **options)

        try:
            self.client = self._run(make())
        except BaseException:
            self._stop()
            raise

    def __enter__(self) -> SyncClaimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish the calls in flight, close the connections, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            call.close()
            raise RuntimeError("SyncClaimClient is closed")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    @property
    def retries(self) -> int:
        return self.client.retries

    @property
    def batching(self) -> BatchStats:
        return self.client.batching

    def claim(self, campaign_id: str, user_id: str, request_id: str | None = None, channel_id: str = "",
              *, device_id: str = "", client_ip: str = "", timeout: float | None = None,
              metadata: Sequence[tuple[str, str]] = ()) -> pb.ClaimResponse:
        """ClaimClient.claim, blocking: batched with the other threads' claims."""
        return self._run(self.client.claim(campaign_id, user_id, request_id, channel_id,
                                           device_id=device_id, client_ip=client_ip, timeout=timeout,
                                           metadata=metadata))

    def claim_batch(self, claims: Sequence[pb.ClaimRequest], *, timeout: float | None = None,
                    metadata: Sequence[tuple[str, str]] = ()) -> pb.ClaimBatchResponse:
        return self._run(self.client.claim_batch(claims, timeout=timeout, metadata=metadata))

    def get_claim(self, campaign_id: str, user_id: str, request_id: str = "", *,
                  timeout: float | None = None,
                  metadata: Sequence[tuple[str, str]] = ()) -> pb.GetClaimResponse:
        return self._run(self.client.get_claim(campaign_id, user_id, request_id, timeout=timeout,
                                               metadata=metadata))

    def redeem(self, campaign_id: str, user_id: str, voucher_ids: Sequence[str], merchant_id: str,
               order_id: str, order_amount_cents: int, *, sn_codes: Sequence[str] = (),
               channel_id: str = "", stacked: Mapping[str, Sequence[str]] | None = None,
               timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()) -> pb.RedeemResponse:
        return self._run(self.client.redeem(
            campaign_id, user_id, voucher_ids, merchant_id, order_id, order_amount_cents,
            sn_codes=sn_codes, channel_id=channel_id, stacked=stacked, timeout=timeout, metadata=metadata))

    def reverse(self, campaign_id: str, user_id: str, order_id: str, *, timeout: float | None = None,
                metadata: Sequence[tuple[str, str]] = ()) -> pb.ReverseResponse:
        return self._run(self.client.reverse(campaign_id, user_id, order_id, timeout=timeout,
                                             metadata=metadata))

    def release(self, campaign_id: str, user_id: str, voucher_id: str, *, timeout: float | None = None,
                metadata: Sequence[tuple[str, str]] = ()) -> pb.ReleaseResponse:
        return self._run(self.client.release(campaign_id, user_id, voucher_id, timeout=timeout,
                                             metadata=metadata))
