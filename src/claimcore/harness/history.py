"""A history of the claims clients made, and a checker of it against Redis' final state.

Fault tests record every claim attempt a client makes (one `Op` per RPC, retries
included) into a `History`, then check it against what Redis holds at the end:

    history = History()
    op = history.invoke(campaign_id, user_id, request_id)
    try:
        reply = await stub.Claim(request, timeout=1)
    except grpc.aio.AioRpcError as err:
        history.failed(op, err.code().name)      # INDETERMINATE, or REJECTED for INVALID_ARGUMENT...
    else:
        history.replied(op, reply)               # GRANTED / ALREADY_CLAIMED / SOLD_OUT / ...
    ...
    report = check_history(history, redis_client, campaign_id)
    assert report.ok, report.summary()

The checks (after the research notes on reliability, §2.4), over the
final state S (every shard's `reqs` and `users` hashes and counters) and the
history H:

- C1 no oversell: Σ granted <= inventory; Σ stock + stock in leases + held
  rounds + Σ granted == inventory; one record per grant; no voucher id twice;
  and the vouchers the world knows of (acknowledged or stored) <= inventory.
- C2 no user holds more than per_user_limit vouchers, in S or in H ∪ S.
- C3 every acknowledged GRANTED or ALREADY_CLAIMED voucher is in S with that
  user (a GRANTED one under its request_id). Each one missing counts as lost.
- C4 every grant in S was acknowledged, or is explained by an INDETERMINATE
  call with the same (user, request_id) (a phantom: counted, not a failure).
- C6 every ALREADY_CLAIMED names a real grant of that user, and every reply to
  one (user, request_id) named the same voucher.

C5 (real-time order of SOLD_OUT and GRANTED) is not checked: a node's
sold-out flag may be wrong for about a second by design (docs/architecture.md).

The checker assumes a claim-only history: releases, recycling, redemption and
reshards change the state in ways this history does not record.

Recording costs one lock and one list append per call; it is safe from
threads and from asyncio tasks alike.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from claimcore.campaign import CampaignConfig
from claimcore.store.keyspace import campaign_key, round_lease, shard_keys
from claimcore.store.replies import lease_credited, parse_lease

#: Outcomes that tell the client it holds a voucher.
ACKNOWLEDGED = frozenset({"GRANTED", "ALREADY_CLAIMED"})
#: The outcome of a call that failed without telling whether it granted.
INDETERMINATE = "INDETERMINATE"
#: The outcome of a call refused before anything was written (INVALID_ARGUMENT, NOT_FOUND, ...).
REJECTED = "REJECTED"
#: gRPC codes that say for sure that nothing was written; every other error is INDETERMINATE.
DEFINITE_ERRORS = frozenset({
    "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "PERMISSION_DENIED",
    "UNAUTHENTICATED", "UNIMPLEMENTED", "OUT_OF_RANGE",
})


@dataclass
class Op:
    """One claim attempt as its client saw it. Times are time.monotonic() seconds."""

    op_id: int
    campaign_id: str
    user_id: str
    request_id: str
    t_invoke: float
    t_complete: float | None = None
    outcome: str = INDETERMINATE   # until completed: an open call may have granted
    voucher_id: str = ""
    detail: str = ""               # the gRPC status code name of a failed call
    node: str = ""                 # which front node it went to, if the caller says

    @property
    def duration(self) -> float | None:
        return None if self.t_complete is None else self.t_complete - self.t_invoke


class History:
    """Every claim attempt clients made: safe to record into from threads and tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []

    def invoke(self, campaign_id: str, user_id: str, request_id: str, node: str = "") -> Op:
        with self._lock:
            op = Op(len(self._ops), campaign_id, user_id, request_id, time.monotonic(), node=node)
            self._ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, voucher_id: str = "", detail: str = "") -> Op:
        op.t_complete = time.monotonic()
        op.outcome, op.voucher_id, op.detail = outcome, voucher_id, detail
        return op

    def replied(self, op: Op, reply: Any) -> Op:
        """A ClaimResponse arrived (claimcore.v1.claims_pb2.ClaimResponse)."""
        from claimcore.v1 import claims_pb2 as pb
        from claimcore.v1 import short_name

        outcome = short_name(pb.Outcome, reply.outcome)
        voucher = reply.voucher.voucher_id if outcome in ACKNOWLEDGED else ""
        return self.complete(op, outcome, voucher)

    def failed(self, op: Op, code: str) -> Op:
        """The call ended with gRPC status `code` (a name such as "UNAVAILABLE"), or a
        client-side timeout or exception (pass any other word): INDETERMINATE unless the code
        says that nothing was written."""
        return self.complete(op, REJECTED if code in DEFINITE_ERRORS else INDETERMINATE, detail=code)

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def for_campaign(self, campaign_id: str) -> list[Op]:
        return [op for op in self.ops if op.campaign_id == campaign_id]

    def __len__(self) -> int:
        return len(self._ops)


