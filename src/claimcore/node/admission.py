"""Admission control: a token bucket per campaign shard, in front of Redis.

A campaign's admission_rate is claims per second per front node; it is split
evenly over the shards (users hash evenly onto shards), each shard getting a
GCRA bucket from the Cython hot path. A claim beyond the rate is answered
RATE_LIMITED with the time until it would be admitted, instead of queueing:
during a launch burst, queueing only turns overload into timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from claimcore._fast import TokenBucket
from claimcore.campaign import CampaignConfig


class Admission:
    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self._buckets: dict[tuple[str, int, int], TokenBucket] = {}

    def admit(self, config: CampaignConfig, shard: int) -> int:
        """0 if admitted, else milliseconds to wait before retrying."""
        if config.admission_rate <= 0:
            return 0
        key = (config.campaign_id, config.epoch, shard)  # a reshard splits the rate anew
        bucket = self._buckets.get(key)
        if bucket is None:
            burst = config.admission_burst or config.admission_rate
            bucket = self._buckets[key] = TokenBucket(
                config.admission_rate / config.shards, max(1, burst // config.shards)
            )
        wait_ns = bucket.take(self._clock_ns(), 1)
        return 0 if wait_ns == 0 else max(1, -(-wait_ns // 1_000_000))
