"""The one node clock (claimcore.clock): every module reads it, and a test can freeze or offset it."""

from __future__ import annotations

import time

from claimcore import clock
from claimcore.lifecycle import rounds
from claimcore.node import claim_service


def test_frozen_clock_reads_one_instant_everywhere_and_restores() -> None:
    with clock.frozen(1_700_000_000_000):
        assert clock.now_ms() == 1_700_000_000_000
        # modules that imported the function by name read the same frozen clock
        assert rounds.now_ms() == claim_service.now_ms() == 1_700_000_000_000
        with clock.frozen(1_700_000_000_500):
            assert clock.now_ms() == 1_700_000_000_500
        assert clock.now_ms() == 1_700_000_000_000
    assert abs(clock.now_ms() - time.time_ns() // 1_000_000) < 1_000


def test_offset_shifts_the_clock() -> None:
    try:
        clock.set_offset_ms(-60_000)
        assert 59_000 < time.time_ns() // 1_000_000 - clock.now_ms() < 61_000
    finally:
        clock.set_offset_ms(0)
    assert abs(clock.now_ms() - time.time_ns() // 1_000_000) < 1_000