# ---------------------------------------------------------------- the final state


@dataclass
class FinalState:
    """What Redis holds for one campaign, read shard by shard."""

    campaign_id: str
    inventory: int
    per_user_limit: int
    shard_slots: int
    stock: int = 0
    granted: int = 0           # Σ of the shards' `granted` counters
    in_leases: int = 0         # stock lent and not yet credited
    returning: int = 0         # recycled stock, claimable after its delay
    recycled: int = 0          # vouchers that came back to stock (expired, given up)
    held: int = 0              # inventory of rounds not released yet
    records: dict[tuple[str, str], str] = field(default_factory=dict)    # (user, request_id) -> voucher
    users: dict[str, tuple[int, str, list[str]]] = field(default_factory=dict)  # user -> count, last, rids

    def vouchers_of(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for (user, _), voucher in self.records.items():
            out[user].add(voucher)
        return out


def _hash(client: Any, key: str) -> dict[str, str]:
    """A whole hash, read in pages (HSCAN), decoded to str."""
    out: dict[str, str] = {}
    for k, v in client.hscan_iter(key, count=5000):
        out[k.decode() if isinstance(k, bytes) else k] = v.decode() if isinstance(v, bytes) else v
    return out


def read_final_state(client: Any, campaign_id: str) -> FinalState:
    """The campaign's state as stored: `client` is a sync redis.Redis or redis.RedisCluster."""
    meta = _hash(client, campaign_key(campaign_id))
    if "spec" not in meta:
        raise LookupError(f"no campaign {campaign_id!r} in Redis")
    config = CampaignConfig.from_json(meta["spec"])
    slots = int(meta.get("slots") or meta.get("shards") or config.shards)
    state = FinalState(campaign_id, config.inventory, config.per_user_limit, slots)
    leases: list[tuple[str, int, int]] = []
    for s in range(slots):
        keys = shard_keys(campaign_id, s)
        shard = _hash(client, keys.state)
        state.stock += int(shard.get("stock") or 0)
        state.granted += int(shard.get("granted") or 0)
        for fld, raw in _hash(client, keys.reqs).items():
            user, request_id = fld.split("|", 1)
            state.records[(user, request_id)] = raw.split("|", 1)[0]
        for user, raw in _hash(client, keys.users).items():
            count, last, _at, rids = raw.split("|", 3)
            state.users[user] = (int(count), last, [r for r in rids.split(",") if r])
        state.returning += int(shard.get("returning") or 0)
        state.recycled += int(shard.get("recycled") or 0)
        for lease_id, raw in _hash(client, keys.leases).items():
            if lease_credited(raw):
                continue
            dest, amount = parse_lease(raw)
            leases.append((lease_id, dest, amount))
    for lease_id, dest, amount in leases:  # a credited lease is already in its destination's stock
        if not client.sismember(shard_keys(campaign_id, dest).credited, lease_id):
            state.in_leases += amount
    if config.rounds:
        credited = shard_keys(campaign_id, 0).credited
        state.held = sum(amount for k, (_, amount) in enumerate(config.rounds)
                         if not client.sismember(credited, round_lease(k)))
    return state


# ---------------------------------------------------------------- the checker


@dataclass
class Report:
    campaign_id: str
    inventory: int
    claims: int = 0            # claim attempts recorded (every RPC, retries included)
    requests: int = 0          # distinct (user, request_id)
    acknowledged: int = 0      # distinct (user, voucher) some client was told it holds
    granted_final: int = 0     # grants stored in Redis at the end
    lost: int = 0              # acknowledged, yet not in Redis with that user (C3)
    oversold: int = 0          # vouchers beyond the inventory, acknowledged or stored (C1)
    duplicates: int = 0        # grants beyond a user's limit, extra holders of a voucher id,
                               # extra vouchers named for one request (C2, C6)
    phantoms: int = 0          # stored, never acknowledged, explained by an INDETERMINATE call (C4)
    indeterminate: int = 0     # attempts whose outcome the client could not know
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def failed_checks(self) -> set[str]:
        """The check ids (C1..C6) with at least one problem."""
        return {p.split(":", 1)[0] for p in self.problems}

    def figures(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (
            "claims", "requests", "acknowledged", "granted_final", "lost", "oversold", "duplicates",
            "phantoms", "indeterminate")}

    def summary(self, limit: int = 12) -> str:
        head = " ".join(f"{k}={v}" for k, v in self.figures().items())
        lines = [f"history of {self.campaign_id} (inventory {self.inventory}): {head}",
                 f"  outcomes: {dict(sorted(self.outcomes.items()))}"]
        lines += [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more problems")
        return "\n".join(lines)


def check_history(history: History | Iterable[Op], client: Any, campaign_id: str) -> Report:
    """Check the recorded calls of one campaign against its final state in Redis (see the module doc).

    Call it once the burst is over (no call in flight that could still write)."""
    ops = history.for_campaign(campaign_id) if isinstance(history, History) else [
        op for op in history if op.campaign_id == campaign_id]
    return check_against(ops, read_final_state(client, campaign_id))


def check_against(ops: list[Op], state: FinalState) -> Report:
    """The checks of check_history over ops already recorded and a state already read."""
    report = Report(state.campaign_id, state.inventory, claims=len(ops))
    problems = report.problems
    report.outcomes = Counter(op.outcome for op in ops)
    report.indeterminate = report.outcomes[INDETERMINATE]
    report.requests = len({(op.user_id, op.request_id) for op in ops})
    report.granted_final = len(state.records)
    limit = state.per_user_limit

    # ---- C1: conservation and no oversell, in the final state.
    if state.granted > state.inventory:
        problems.append(f"C1: {state.granted} granted > inventory {state.inventory}")
    total = state.stock + state.returning + state.in_leases + state.held + state.granted
    if total != state.inventory + state.recycled:
        problems.append(f"C1: stock {state.stock} + returning {state.returning} "
                        f"+ in leases {state.in_leases} + held {state.held} + granted {state.granted} "
                        f"= {total} != inventory {state.inventory} + recycled {state.recycled}")
    if len(state.records) != state.granted:
        problems.append(f"C1: {len(state.records)} grant records but the counters say {state.granted}")
    holders: dict[str, set[str]] = defaultdict(set)  # voucher -> users, over Redis and the history
    for (user, _), voucher in state.records.items():
        holders[voucher].add(user)
    stored_twice = len(state.records) - len(set(state.records.values()))
    if stored_twice:
        problems.append(f"C1: {stored_twice} voucher ids stored for two grants")

    # ---- C2: per-user limit, in Redis, and the users hash agrees with the records.
    final_by_user = state.vouchers_of()
    for user, vouchers in final_by_user.items():
        if len(vouchers) > limit:
            problems.append(f"C2: {user} holds {len(vouchers)} vouchers in Redis, limit {limit}")
    rids_by_user: dict[str, set[str]] = defaultdict(set)
    for user, request_id in state.records:
        rids_by_user[user].add(request_id)
    for user, (count, last, rids) in state.users.items():
        mine = final_by_user.get(user, set())
        if count != len(mine) or (count and last not in mine) or set(rids) != rids_by_user.get(user, set()):
            problems.append(f"C2: users record of {user} (count {count}, last {last}, requests {rids}) "
                            f"does not match its grants {sorted(mine)}")
    for user in final_by_user.keys() - state.users.keys():
        problems.append(f"C2: {user} has grants but no users record")

    # ---- C3 and C6: every acknowledged voucher is in Redis with that user; replies agree.
    acknowledged: set[tuple[str, str]] = set()
    named: dict[tuple[str, str], set[str]] = defaultdict(set)  # (user, request_id) -> GRANTED vouchers
    lost: set[tuple[str, str]] = set()
    for op in ops:
        if op.outcome not in ACKNOWLEDGED:
            continue
        if not op.voucher_id:
            problems.append(f"C6: {op.outcome} without a voucher for {op.user_id}/{op.request_id}")
            continue
        acknowledged.add((op.user_id, op.voucher_id))
        holders[op.voucher_id].add(op.user_id)
        if op.outcome == "GRANTED":
            named[(op.user_id, op.request_id)].add(op.voucher_id)
            stored = state.records.get((op.user_id, op.request_id))
            if stored != op.voucher_id:
                lost.add((op.user_id, op.voucher_id))
                problems.append(f"C3: GRANTED {op.voucher_id} to {op.user_id}/{op.request_id} "
                                f"(op {op.op_id}) is not in Redis (stored: {stored})")
        elif op.voucher_id not in final_by_user.get(op.user_id, ()):
            lost.add((op.user_id, op.voucher_id))
            problems.append(f"C6: ALREADY_CLAIMED by {op.user_id} (op {op.op_id}) names {op.voucher_id}, "
                            f"not a grant of that user in Redis")
    report.acknowledged = len(acknowledged)
    report.lost = len(lost)
    for (user, request_id), vouchers in named.items():
        if len(vouchers) > 1:
            report.duplicates += len(vouchers) - 1
            problems.append(f"C6: {user}/{request_id} was answered with {len(vouchers)} different "
                            f"vouchers {sorted(vouchers)}")

    # Over what the world knows of (acknowledged or stored): the limit and the inventory.
    known: dict[str, set[str]] = defaultdict(set)
    for user, voucher in acknowledged:
        known[user].add(voucher)
    for user, vouchers in final_by_user.items():
        known[user] |= vouchers
    for user, vouchers in known.items():
        if len(vouchers) > limit and len(final_by_user.get(user, ())) <= limit:
            report.duplicates += len(vouchers) - limit
            problems.append(f"C2: {user} was told of {len(vouchers)} vouchers {sorted(vouchers)}, "
                            f"limit {limit}")
        elif len(vouchers) > limit:
            report.duplicates += len(vouchers) - limit
    for voucher, users in holders.items():
        if len(users) > 1:
            report.duplicates += len(users) - 1
            problems.append(f"C1: voucher {voucher} given to {len(users)} users {sorted(users)}")
    handed_out = len(acknowledged | {(u, v) for (u, _), v in state.records.items()})
    report.oversold = max(0, handed_out - state.inventory, state.granted - state.inventory)
    if handed_out > state.inventory:
        problems.append(f"C1: {handed_out} vouchers acknowledged or stored > inventory {state.inventory}")

    # ---- C4: every stored grant was acknowledged, or a call of its request left it unknown.
    unknown_requests = {(op.user_id, op.request_id) for op in ops if op.outcome == INDETERMINATE}
    for (user, request_id), voucher in state.records.items():
        if (user, voucher) in acknowledged:
            continue
        if (user, request_id) in unknown_requests:
            report.phantoms += 1
        else:
            problems.append(f"C4: {voucher} granted to {user}/{request_id} in Redis, but no client "
                            f"was told and no call of that request was left unknown")
    return report
