"""The node's wall clock, in one place.

The node's clock is not an authority: two nodes' clocks disagree, and
nothing another node may contradict is decided by it. Whatever must be
decided once (a voucher's expiry, a hold's deadline, a round's release) is
judged inside Redis by the shard's or registry's own `TIME`, and every later
script follows the record that decision left. The node's clock only stamps
what it alone answers (log lines, figures shown to operators) and picks
deadlines it checks against itself.

Every module asks this one for the time (`from claimcore.clock import now_ms`), so a test can
move it for the whole process: CLAIMCORE_TEST_CLOCK_OFFSET_MS shifts it (tests and the
simulation run nodes whose clocks are off by a few milliseconds, or by seconds), and `frozen`
stops it at one instant (gubernator's clock.Freeze, envoy's TimeSource).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

_offset_ns = int(os.environ.get("CLAIMCORE_TEST_CLOCK_OFFSET_MS", "0") or 0) * 1_000_000
_frozen_ms: int | None = None


def now_ms() -> int:
    """Unix time in milliseconds, by this node's (possibly offset or frozen) clock."""
    if _frozen_ms is not None:
        return _frozen_ms
    return (time.time_ns() + _offset_ns) // 1_000_000


@contextlib.contextmanager
def frozen(at_ms: int) -> Iterator[None]:
    """Within this block the clock reads `at_ms` (tests only; not for a serving node)."""
    global _frozen_ms
    before, _frozen_ms = _frozen_ms, int(at_ms)
    try:
        yield
    finally:
        _frozen_ms = before


def set_offset_ms(offset_ms: int) -> None:
    """Shift this process's clock (tests only)."""
    global _offset_ns
    _offset_ns = int(offset_ms) * 1_000_000
