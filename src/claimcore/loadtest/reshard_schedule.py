"""Reshards scheduled during a load run: `claimcore loadgen --reshard 16@1.5,4@4`.

An operator's rehearsal of resharding a hot campaign mid-launch: a thread
calls AdminService.Reshard at the given offsets (seconds after the load
starts sending) while the workers keep claiming; the loadgen report then
shows each reshard's figures next to the longest wait any claim saw.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from claimcore import validation
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc


def parse_schedule(text: str | None) -> list[tuple[int, float]]:
    """'16@1.5,4@4' -> [(16, 1.5), (4, 4.0)], in time order; ValueError with a clear message."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        try:
            shards, at = part.strip().split("@")
            step = (int(shards), float(at))
        except ValueError:
            raise ValueError(f"--reshard takes SHARDS@SECONDS[,SHARDS@SECONDS...], not {part!r}") from None
        if not 1 <= step[0] <= validation.MAX_SHARDS or step[1] < 0:
            raise ValueError(f"--reshard {part!r}: shards must be 1..{validation.MAX_SHARDS}, seconds >= 0")
        out.append(step)
    return sorted(out, key=lambda s: s[1])


@dataclass
class ReshardSchedule:
    target: str
    campaign_id: str
    steps: list[tuple[int, float]]
    done: list[dict[str, Any]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self, at_unix: float | None = None) -> None:
        """Begin counting the steps' offsets from `at_unix` (wall clock; default now). loadgen passes
        the moment its workers start sending, so "16@1.5" is 1.5 s into the load, as the report's
        time axis counts, not 1.5 s after the worker processes began to spawn."""
        if self.steps:
            origin = time.time() if at_unix is None else at_unix
            self._thread = threading.Thread(target=self._run, args=(origin,), name="reshard-schedule",
                                            daemon=True)
            self._thread.start()

    def join(self) -> list[dict[str, Any]]:
        if self._thread is not None:
            self._thread.join()
        return self.done

    def _run(self, origin: float) -> None:
        with access.dial(self.target) as channel:
            admin = claims_pb2_grpc.AdminServiceStub(channel)
            for shards, at in self.steps:
                time.sleep(max(0.0, origin + at - time.time()))
                at_unix = time.time()
                called = at_unix - origin
                try:
                    reply = admin.Reshard(claims_pb2.ReshardRequest(campaign_id=self.campaign_id,
                                                                    shards=shards), timeout=300)
                except grpc.RpcError as exc:
                    self.done.append({"to_shards": shards, "at_s": round(called, 3), "at_unix": at_unix,
                                      "error": f"{exc.code().name}: {exc.details()}"})  # type: ignore[attr-defined]
                    continue
                self.done.append({
                    "at_s": round(called, 3), "at_unix": at_unix,
                    "from_shards": reply.from_shards, "to_shards": reply.to_shards,
                    "epoch": reply.shard_epoch, "moved_users": reply.moved_users,
                    "moved_records": reply.moved_records, "moved_stock": reply.moved_stock,
                    "frozen_ms": reply.frozen_ms, "took_ms": reply.took_ms,
                })
