"""The campaign's remaining stock read from a node while a load runs, for the report's stock chart.

The report draws stock remaining from the replies the generator received (inventory minus first
grants); these readings are the server's own figure beside it, so a difference between the two
(grants the generator never heard of, stock coming back) shows on the chart. One GetCampaign
every INTERVAL_S on its own thread and channel: an admin call, off the claim path.
"""

from __future__ import annotations

import threading
import time

import grpc

from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc

INTERVAL_S = 0.25


class StockSampler:
    def __init__(self, target: str, campaign_id: str, interval_s: float = INTERVAL_S) -> None:
        self.target = target
        self.campaign_id = campaign_id
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (seconds since the load started, remaining)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, at_unix: float) -> None:
        """Read from `at_unix` (wall clock: when the workers start sending) until stop()."""
        self._thread = threading.Thread(target=self._run, args=(at_unix,), name="stock-sampler", daemon=True)
        self._thread.start()

    def latest(self) -> int | None:
        """The last reading (the progress line shows it), None before the first."""
        return self.samples[-1][1] if self.samples else None

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def _run(self, origin: float) -> None:
        self._stop.wait(max(0.0, origin - time.time()))
        with access.dial(self.target) as channel:
            admin = claims_pb2_grpc.AdminServiceStub(channel)
            request = claims_pb2.GetCampaignRequest(campaign_id=self.campaign_id)
            while not self._stop.is_set():
                asked = time.time()
                try:
                    info = admin.GetCampaign(request, timeout=max(0.5, self.interval_s)).campaign
                except grpc.RpcError:
                    pass  # a missed reading is a gap in the dots, not a failed run
                else:
                    # the figure is as of some moment during the call: its midpoint
                    self.samples.append((round((asked + time.time()) / 2 - origin, 3), int(info.remaining)))
                self._stop.wait(self.interval_s)
