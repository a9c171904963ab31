"""The maths over a burst's collected results: percentiles, duplicates, the checks, the report.

Pure functions only (no gRPC calls, no processes), so all of it is tested without a server.
The input is what `claimcore.burst.run_burst` returns; the report is what `claimcore demo` prints.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from claimcore.v1 import claims_pb2

#: How many violations / examples are kept in the report.
EXAMPLES_KEPT = 10


def split_range(total: int, parts: int) -> list[tuple[int, int]]:
    """Split range(total) into `parts` disjoint, contiguous, near-equal slices.

    Returns (start, end) pairs; empty slices are dropped.
    """
    if total < 0 or parts < 1:
        raise ValueError("total must be >= 0 and parts >= 1")
    base, extra = divmod(total, parts)
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        if size:
            out.append((start, start + size))
        start += size
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100).

    percentile([1..100], 50) == 50, percentile(xs, 100) == max, q=0 gives min.
    Returns NaN for an empty sequence.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * n))
    return float(sorted_values[min(rank, n) - 1])


def latency_summary(latencies_ms: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies in milliseconds (NaN when empty)."""
    values = sorted(latencies_ms)
    if not values:
        nan = math.nan
        return {"count": 0, "p50": nan, "p90": nan, "p99": nan, "max": nan, "mean": nan}
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": float(values[-1]),
        "mean": sum(values) / len(values),
    }


def find_duplicates(
    pairs: Iterable[tuple[str, str]],
) -> tuple[dict[str, set[str]], dict[str, set[str]], int]:
    """Look for double grants in (user_id, voucher_id) pairs seen by clients.

    The same pair may appear many times (a replay, an ALREADY_CLAIMED reply);
    that is fine. Returns (users holding more than one distinct voucher,
    vouchers seen for more than one user, number of distinct vouchers).
    """
    by_user: dict[str, set[str]] = {}
    by_voucher: dict[str, set[str]] = {}
    for user, voucher in pairs:
        by_user.setdefault(user, set()).add(voucher)
        by_voucher.setdefault(voucher, set()).add(user)
    dup_users = {u: vs for u, vs in by_user.items() if len(vs) > 1}
    dup_vouchers = {v: us for v, us in by_voucher.items() if len(us) > 1}
    return dup_users, dup_vouchers, len(by_voucher)


def oversell(granted: int, inventory: int) -> int:
    """Vouchers granted beyond the inventory (0 when all is well)."""
    return max(0, granted - inventory)


def expected_grants(inventory: int, users: int) -> int:
    """With per_user_limit 1 and every user claiming, exactly this many are granted."""
    return min(inventory, users)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def evaluate_checks(
    *,
    inventory: int,
    users: int,
    client_distinct: int,
    server_granted: int,
    duplicate_users: int,
    duplicate_vouchers: int,
    retry_violations: int,
    lost_vouchers: int = 0,
    verified: int = 0,
) -> list[Check]:
    """The pass/fail verdicts of a run, from its counted figures."""
    expected = expected_grants(inventory, users)
    over = max(oversell(server_granted, inventory), oversell(client_distinct, inventory))
    checks = [
        Check(
            "duplicates",
            duplicate_users == 0 and duplicate_vouchers == 0,
            f"{duplicate_users} users holding >1 voucher, "
            f"{duplicate_vouchers} vouchers seen for >1 user",
        ),
        Check(
            "oversell",
            over == 0,
            f"{over} beyond inventory {inventory} "
            f"(server granted {server_granted}, client saw {client_distinct})",
        ),
        Check(
            "exact",
            client_distinct == server_granted == expected,
            f"client {client_distinct}, server {server_granted}, "
            f"expected min(inventory, users) = {expected}",
        ),
        Check(
            "retry consistency",
            retry_violations == 0,
            f"{retry_violations} replays of a GRANTED request answered differently",
        ),
    ]
    if verified:
        checks.append(
            Check(
                "vouchers recorded",
                lost_vouchers == 0,
                f"{lost_vouchers} of {verified} sampled grants missing from GetClaim",
            )
        )
    return checks


