"""What a run prints: per seed its figures, and for each violation the seed, the check, and a
minimal history of the keys involved (the calls that touched them and their records in Redis)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from claimcore.simulation.calls import CallLog
from claimcore.simulation.checks import Violation
from claimcore.simulation.state import WorldState

SHOWN_PER_CHECK = 3  # violations printed in full per check and seed; the rest are counted


@dataclass
class SeedResult:
    seed: int
    cluster: bool
    operations: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_op: dict[str, Counter[str]] = field(default_factory=dict)  # operation -> "Rpc OUTCOME" -> calls
    violations: list[Violation] = field(default_factory=list)
    driver_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    figures: dict[str, int] = field(default_factory=dict)  # what the run left in Redis (checks.figures)
    text: str = ""  # the printed report, with the minimal histories
    answered_locally: int = 0  # claims the watching client answered SOLD_OUT from the pushed state

    def by_check(self) -> Counter[str]:
        return Counter(v.check for v in self.violations)

    def by_kind(self) -> Counter[str]:
        return Counter(f"{v.check}: {v.kind}" if v.kind else v.check for v in self.violations)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cluster": self.cluster,
            "seconds": round(self.seconds, 1),
            "operations": dict(sorted(self.operations.items())),
            "calls": self.calls,
            "outcomes": dict(sorted(self.outcomes.items())),
            "answered_locally": self.answered_locally,
            "figures": self.figures,
            "calls_by_operation": {op: dict(sorted(c.items())) for op, c in sorted(self.by_op.items())},
            "violations": dict(sorted(self.by_check().items())),
            "violations_by_kind": dict(sorted(self.by_kind().items())),
            "examples": [
                {"check": v.check, "campaign": v.campaign, "message": v.message}
                for v in _shown(self.violations)
            ],
            "driver_errors": self.driver_errors[:20],
        }


def _shown(violations: list[Violation]) -> list[Violation]:
    seen: Counter[str] = Counter()
    out = []
    for v in violations:
        seen[v.check] += 1
        if seen[v.check] <= SHOWN_PER_CHECK:
            out.append(v)
    return out


def redis_records(ws: WorldState | None, keys: set[str], limit: int = 30) -> list[str]:
    """The records in Redis of the users, vouchers, SN codes and orders named by keys."""
    if ws is None:
        return []
    users = {k[5:] for k in keys if k.startswith("user:")}
    vouchers = {k[8:] for k in keys if k.startswith("voucher:")}
    orders = {k[6:] for k in keys if k.startswith("order:")}
    lines = []
    for cid, cs in ws.campaigns.items():
        for g in cs.grants:
            if g.user in users or g.voucher in vouchers:
                home = "" if g.shard == cs.home(g.user) else f" (not the user's shard {cs.home(g.user)})"
                lines.append(
                    f"  {cid} shard {g.shard} reqs {g.user}|{g.request_id} = "
                    f"{g.voucher}|{g.granted_at}|{g.channel}{home}"
                )
                vouchers.add(g.voucher)
        for s, hashes in enumerate(zip(cs.users, cs.redeem, cs.elig, strict=True)):
            users_h, redeem_h, elig_h = hashes
            for user in users & users_h.keys():
                lines.append(f"  {cid} shard {s} users {user} = {users_h[user]}")
            for user in users & elig_h.keys():
                lines.append(f"  {cid} shard {s} elig {user} = {elig_h[user]}")
            for fld, value in redeem_h.items():
                name = fld[2:]
                if (fld.startswith("v:") and name in vouchers) or (
                    fld[:2] in ("o:", "r:") and name in orders
                ):
                    lines.append(f"  {cid} shard {s} redeem {fld} = {value}")
        for e in cs.events:
            if e.voucher_id in vouchers or (e.user_id in users and e.kind in ("redeem", "reverse")):
                lines.append(
                    f"  {cid} ledger shard {e.shard} {e.event_id} {e.kind} at {e.at_ms} user {e.user_id} "
                    f"voucher {e.voucher_id}" + (f" order {e.order_id}" if e.order_id else "")
                )
    for k in keys:
        if k.startswith("sn:"):
            lines.append(f"  SN registry {k[3:]} = {ws.sns.get(k[3:], '')}")
    for order in orders:
        for key, value in ws.stack.items():
            if key.startswith(order):
                lines.append(f"  stacked-order decision {key} = {value}")
    return lines[:limit] + ([f"  ... {len(lines) - limit} more records"] if len(lines) > limit else [])


def describe(result: SeedResult, log: CallLog | None, ws: WorldState | None) -> str:
    head = (
        f"seed {result.seed}{' (cluster)' if result.cluster else ''}: {sum(result.operations.values())} "
        f"operations, {result.calls} calls ({result.answered_locally} answered by the watching client) "
        f"in {result.seconds:.0f} s; violations: "
        f"{dict(sorted(result.by_check().items())) or 'none'}"
    )
    lines = [head]
    if result.figures:
        lines.append("  in Redis: " + ", ".join(f"{k} {v}" for k, v in result.figures.items()))
    for v in _shown(result.violations):
        lines.append(
            f"VIOLATION seed={result.seed} check={v.check} campaign={v.campaign or '-'}: {v.message}"
        )
        if log is not None and v.keys:
            calls = log.touching(v.keys, 30, v.until)
            if calls:
                lines.append(" calls touching " + ", ".join(sorted(v.keys)) + ":")
                lines += [c.line(log.t0) for c in calls]
        records = redis_records(ws, v.keys)
        if records:
            lines.append(" in Redis:")
            lines += records
    hidden = len(result.violations) - len(_shown(result.violations))
    if hidden:
        lines.append(f"  ... and {hidden} more violations of the same checks")
    for err in result.driver_errors[:5]:
        lines.append(f"  driver error: {err}")
    return "\n".join(lines)
