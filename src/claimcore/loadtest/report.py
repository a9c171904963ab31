"""The maths over a run's collected results: percentiles, duplicates, the checks, the report.

Pure functions only (no gRPC calls, no processes), so all of it is tested without a server.
The input is what `claimcore.loadtest.burst.run_load` returns; the report is the dict that
claimcore.loadtest.report_text renders as the text `claimcore demo` and `claimcore loadgen`
print and the JSON they write.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from claimcore.loadtest.histogram import LatencyHistogram
from claimcore.v1 import claims_pb2, short_name

#: How many violations / examples are kept in the report.
EXAMPLES_KEPT = 10
#: The latency percentiles a report gives, besides max and mean.
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
#: What each worker counts per slice of the run (driver.py), in this order: the claims whose planned
#: arrival falls in it, the claims sent in it for the first time and again (a resend after a transient
#: failure or RATE_LIMITED), and the replies received in it by outcome. "granted_first" is a GRANTED reply
#: to a user's first claim or second tap (a voucher the user did not hold before, unless the server
#: replayed it); "granted_replays" a GRANTED reply to a replayed request id: the same voucher again.
FLOW_COLUMNS = ("planned", "sent", "resent", "granted_first", "granted_replays", "already_claimed",
                "sold_out", "other")  # fmt: skip
REPLY_COLUMNS = FLOW_COLUMNS[3:]
#: The percentiles of the latency distribution the report gives (a percentile curve).
DISTRIBUTION_QUANTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)
#: Where the stock-remaining line comes from (the report's stock_remaining_source).
STOCK_DERIVED = "derived: inventory minus the first grants the load generator received, per slice"


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


def latency_summary(hist: LatencyHistogram) -> dict[str, float]:
    """count, p50/p90/p99/p99.9, max and mean of a microsecond histogram, in milliseconds."""
    values = hist.percentiles(q for _, q in QUANTILES)
    summary: dict[str, float] = {"count": hist.count}
    summary.update((name, v / 1000.0) for (name, _), v in zip(QUANTILES, values, strict=True))
    summary["max"] = hist.max / 1000.0 if hist.count else math.nan
    summary["mean"] = hist.mean() / 1000.0
    return summary


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


# When 1 % of the sends went out later than this behind their planned arrival, the load generator set the
# pace, not the nodes: the report says so in plain words (`behind_plan`). --max-lateness makes it a check.
BEHIND_PLAN_MS = 1000.0


def behind_plan(lateness_ms: Mapping[str, float],
                max_lateness_ms: float | None) -> tuple[str | None, Check | None]:
    """The warning a run's send lateness calls for (None: it kept to its plan), and with max_lateness_ms
    the check "generator kept up" (p99 send lateness within it)."""
    limit = BEHIND_PLAN_MS if max_lateness_ms is None else max_lateness_ms
    p99, worst = lateness_ms.get("p99", math.nan), lateness_ms.get("max", math.nan)
    if not lateness_ms.get("count") or not math.isfinite(p99):
        return None, None
    warning = None
    if p99 > limit:
        warning = (f"the load generator fell behind its plan: 1 % of the sends went out more than "
                   f"{p99 / 1000:,.1f} s after their planned arrival (worst {worst / 1000:,.1f} s; limit "
                   f"{limit / 1000:,.1f} s): the offered load was lower than planned, so these figures "
                   "describe the generator as much as the nodes (all --concurrency calls were in flight, "
                   "or its processes ran out of CPU: more --concurrency, --processes or machines)")
    check = None if max_lateness_ms is None else Check(
        "generator kept up", p99 <= max_lateness_ms,
        f"p99 send lateness {p99:,.0f} ms (limit --max-lateness {max_lateness_ms:,.0f} ms)")
    return warning, check


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
    server_remaining: int | None = None,
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
    if server_remaining is not None:
        checks.append(
            Check(
                "stock conserved",
                server_granted + server_remaining == inventory,
                f"server granted {server_granted} + remaining {server_remaining} "
                f"vs inventory {inventory}",
            )
        )
    if verified:
        checks.append(
            Check(
                "vouchers recorded",
                lost_vouchers == 0,
                f"{lost_vouchers} of {verified} sampled grants missing from GetClaim",
            )
        )
    return checks


# ---------------------------------------------------------------- merging


_SUMMED = ("sent", "calls", "settled", "unsettled", "retries", "double_taps", "rate_limited_resends",
           "skipped_follow_ups", "answered_locally", "local_to_holders")  # fmt: skip
_COUNTED = ("outcomes", "transient", "errors", "redeems", "redeem_errors", "client")
_LISTED = ("error_examples", "pairs", "retry_violations", "double_tap_unexpected", "voucher_anomalies")
_HISTOGRAMS = ("latency", "response", "lateness")
_EXTREMES = (("first_sold_out", min), ("last_granted", max), ("start", min), ("end", max))


def merge_worker_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold the compact per-worker results (as run_load returns them) into one.

    Histograms become LatencyHistogram objects; `ticks` maps a tick (tick_s long, counted
    from the common start) to [replies, granted, sold_out]; `slices` maps a slice (slice_s
    long) to the histogram of the call latencies that ended in it, `response_slices` to that
    of the response times (planned arrival to answer) of the first claims answered in it;
    `flow` maps a slice to its counts in FLOW_COLUMNS order.
    """
    merged: dict[str, Any] = {key: 0 for key in _SUMMED}
    merged.update({key: Counter() for key in _COUNTED})
    merged.update({key: [] for key in _LISTED})
    merged.update({key: LatencyHistogram() for key in _HISTOGRAMS})
    merged.update({key: None for key, _ in _EXTREMES})
    merged.update(ticks={}, slices={}, response_slices={}, flow={}, tick_s=None, slice_s=None)
    for r in results:
        for key in _SUMMED:
            merged[key] += r.get(key, 0)
        for key in _COUNTED:
            merged[key].update(r.get(key, {}))
        for key in _LISTED:
            merged[key].extend(r[key])
        for key in _HISTOGRAMS:
            merged[key].merge(LatencyHistogram.from_state(r[key]))
        for key, pick in _EXTREMES:
            value = r.get(key)
            if value is not None:
                merged[key] = value if merged[key] is None else pick(merged[key], value)
        for key in ("tick_s", "slice_s"):
            if merged[key] is not None and r[key] != merged[key]:
                raise ValueError(f"workers disagree on {key}: {merged[key]} and {r[key]}")
            merged[key] = r[key]
        ticks = merged["ticks"]
        for tick, row in r["ticks"].items():
            into = ticks.setdefault(int(tick), [0] * len(row))
            for n, value in enumerate(row):
                into[n] += value
        for name in ("slices", "response_slices"):
            slices = merged[name]
            for key, state in r.get(name, {}).items():
                hist = LatencyHistogram.from_state(state)
                if int(key) in slices:
                    slices[int(key)].merge(hist)
                else:
                    slices[int(key)] = hist
        flow = merged["flow"]
        for key, row in r.get("flow", {}).items():
            into = flow.setdefault(int(key), [0] * len(FLOW_COLUMNS))
            for n, value in enumerate(row):
                into[n] += value
    return merged


