"""Compiled vs twin, side by side: pytest benchmarks/test_bench_fast.py --benchmark-only.

Each round is 1,000 calls, so the per-call cost is the reported time / 1,000; in the
claim_wire group a round is one decode or one encode of a whole 100-claim batch.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import pytest

from claimcore._fast import NO_EXTENSIONS

CALLS = 1_000


def _load(stem: str, impl: str) -> ModuleType:
    if impl == "c" and NO_EXTENSIONS:
        pytest.skip("CLAIMCORE_NO_EXTENSIONS is set")
    return importlib.import_module(f"claimcore._fast._{stem}_{impl}")


# 1e6/s with 1,000 arrivals 700 ns apart: a mix of admissions and refusals.
TIMES = [i * 700 for i in range(CALLS)]


@pytest.mark.benchmark(group="token_bucket")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_take(benchmark, impl: str) -> None:
    mod = _load("token_bucket", impl)

    def fresh_bucket():
        return (mod.TokenBucket(1e6, 50),), {}

    def run(bucket) -> int:
        take = bucket.take
        admitted = 0
        for t in TIMES:
            if not take(t):
                admitted += 1
        return admitted

    admitted = benchmark.pedantic(run, setup=fresh_bucket, rounds=500, warmup_rounds=20)
    assert 0 < admitted < CALLS


_rng = random.Random(42)
USER_IDS = [f"user-{_rng.getrandbits(48):012x}" for _ in range(CALLS)]


@pytest.mark.benchmark(group="shard_of")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_shard_of(benchmark, impl: str) -> None:
    shard_of = _load("shard_hash", impl).shard_of

    def run() -> int:
        total = 0
        for uid in USER_IDS:
            total += shard_of(uid, 256)
        return total

    total = benchmark(run)
    assert 0 < total < 256 * CALLS


# One node flush at burst load: 8 lanes of 32 claims each, packed into one RESP write.
FLUSH = [
    (f"cc:{{launch:{s}}}:state", f"cc:{{launch:{s}}}:users", f"cc:{{launch:{s}}}:reqs",
     f"cc:{{launch:{s}}}:log", f"cc:{{launch:{s}}}:elig", f"launch-{s}-", "3", "0",
     [(f"u{s}{i:06d}", f"{s}{i:031x}", "bank-app") for i in range(32)])
    for s in range(8)
]


@pytest.mark.benchmark(group="claim_codec")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_pack_claims(benchmark, impl: str) -> None:
    pack = _load("claim_codec", impl).pack_claims
    packed = benchmark(pack, "f" * 40, FLUSH, 1_795_440_000_000)
    assert packed.count(b"EVALSHA") == 8


# The reply of one claim.lua call carrying 256 claims, as hiredis hands it over.
REPLY = [17] + [x for i in range(256) for x in (1, f"launch-3-{i}", "1795440000000")]


@pytest.mark.benchmark(group="claim_reply")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_unpack_claim_reply(benchmark, impl: str) -> None:
    from claimcore.store.replies import ItemResult

    unpack = _load("claim_codec", impl).unpack_claim_reply
    stock, results = benchmark(unpack, REPLY, ItemResult)
    assert stock == 17 and len(results) == 256


# One ClaimBatch of 100 claims as the node receives it, and its reply: every claim
# GRANTED with a full voucher. Each round is one decode or one encode of the batch.
def _claim_batch_bytes() -> bytes:
    from claimcore.v1 import claims_pb2 as pb

    return pb.ClaimBatchRequest(claims=[
        pb.ClaimRequest(campaign_id="launch-1", user_id=f"u{12345 + i}-67", request_id=f"req-{1234 + i:08d}",
                        channel_id="bench-app")
        for i in range(100)
    ]).SerializeToString()


BATCH_REPLIES = [
    (1, 0, "", (f"launch-1-7-{1000 + i}", "launch-1", f"u{12345 + i}-67", f"req-{1234 + i:08d}",
                1_795_440_000_000 + i, 500, 2_000, "electronics", "bench-app"))
    for i in range(100)
]


@pytest.mark.benchmark(group="claim_wire")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_claim_wire_decode(benchmark, impl: str) -> None:
    decode = _load("claim_wire", impl).decode_claim_batch
    rows, first_bad = benchmark(decode, _claim_batch_bytes())
    assert len(rows) == 100 and first_bad == -1


@pytest.mark.benchmark(group="claim_wire")
@pytest.mark.parametrize("impl", ["c", "py"])
def test_bench_claim_wire_encode(benchmark, impl: str) -> None:
    encode = _load("claim_wire", impl).encode_claim_batch_reply
    raw = benchmark(encode, BATCH_REPLIES)
    assert raw.count(b"bench-app") == 100