def merge_worker_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fold the compact per-worker results (as run_burst returns them) into one."""
    merged: dict[str, Any] = {
        "sent": 0,
        "outcomes": Counter(),
        "transient": Counter(),
        "errors": Counter(),
        "error_examples": [],
        "latencies": array("d"),
        "done_at": array("d"),
        "pairs": [],
        "settled": 0,
        "unsettled": 0,
        "retries": 0,
        "retry_violations": [],
        "double_taps": 0,
        "double_tap_unexpected": [],
        "voucher_anomalies": [],
        "first_sold_out": None,
        "start": None,
        "end": None,
    }
    for r in results:
        merged["sent"] += r["sent"]
        merged["outcomes"].update(r["outcomes"])
        merged["transient"].update(r["transient"])
        merged["errors"].update(r["errors"])
        merged["error_examples"].extend(r["error_examples"])
        lat = r["latencies"]
        if isinstance(lat, bytes | bytearray):
            merged["latencies"].frombytes(lat)
        else:
            merged["latencies"].extend(lat)
        done = r.get("done_at", b"")
        if isinstance(done, bytes | bytearray):
            merged["done_at"].frombytes(done)
        else:
            merged["done_at"].extend(done)
        merged["pairs"].extend(r["pairs"])
        merged["settled"] += r["settled"]
        merged["unsettled"] += r["unsettled"]
        merged["retries"] += r["retries"]
        merged["retry_violations"].extend(r["retry_violations"])
        merged["double_taps"] += r["double_taps"]
        merged["double_tap_unexpected"].extend(r["double_tap_unexpected"])
        merged["voucher_anomalies"].extend(r["voucher_anomalies"])
        for key, pick in (("first_sold_out", min), ("start", min), ("end", max)):
            value = r.get(key)
            if value is not None:
                merged[key] = value if merged[key] is None else pick(merged[key], value)
    return merged


def phase_rates(
    done_at: Iterable[float], start: float | None, end: float | None, sold_out: float | None
) -> tuple[float | None, float | None]:
    """Replies per second before and after the sold-out moment (unix seconds).

    done_at holds the wall time of every reply. None where a phase is missing
    or lasted no time at all.
    """
    if start is None or end is None or sold_out is None or not start <= sold_out <= end:
        return None, None
    before = sum(1 for t in done_at if t <= sold_out)
    after = sum(1 for t in done_at if t > sold_out)
    first = before / (sold_out - start) if sold_out > start else None
    second = after / (end - sold_out) if end > sold_out else None
    return first, second


def outcome_name(value: int | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return claims_pb2.Outcome.Name(value)
    except ValueError:
        return f"OUTCOME_{value}"


def build_report(
    *,
    campaign_id: str,
    inventory: int,
    shards: int,
    users: int,
    processes: int,
    concurrency: int,
    merged: dict[str, Any],
    server: dict[str, Any],
    lost_vouchers: int = 0,
    verified: int = 0,
    lost_examples: Sequence[Any] = (),
) -> dict[str, Any]:
    """Everything the demo prints, as a JSON-ready dict, with the checks."""
    dup_users, dup_vouchers, distinct = find_duplicates(merged["pairs"])
    outcomes = {outcome_name(k): int(v) for k, v in sorted(merged["outcomes"].items())}
    replies = sum(outcomes.values())
    start = merged["start"]
    end = merged["end"]
    wall = (end - start) if start is not None and end is not None else math.nan
    sold_out_ms = int(server.get("sold_out_at_ms") or 0)
    to_sold_out_server = sold_out_ms / 1000.0 - start if sold_out_ms and start is not None else None
    first_reply = merged["first_sold_out"]
    to_sold_out_reply = first_reply - start if first_reply is not None and start else None
    server_granted = int(server.get("granted", 0))
    before_s, after_s = phase_rates(
        merged.get("done_at", ()), start, end, sold_out_ms / 1000.0 if sold_out_ms else None
    )
    checks = evaluate_checks(
        inventory=inventory,
        users=users,
        client_distinct=distinct,
        server_granted=server_granted,
        duplicate_users=len(dup_users),
        duplicate_vouchers=len(dup_vouchers),
        retry_violations=len(merged["retry_violations"]),
        lost_vouchers=lost_vouchers,
        verified=verified,
    )
    lat = latency_summary(merged["latencies"])
    return {
        "campaign": campaign_id,
        "inventory": inventory,
        "shards": shards,
        "users": users,
        "processes": processes,
        "concurrency": concurrency,
        "requests_sent": int(merged["sent"]),
        "replies": replies,
        "outcomes": outcomes,
        "transient_failures": {k: int(v) for k, v in sorted(merged["transient"].items())},
        "transport_errors": {k: int(v) for k, v in sorted(merged["errors"].items())},
        "transport_error_examples": list(merged["error_examples"][:EXAMPLES_KEPT]),
        "settled_by_getclaim": int(merged["settled"]),
        "unsettled": int(merged["unsettled"]),
        "distinct_vouchers": distinct,
        "granted": server_granted,
        "remaining": int(server.get("remaining", 0)),
        "server_shards": list(server.get("shards", [])),
        "expected_granted": expected_grants(inventory, users),
        "duplicate_users": len(dup_users),
        "duplicate_vouchers": len(dup_vouchers),
        "duplicates": len(dup_users) + len(dup_vouchers),
        "duplicate_examples": {
            "users": {u: sorted(vs) for u, vs in list(dup_users.items())[:EXAMPLES_KEPT]},
            "vouchers": {v: sorted(us) for v, us in list(dup_vouchers.items())[:EXAMPLES_KEPT]},
        },
        "oversell": max(oversell(server_granted, inventory), oversell(distinct, inventory)),
        "exact": distinct == server_granted == expected_grants(inventory, users),
        "retries": int(merged["retries"]),
        "retry_violations": len(merged["retry_violations"]),
        "retry_violation_examples": list(merged["retry_violations"][:EXAMPLES_KEPT]),
        "double_taps": int(merged["double_taps"]),
        "double_tap_unexpected": len(merged["double_tap_unexpected"]),
        "double_tap_unexpected_examples": list(merged["double_tap_unexpected"][:EXAMPLES_KEPT]),
        "voucher_anomalies": len(merged["voucher_anomalies"]),
        "voucher_anomaly_examples": list(merged["voucher_anomalies"][:EXAMPLES_KEPT]),
        "verified_sample": verified,
        "lost_vouchers": lost_vouchers,
        "lost_voucher_examples": list(lost_examples[:EXAMPLES_KEPT]),
        "burst_start_unix": start,
        "burst_wall_s": wall,
        "time_to_sold_out_server_s": to_sold_out_server,
        "time_to_first_sold_out_reply_s": to_sold_out_reply,
        "sold_out_at_ms": sold_out_ms,
        "claims_per_s": replies / wall if wall and wall > 0 else math.nan,
        "claims_per_s_before_sold_out": before_s,
        "claims_per_s_after_sold_out": after_s,
        "latency_ms": lat,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        "failed": [c.name for c in checks if not c.ok],
        "ok": all(c.ok for c in checks),
    }


def _n(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _secs(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f} s"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable report: a short two-column table with verdicts."""
    checks = {c["name"]: c for c in report["checks"]}

    def verdict(name: str) -> str:
        c = checks.get(name)
        return "" if c is None else ("PASS" if c["ok"] else "FAIL")

    outcomes = report["outcomes"]
    main = ("GRANTED", "ALREADY_CLAIMED", "SOLD_OUT")
    others = sum(v for k, v in outcomes.items() if k not in main)
    other_detail = ", ".join(f"{k} {v:,}" for k, v in outcomes.items() if k not in main)
    transient = sum(report["transient_failures"].values())
    errors = sum(report["transport_errors"].values())
    lat = report["latency_ms"]
    rows: list[tuple[str, str, str]] = [
        ("campaign", report["campaign"], ""),
        ("inventory / shards", f"{_n(report['inventory'])} / {report['shards']}", ""),
        (
            "users",
            f"{_n(report['users'])}  ({report['processes']} processes x "
            f"{report['concurrency']} concurrent)",
            "",
        ),
        (
            "requests sent",
            f"{_n(report['requests_sent'])}  (replies {_n(report['replies'])}, "
            f"transient failures retried {_n(transient)}, transport errors {_n(errors)})",
            "",
        ),
        ("GRANTED", _n(outcomes.get("GRANTED", 0)), ""),
        ("ALREADY_CLAIMED", _n(outcomes.get("ALREADY_CLAIMED", 0)), ""),
        ("SOLD_OUT", _n(outcomes.get("SOLD_OUT", 0)), ""),
        ("other outcomes", _n(others) + (f"  ({other_detail})" if other_detail else ""), ""),
        ("distinct vouchers (client)", _n(report["distinct_vouchers"]), ""),
        (
            "granted (server)",
            f"{_n(report['granted'])}  (remaining {_n(report['remaining'])})",
            "",
        ),
        (
            "duplicates",
            f"{report['duplicates']}  ({report['duplicate_users']} users >1 voucher, "
            f"{report['duplicate_vouchers']} vouchers >1 user)",
            verdict("duplicates"),
        ),
        ("oversell", _n(report["oversell"]), verdict("oversell")),
        (
            "exact",
            f"{_n(report['distinct_vouchers'])} client == {_n(report['granted'])} server == "
            f"{_n(report['expected_granted'])} min(inventory, users)",
            verdict("exact"),
        ),
        (
            "retry consistency",
            f"{report['retry_violations']} violations in {_n(report['retries'])} replays",
            verdict("retry consistency"),
        ),
    ]
    if "vouchers recorded" in checks:
        rows.append(
            (
                "vouchers recorded",
                f"{report['lost_vouchers']} missing of {_n(report['verified_sample'])} "
                "sampled (GetClaim by user)",
                verdict("vouchers recorded"),
            )
        )
    rows += [
        (
            "double taps",
            f"{_n(report['double_taps'])}  ({report['double_tap_unexpected']} answered "
            "other than ALREADY_CLAIMED same voucher / SOLD_OUT)",
            "",
        ),
        (
            "time to sold out",
            f"server {_secs(report['time_to_sold_out_server_s'])}, first SOLD_OUT reply "
            f"{_secs(report['time_to_first_sold_out_reply_s'])}",
            "",
        ),
        (
            "claims/s",
            f"{_n(report['claims_per_s'])}  (burst wall {_secs(report['burst_wall_s'])}; "
            f"before sold out {_n(report['claims_per_s_before_sold_out'])}, "
            f"after {_n(report['claims_per_s_after_sold_out'])})",
            "",
        ),
        (
            "latency ms",
            f"p50 {_n(lat['p50'])} · p90 {_n(lat['p90'])} · p99 {_n(lat['p99'])} · "
            f"max {_n(lat['max'])}",
            "",
        ),
    ]
    if report["settled_by_getclaim"] or report["unsettled"]:
        rows.append(
            (
                "unknown outcomes",
                f"{report['settled_by_getclaim']} settled as granted by GetClaim, "
                f"{report['unsettled']} could not be settled",
                "",
            )
        )
    width = max(len(r[0]) for r in rows)
    value_width = min(100, max(len(r[1]) for r in rows))
    bar = "-" * (width + value_width + 10)
    lines = [f"claimcore demo: {report['campaign']}", bar]
    for label, value, mark in rows:
        lines.append(f" {label:<{width}}  {value:<{value_width}}  {mark}".rstrip())
    lines.append(bar)
    for key, title in (
        ("retry_violation_examples", "retry violations"),
        ("double_tap_unexpected_examples", "unexpected double-tap replies"),
        ("voucher_anomaly_examples", "voucher anomalies"),
        ("lost_voucher_examples", "vouchers missing from GetClaim"),
        ("transport_error_examples", "transport errors"),
    ):
        if report.get(key):
            lines.append(f" {title} (first {len(report[key])}):")
            lines.extend(f"   {example}" for example in report[key])
    dup = report["duplicate_examples"]
    if dup["users"]:
        lines.append(f" users holding >1 voucher (first {len(dup['users'])}):")
        lines.extend(f"   {u}: {', '.join(vs)}" for u, vs in dup["users"].items())
    if dup["vouchers"]:
        lines.append(f" vouchers seen for >1 user (first {len(dup['vouchers'])}):")
        lines.extend(f"   {v}: {', '.join(us)}" for v, us in dup["vouchers"].items())
    if report["ok"]:
        lines.append(" RESULT: PASS (all checks passed)")
    else:
        for c in report["checks"]:
            if not c["ok"]:
                lines.append(f" FAILED {c['name']}: {c['detail']}")
        lines.append(f" RESULT: FAIL ({', '.join(report['failed'])})")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, array):
        return list(value)
    return str(value)


def report_json(report: dict[str, Any]) -> str:
    """JSON text of the report (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=2, default=_json_default)