# ---------------------------------------------------------------- time series


def replies_before(ticks: Mapping[int, Sequence[int]], tick_s: float, at_s: float) -> float:
    """Replies in the first at_s seconds, taking replies as spread evenly within a tick."""
    at = at_s / tick_s
    total = 0.0
    for tick, row in ticks.items():
        if tick + 1 <= at:
            total += row[0]
        elif tick < at:
            total += row[0] * (at - tick)
    return total


def phase_rates(
    ticks: Mapping[int, Sequence[int]],
    tick_s: float,
    start: float | None,
    end: float | None,
    sold_out: float | None,
) -> tuple[float | None, float | None]:
    """Replies per second before and after the sold-out moment (all times unix seconds).

    None where a phase is missing or lasted no time at all.
    """
    if start is None or end is None or sold_out is None or not start <= sold_out <= end:
        return None, None
    before = replies_before(ticks, tick_s, sold_out - start)
    after = sum(row[0] for row in ticks.values()) - before
    first = before / (sold_out - start) if sold_out > start else None
    second = after / (end - sold_out) if end > sold_out else None
    return first, second


def per_second(ticks: Mapping[int, Sequence[int]], tick_s: float) -> list[int]:
    """Replies in each whole second of the run: [second 0, second 1, ...]."""
    if not ticks:
        return []
    out = [0] * (int(max(ticks) * tick_s) + 1)
    for tick, row in ticks.items():
        out[int(tick * tick_s)] += row[0]
    return out


