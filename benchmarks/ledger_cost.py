"""What the ledger costs Redis: `python -m benchmarks.ledger_cost [--batch 64] [--rounds 5]`.

Runs claim.lua as shipped (one XADD per call that granted) side by side with
the same script with its XADD line taken out, on one private redis-server,
alternating in rounds, and reports Redis CPU per grant (INFO commandstats) for
each and their ratio. Both grant the same users the same way; only the log
differs.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics

import redis

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.store import scripts
from claimcore.store.keyspace import shard_keys, voucher_prefix


def without_ledger(source: str) -> str:
    kept = [line for line in source.splitlines() if "redis.call('XADD'" not in line]
    assert len(kept) == len(source.splitlines()) - 1, "claim.lua's XADD line not found"
    return "\n".join(kept) + "\n"


def grant_round(client: redis.Redis, sha: str, campaign: str, batch: int, calls: int) -> float:
    """Grant calls x batch new users on one shard; returns Redis µs spent in EVALSHA."""
    client.config_resetstat()
    keys = shard_keys(campaign, 0).claim
    for c in range(calls):
        items = [x for i in range(batch) for x in (f"u{c}-{i}", "r", "app")]
        client.evalsha(sha, 4, *keys, 1_795_000_000_000, voucher_prefix(campaign, 0), 0, *items)
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="claims per claim.lua call")
    parser.add_argument("--calls", type=int, default=500, help="calls per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {"with ledger": scripts.CLAIM.source, "without ledger": without_ledger(scripts.CLAIM.source)}
    per_grant: dict[str, list[float]] = {name: [] for name in variants}
    with EmbeddedRedis() as server:
        client = redis.Redis(port=server.port, decode_responses=True)
        shas = {name: client.script_load(src) for name, src in variants.items()}
        assert shas["with ledger"] == hashlib.sha1(scripts.CLAIM.source.encode()).hexdigest()
        grants = args.batch * args.calls
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                campaign = f"{name.replace(' ', '-')}-{r}"
                client.hset(shard_keys(campaign, 0).state, mapping={  # as init_shard.lua makes it
                    "stock": grants + 1, "seq": 0, "granted": 0, "limit": 1, "starts": 0, "ends": 0,
                    "paused": 0})
                usec = grant_round(client, shas[name], campaign, args.batch, args.calls)
                assert int(client.hget(shard_keys(campaign, 0).state, "granted")) == grants
                per_grant[name].append(usec / grants)
        client.close()
    with_, without = (statistics.median(per_grant[n]) for n in variants)
    print(f"claim.lua, {args.batch} claims per call, {args.calls} calls x {args.rounds} rounds per variant:")
    print(f"  with ledger     {with_:6.2f} µs Redis CPU per grant")
    print(f"  without ledger  {without:6.2f} µs Redis CPU per grant")
    print(f"  ratio           {with_ / without:6.2f}x")


if __name__ == "__main__":
    main()
