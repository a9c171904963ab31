"""The node's wall clock, in one place.

The node's clock is not an authority: two nodes' clocks disagree, and
nothing another node may contradict is decided by it. Whatever must be
decided once (a voucher's expiry, a hold's deadline, a round's release) is
judged inside Redis by the shard's or registry's own `TIME`, and every later
script follows the record that decision left. The node's clock only stamps
what it alone answers (log lines, figures shown to operators) and picks
deadlines it checks against itself.

CLAIMCORE_TEST_CLOCK_OFFSET_MS shifts this clock (tests and the simulation
run nodes whose clocks are off by a few milliseconds, or by seconds).
"""

from __future__ import annotations

import os
import time

_offset_ns = int(os.environ.get("CLAIMCORE_TEST_CLOCK_OFFSET_MS", "0") or 0) * 1_000_000


def now_ms() -> int:
    """Unix time in milliseconds, by this node's (possibly offset) clock."""
    return (time.time_ns() + _offset_ns) // 1_000_000


def set_offset_ms(offset_ms: int) -> None:
    """Shift this process's clock (tests only)."""
    global _offset_ns
    _offset_ns = int(offset_ms) * 1_000_000