def throughput_series(
    ticks: Mapping[int, Sequence[int]],
    slices: Mapping[int, LatencyHistogram],
    tick_s: float,
    slice_s: float,
) -> list[dict[str, Any]]:
    """One row per slice_s of the run: replies, grants and sold-outs per second, p50/p99 latency."""
    if not ticks and not slices:
        return []
    per = max(1, round(slice_s / tick_s))
    last = max([t // per for t in ticks] + list(slices))
    rows = []
    for k in range(last + 1):
        counts = [0, 0, 0]
        for tick in range(k * per, (k + 1) * per):
            row = ticks.get(tick)
            if row:
                for n in range(3):
                    counts[n] += row[n]
        hist = slices.get(k)
        p50, p99 = hist.percentiles((50, 99)) if hist else (math.nan, math.nan)
        rows.append(
            {
                "t_s": round(k * slice_s, 3),
                "claims_per_s": counts[0] / slice_s,
                "granted_per_s": counts[1] / slice_s,
                "sold_out_per_s": counts[2] / slice_s,
                "p50_ms": p50 / 1000.0,
                "p99_ms": p99 / 1000.0,
            }
        )
    return rows


def _p50_p99_ms(hist: LatencyHistogram | None) -> tuple[float, float]:
    if not hist:
        return math.nan, math.nan
    p50, p99 = hist.percentiles((50, 99))
    return p50 / 1000.0, p99 / 1000.0


def flow_series(
    flow: Mapping[int, Sequence[int]],
    slices: Mapping[int, LatencyHistogram],
    response_slices: Mapping[int, LatencyHistogram],
    slice_s: float,
    inventory: int,
) -> list[dict[str, Any]]:
    """One row per slice_s of the run, counts (not rates): the offered load (planned), what was sent,
    the replies by outcome, the stock remaining at the slice's end (STOCK_DERIVED), and p50/p99 of the
    call latency and of the response time (planned arrival to answer) of the replies in the slice."""
    keys = [*flow, *slices, *response_slices]
    if not keys:
        return []
    rows = []
    stock = inventory
    empty = [0] * len(FLOW_COLUMNS)
    for k in range(max(0, min(keys)), max(keys) + 1):
        counts = dict(zip(FLOW_COLUMNS, flow.get(k, empty), strict=True))
        stock -= counts["granted_first"]
        latency = _p50_p99_ms(slices.get(k))
        response = _p50_p99_ms(response_slices.get(k))
        rows.append({
            "t_s": round(k * slice_s, 3), "planned": counts["planned"], "sent": counts["sent"],
            "resent": counts["resent"], "replies": sum(counts[c] for c in REPLY_COLUMNS),
            **{c: counts[c] for c in REPLY_COLUMNS}, "stock_remaining": stock,
            "latency_p50_ms": latency[0], "latency_p99_ms": latency[1],
            "response_p50_ms": response[0], "response_p99_ms": response[1],
        })  # fmt: skip
    return rows


#: The columns per_second_rows sums (the others, percentiles and stock, are per slice only).
SUMMED_PER_SECOND = ("planned", "sent", "resent", "replies", *REPLY_COLUMNS)


def per_second_rows(per_slice: Sequence[Mapping[str, Any]], slice_s: float) -> list[dict[str, Any]]:
    """per_slice summed into whole seconds: {"second", counts..., "stock_remaining" at its end}."""
    out: list[dict[str, Any]] = []
    for row in per_slice:
        second = math.floor(round(row["t_s"] / slice_s) * slice_s + 1e-9)
        while len(out) <= second:
            out.append({"second": len(out), **{c: 0 for c in SUMMED_PER_SECOND}, "stock_remaining": None})
        for column in SUMMED_PER_SECOND:
            out[second][column] += row[column]
        out[second]["stock_remaining"] = row["stock_remaining"]
    stock = None
    for row in out:  # a second with no slice keeps the stock of the one before
        if row["stock_remaining"] is None:
            row["stock_remaining"] = stock
        stock = row["stock_remaining"]
    return out


def flow_totals(flow: Mapping[int, Sequence[int]]) -> dict[str, int]:
    """The flow columns summed over the run, and "replies" (every reply, RATE_LIMITED included)."""
    totals = dict.fromkeys(FLOW_COLUMNS, 0)
    for row in flow.values():
        for name, value in zip(FLOW_COLUMNS, row, strict=True):
            totals[name] += value
    totals["replies"] = sum(totals[c] for c in REPLY_COLUMNS)
    return totals


def latency_distribution(latency: LatencyHistogram, response: LatencyHistogram) -> list[dict[str, float]]:
    """The percentile curve of the call latency and of the response time, in milliseconds."""
    calls = latency.percentiles(DISTRIBUTION_QUANTILES)
    responses = response.percentiles(DISTRIBUTION_QUANTILES)
    return [{"percentile": q, "latency_ms": c / 1000.0, "response_ms": r / 1000.0}
            for q, c, r in zip(DISTRIBUTION_QUANTILES, calls, responses, strict=True)]


def outcome_name(value: int | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return short_name(claims_pb2.Outcome, value)
    except ValueError:
        return f"OUTCOME_{value}"


# ---------------------------------------------------------------- app backend and node cost


def local_answer_figures(
    answered_locally: int,
    ticks: Mapping[int, Sequence[int]],
    tick_s: float,
    start: float | None,
    sold_out: float | None,
) -> dict[str, Any]:
    """Claims answered without reaching a node (auto mode), and their share of the claims
    answered after the server's sold-out moment (replays and follow-ups included; None when
    the campaign did not sell out during the run)."""
    after = None
    if start is not None and sold_out is not None and sold_out >= start:
        after = round(sum(row[0] for row in ticks.values()) - replies_before(ticks, tick_s, sold_out - start))
    share = answered_locally / after if after else None
    return {"count": answered_locally, "claims_after_sold_out": after,
            "share_after_sold_out": None if share is None else min(1.0, share)}


def front_cpu_figures(cpu: Mapping[str, Any] | None, claims: int) -> dict[str, Any]:
    """The front nodes' CPU-seconds over the run, from their process_cpu_seconds_total read
    before and after it (claimcore.loadtest.node_cpu), and per million claims answered.

    cpu None: no metrics address was given; the figures are None and `measured` False. A node
    whose counter went down was restarted during the run: not measured either (`why` says so).
    """
    if cpu is None:
        return {"measured": False, "cpu_s": None, "per_million_claims": None, "nodes": [],
                "why": "no --node-metrics"}
    nodes = [dict(n) for n in cpu["nodes"]]
    restarted = [n["url"] for n in nodes if n["after"] < n["before"]]
    if restarted:  # a restarted node's counter starts again from 0: its CPU over the run is unknown
        return {"measured": False, "cpu_s": None, "per_million_claims": None, "nodes": nodes,
                "why": f"counter reset (node restarted?): {', '.join(restarted)}"}
    total = sum(n["after"] - n["before"] for n in nodes)
    return {"measured": True, "cpu_s": total,
            "per_million_claims": total / claims * 1e6 if claims else None, "nodes": nodes, "why": ""}


# ---------------------------------------------------------------- the report


def reshard_rows(steps: Sequence[Mapping[str, Any]], start: float | None) -> list[dict[str, Any]]:
    """The reshards called during the run, for the table and the charts' markers: at_s in seconds since
    the load's start (from a step's at_unix when it has one, else its own at_s), took_s how long the
    reshard took; a failed one keeps its error."""
    rows = []
    for step in steps:
        at = step.get("at_s", 0.0)
        if step.get("at_unix") is not None and start is not None:
            at = step["at_unix"] - start
        row = {"at_s": round(float(at), 3), "to_shards": step.get("to_shards"),
               "from_shards": step.get("from_shards"), "took_s": (step.get("took_ms") or 0) / 1000.0,
               "frozen_ms": step.get("frozen_ms"), "moved_users": step.get("moved_users"),
               "moved_records": step.get("moved_records"), "moved_stock": step.get("moved_stock"),
               "error": step.get("error")}  # fmt: skip
        rows.append(row)
    return rows


def _since(moment: float | None, start: float | None) -> float | None:
    return moment - start if moment is not None and start is not None else None


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
    title: str = "claimcore demo",
    run: dict[str, Any] | None = None,
    front_cpu: Mapping[str, Any] | None = None,
    max_lateness_ms: float | None = None,
    stock_samples: Sequence[tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Everything a run's report says, as a JSON-ready dict, with the checks.

    users is the number of distinct users that claimed; run, if given, describes how the
    load was made (targets, arrival shape, mode, ...) and is kept as it is. front_cpu: the
    nodes' CPU counters read around the run (front_cpu_figures), None when not measured.
    stock_samples: the campaign's remaining stock as read from the server during the run,
    (seconds since the start, remaining) pairs, if the caller read it; the report draws the
    stock from the replies either way (STOCK_DERIVED).
    """
    dup_users, dup_vouchers, distinct = find_duplicates(merged["pairs"])
    outcomes = {outcome_name(k): int(v) for k, v in sorted(merged["outcomes"].items())}
    replies = sum(outcomes.values())
    start = merged["start"]
    end = merged["end"]
    wall = (end - start) if start is not None and end is not None else math.nan
    sold_out_ms = int(server.get("sold_out_at_ms") or 0)
    sold_out = sold_out_ms / 1000.0 if sold_out_ms else None
    server_granted = int(server.get("granted", 0))
    remaining = server.get("remaining")
    tick_s = merged["tick_s"] or 1.0
    before_s, after_s = phase_rates(merged["ticks"], tick_s, start, end, sold_out)
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
        server_remaining=None if remaining is None else int(remaining),
    )
    lateness = latency_summary(merged["lateness"])
    warning, kept_up = behind_plan(lateness, max_lateness_ms)
    if kept_up is not None:
        checks.append(kept_up)
    slice_s = merged["slice_s"] or 0.1
    per_slice = flow_series(merged["flow"], merged["slices"], merged["response_slices"], slice_s, inventory)
    report: dict[str, Any] = {"title": title, "campaign": campaign_id}
    if run is not None:
        report["run"] = run
    report.update(
        {
            "inventory": inventory,
            "shards": shards,
            "users": users,
            "processes": processes,
            "concurrency": concurrency,
            "requests_sent": int(merged["sent"]),
            "calls": int(merged["calls"]),
            "replies": replies,
            "outcomes": outcomes,
            "transient_failures": {k: int(v) for k, v in sorted(merged["transient"].items())},
            "rate_limited_resends": int(merged["rate_limited_resends"]),
            "transport_errors": {k: int(v) for k, v in sorted(merged["errors"].items())},
            "transport_error_examples": list(merged["error_examples"][:EXAMPLES_KEPT]),
            "settled_by_getclaim": int(merged["settled"]),
            "unsettled": int(merged["unsettled"]),
            "skipped_follow_ups": int(merged["skipped_follow_ups"]),
            "distinct_vouchers": distinct,
            "granted": server_granted,
            "remaining": int(remaining or 0),
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
            "time_to_sold_out_server_s": _since(sold_out, start),
            "time_to_first_sold_out_reply_s": _since(merged["first_sold_out"], start),
            "time_to_last_grant_reply_s": _since(merged["last_granted"], start),
            "sold_out_at_ms": sold_out_ms,
            "claims_per_s": replies / wall if wall and wall > 0 else math.nan,
            "claims_per_s_before_sold_out": before_s,
            "claims_per_s_after_sold_out": after_s,
            "replies_per_second": per_second(merged["ticks"], tick_s),
            "latency_ms": latency_summary(merged["latency"]),
            "response_ms": latency_summary(merged["response"]),
            "lateness_ms": lateness,
            "behind_plan": warning,
            "max_lateness_ms": max_lateness_ms,
            "series": throughput_series(
                merged["ticks"], merged["slices"], tick_s, merged["slice_s"] or tick_s
            ),
            "slice_s": slice_s,
            "flow_totals": flow_totals(merged["flow"]),
            "per_slice": per_slice,
            "per_second": per_second_rows(per_slice, slice_s),
            "stock_remaining_source": STOCK_DERIVED,
            "stock_samples": [{"t_s": float(t), "remaining": int(n)} for t, n in stock_samples or ()],
            "reshards": reshard_rows((run or {}).get("reshards") or [], start),
            "latency_distribution": latency_distribution(merged["latency"], merged["response"]),
            # Standard HdrHistogram V2 (compressed, base64) of the whole run, in microseconds: any
            # HdrHistogram implementation decodes them and adds them up across runs.
            "histograms": {name: merged[name].encode() for name in _HISTOGRAMS},
            "redeems": {k: int(v) for k, v in sorted(merged["redeems"].items())},
            "redeem_errors": {k: int(v) for k, v in sorted(merged["redeem_errors"].items())},
            "answered_locally": local_answer_figures(
                int(merged["answered_locally"]), merged["ticks"], tick_s, start, sold_out),
            "local_to_holders": int(merged["local_to_holders"]),
            "client": {k: int(v) for k, v in sorted(merged["client"].items())},
            "front_cpu": front_cpu_figures(front_cpu, replies),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            "failed": [c.name for c in checks if not c.ok],
            "ok": all(c.ok for c in checks),
        }
    )
    return report
