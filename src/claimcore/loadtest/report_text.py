"""The text and JSON of a run's report: the table `claimcore demo` and `claimcore loadgen` print,
and the JSON they write.

Apart from claimcore.loadtest.report, which works out the figures and the checks and returns
them as a dict; this file only renders such a finished dict and computes nothing of its own.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from claimcore.loadtest.report import QUANTILES

#: Seconds of per-second throughput the text report shows (the JSON has all of them).
THROUGHPUT_SHOWN_S = 12
#: Rows of the per-second table at most: a longer run is shown in steps of several seconds.
PER_SECOND_ROWS = 20
#: Below this many characters for a value beside the longest label, the label column narrows.
MIN_VALUE_WIDTH = 30
#: The per-second table's columns: heading, per_second key.
PER_SECOND_COLUMNS = (("planned", "planned"), ("sent", "sent"), ("replies", "replies"),
                      ("granted", "granted_first"), ("sold out", "sold_out"),
                      ("stock left", "stock_remaining"))


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width of the terminal the report goes to: $COLUMNS if set, else the terminal's own; None when
    the stream is not a terminal (a file or a pipe: lines are not wrapped)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    return None


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


def _ms(value: Any) -> str:
    """Milliseconds with enough digits for sub-millisecond latencies."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f} s"


def _percentiles(summary: Mapping[str, Any]) -> str:
    parts = [f"{name} {_ms(summary.get(name))}" for name, _ in QUANTILES]
    return " · ".join([*parts, f"max {_ms(summary.get('max'))}"])


def _run_rows(run: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    arrival = ", ".join(f"{k} {v}" for k, v in run.get("arrival", {}).items())
    mode = run.get("mode", "")
    if mode == "batch":
        mode += f" ({run.get('batch_size')} per call)"
    elif mode == "auto":
        mode += " (an app backend per process: ClaimClient, batching and watching)"
    rows = [
        ("targets", ", ".join(run.get("targets", [])), ""),
        ("arrivals", arrival + (f"; planned span {_secs(run.get('planned_span_s'))}"), ""),
        ("mode", f"{mode}; deadline {run.get('deadline_s')} s, up to {run.get('max_attempts')} sends"
                 + (f"; {run['connections']} connections per process and node"
                    if run.get("connections", 1) > 1 else ""), ""),
    ]
    for step in run.get("reshards") or []:
        if "error" in step:
            rows.append((f"reshard to {step['to_shards']}",
                         f"at {step['at_s']:.1f} s failed: {step['error']}", "FAIL"))
        else:
            rows.append((
                f"reshard {step['from_shards']} -> {step['to_shards']}",
                f"at {step['at_s']:.1f} s; {_n(step['moved_users'])} users moved, "
                f"frozen {step['frozen_ms']} ms, done in {step['took_ms']} ms "
                "(longest claim: latency max)", ""))
    if run.get("replayed_from"):
        rows.append(("replayed from", str(run["replayed_from"]), ""))
    if run.get("recorded_to"):
        rows.append(("recorded to", str(run["recorded_to"]), ""))
    return rows


def _redemption_rows(report: dict[str, Any], verdict: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """Rows for the vouchers redeemed during the run and the reconcile after it, if any."""
    rows = []
    if report.get("redeems") or report.get("redeem_errors"):
        done = ", ".join(f"{k} {_n(v)}" for k, v in report["redeems"].items())
        failed = ", ".join(f"{k} {_n(v)}" for k, v in report["redeem_errors"].items())
        rows.append(("redeemed during the run", done + (f"; gave up: {failed}" if failed else ""), ""))
    if "reconcile" in report:
        wrong = [f"{f['name']}: ledger {f['from_ledger']} live {f['live']}"
                 for f in report["reconcile"]["figures"] if not f["ok"]]
        rows.append(("reconcile (ledger vs live)", "; ".join(wrong) or "no difference", verdict("reconcile")))
    return rows


def front_cpu_text(report: Mapping[str, Any]) -> str:
    """The front nodes' CPU-seconds over the run, or "not measured" (no figure is made up)."""
    cpu = report.get("front_cpu") or {}
    if not cpu.get("measured"):
        if cpu.get("nodes"):
            return f"not measured: {cpu.get('why', '')}"
        return "not measured (loadgen --node-metrics URL)"
    per_million = cpu.get("per_million_claims")
    nodes = len(cpu.get("nodes", []))
    return (f"{cpu['cpu_s']:,.2f} CPU-s over {nodes} node{'s' if nodes != 1 else ''} "
            f"({'n/a' if per_million is None else f'{per_million:,.1f}'} CPU-s per million claims)")


def local_answers_text(report: Mapping[str, Any]) -> str:
    """Claims the app backend's client answered itself, and their share after sold out."""
    local = report.get("answered_locally") or {}
    if not report.get("client"):
        return "none: every claim went to a node (only loadgen --client auto answers locally)"
    share, after = local.get("share_after_sold_out"), local.get("claims_after_sold_out")
    text = f"{_n(local.get('count', 0))}"
    if after:
        text += f" ({100 * (share or 0.0):.1f} % of the {_n(after)} claims after sold out)"
    holders = report.get("local_to_holders", 0)
    if holders:
        text += f"; {_n(holders)} second taps of voucher holders (a node says ALREADY_CLAIMED)"
    return text


def planned_text(report: Mapping[str, Any]) -> str:
    """The offered load against the achieved: claims planned, first sends, replies."""
    totals = report.get("flow_totals") or {}
    if not totals.get("planned"):
        return "n/a (no per-slice counts in this report)"
    return (f"{_n(totals['planned'])}  (sent {_n(totals['sent'])} once and {_n(totals['resent'])} again; "
            f"replies {_n(totals['replies'])}; per second below)")


def granted_text(report: Mapping[str, Any]) -> str:
    """GRANTED replies, first grants apart from replays of a grant (the same voucher again), so that
    more GRANTED replies than vouchers never reads as an oversell."""
    granted = report["outcomes"].get("GRANTED", 0)
    totals = report.get("flow_totals") or {}
    first, replays = totals.get("granted_first", 0), totals.get("granted_replays", 0)
    if first + replays != granted or not granted:
        return _n(granted)
    return f"{_n(first)} first grants (+{_n(replays)} replays of a grant, not new vouchers)"


def per_second_table(rows: Sequence[Mapping[str, Any]], width: int | None) -> list[str]:
    """The offered and achieved load second by second (in steps of several seconds past
    PER_SECOND_ROWS), as lines no wider than width where the columns allow."""
    if not rows:
        return []
    step = max(1, math.ceil(len(rows) / PER_SECOND_ROWS))
    table = []
    for first in range(0, len(rows), step):
        group = rows[first:first + step]
        label = f"{first}" if step == 1 else f"{first}-{first + len(group)}"
        cells = [label] + [_n(sum(r[key] for r in group)) for _, key in PER_SECOND_COLUMNS[:-1]]
        stock = group[-1].get("stock_remaining")
        table.append(cells + [_n(stock)])
    heads = ["s" if step == 1 else "s (from-to)"] + [h for h, _ in PER_SECOND_COLUMNS]
    widths = [max(len(heads[n]), *(len(r[n]) for r in table)) for n in range(len(heads))]
    while width is not None and len(widths) > 4 and 1 + sum(w + 2 for w in widths) > width:
        widths.pop()  # stock left first, then sold out: the first columns are the point
        heads.pop()

    def line(cells: Sequence[str]) -> str:
        first_cell = f" {cells[0]:<{widths[0]}}"
        return first_cell + "".join(f"  {c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=False))

    title = ("per second: planned arrivals (the offered load), first sends, replies, first grants, "
             "SOLD_OUT replies, stock left (inventory - first grants)")
    out = _wrap(title, width, " ", "   ")
    out += [line(heads), *(line(cells[:len(widths)]) for cells in table)]
    return out


def _wrap(text: str, width: int | None, first: str, rest: str) -> list[str]:
    if width is None:
        return [first + text]
    return textwrap.wrap(text, width=max(20, width), initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False) or [first]


def _table(rows: Sequence[tuple[str, str, str]], width: int | None) -> list[str]:
    """The two-column table with verdicts; values wrap at width, and go under their label when the
    terminal is too narrow to keep them beside it."""
    label_w = max(len(r[0]) for r in rows)
    mark_w = max((len(r[2]) for r in rows), default=0)
    if width is None:
        value_w = min(100, max(len(r[1]) for r in rows))
        bar = "-" * (label_w + value_w + 10)
        return [bar, *(f" {label:<{label_w}}  {value:<{value_w}}  {mark}".rstrip()
                       for label, value, mark in rows), bar]
    mark_part = 2 + mark_w if mark_w else 0
    value_w = width - 3 - label_w - mark_part
    if value_w < MIN_VALUE_WIDTH:  # narrow: a shorter label column; longer labels get a line of their own
        label_w = max(8, width - 3 - mark_part - MIN_VALUE_WIDTH)
        value_w = max(12, width - 3 - label_w - mark_part)
    lines = ["-" * width]
    for label, value, mark in rows:
        wrapped = textwrap.wrap(value, width=value_w, break_on_hyphens=False) or [""]
        if len(label) > label_w:
            lines.append(f" {label:<{label_w + 2 + value_w}}  {mark}".rstrip())
        else:
            first = wrapped.pop(0)
            lines.append(f" {label:<{label_w}}  {first:<{value_w}}  {mark}".rstrip())
        lines.extend(" " * (label_w + 3) + more for more in wrapped)
    lines.append("-" * width)
    return lines


def _requests_row(report: Mapping[str, Any], transient: int, errors: int) -> tuple[str, str, str]:
    client = report.get("client") or {}
    if client:  # auto mode: the claims went to the client, which sent some of them on
        calls = (f"to the client; {_n(client.get('claims_sent', 0))} sent on in "
                 f"{_n(report.get('calls', 0))} calls, {_n(client.get('retries', 0))} resent by it")
    else:
        calls = f"in {_n(report.get('calls', 0))} calls"
    return ("requests sent", f"{_n(report['requests_sent'])}  ({calls}; replies {_n(report['replies'])}, "
            f"resent {_n(transient)}, transport errors {_n(errors)})", "")


def format_report(report: dict[str, Any], width: int | None = -1) -> str:
    """The human-readable report: a short two-column table with verdicts, then the load per second.

    width: the characters a line may take (None: no limit); by default the terminal's the report
    is printed to (terminal_width).
    """
    if width == -1:
        width = terminal_width()
    checks = {c["name"]: c for c in report["checks"]}

    def verdict(name: str) -> str:
        c = checks.get(name)
        return "" if c is None else ("PASS" if c["ok"] else "FAIL")

    outcomes = report["outcomes"]
    main = ("GRANTED", "ALREADY_CLAIMED", "SOLD_OUT")
    others = sum(v for k, v in outcomes.items() if k not in main)
    other_detail = ", ".join(f"{k} {v:,}" for k, v in outcomes.items() if k not in main)
    transient = sum(report["transient_failures"].values()) + report.get("rate_limited_resends", 0)
    errors = sum(report["transport_errors"].values())
    rows: list[tuple[str, str, str]] = [
        ("campaign", report["campaign"], ""),
        ("inventory / shards", f"{_n(report['inventory'])} / {report['shards']}", ""),
    ]
    if report.get("run"):
        rows += _run_rows(report["run"])
    rows += [
        (
            "users",
            f"{_n(report['users'])}  ({report['processes']} processes x "
            f"{report['concurrency']} concurrent)",
            "",
        ),
        _requests_row(report, transient, errors),
        ("front node CPU", front_cpu_text(report), ""),
        ("answered without reaching a node", local_answers_text(report), ""),
        ("planned arrivals", planned_text(report), ""),
        ("GRANTED", granted_text(report), ""),
        ("ALREADY_CLAIMED", _n(outcomes.get("ALREADY_CLAIMED", 0)), ""),
        ("SOLD_OUT", _n(outcomes.get("SOLD_OUT", 0)), ""),
        ("other outcomes", _n(others) + (f"  ({other_detail})" if other_detail else ""), ""),
        ("distinct vouchers (client)", _n(report["distinct_vouchers"]), ""),
        (
            "granted (server)",
            f"{_n(report['granted'])}  (remaining {_n(report['remaining'])})",
            verdict("stock conserved"),
        ),
        (
            "duplicates",
            f"{report['duplicates']}  ({report['duplicate_users']} users >1 voucher, "
            f"{report['duplicate_vouchers']} vouchers >1 user)",
            verdict("duplicates"),
        ),
        ("oversell", _n(report["oversell"]), verdict("oversell")),
        *_redemption_rows(report, verdict),
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
            f"{_secs(report['time_to_first_sold_out_reply_s'])}, last GRANTED reply (replays excluded) "
            f"{_secs(report['time_to_last_grant_reply_s'])}",
            "",
        ),
        (
            "claims/s",
            f"{_n(report['claims_per_s'])}  (wall {_secs(report['burst_wall_s'])}; "
            f"before sold out {_n(report['claims_per_s_before_sold_out'])}, "
            f"after {_n(report['claims_per_s_after_sold_out'])})",
            "",
        ),
    ]
    per_s = report.get("replies_per_second") or []
    if len(per_s) > 1 and not any((report.get("flow_totals") or {}).values()):  # no per-second table
        shown = " · ".join(f"{s}s {v:,}" for s, v in enumerate(per_s[:THROUGHPUT_SHOWN_S]))
        more = f" · ... ({len(per_s)} s)" if len(per_s) > THROUGHPUT_SHOWN_S else ""
        rows.append(("replies per second", shown + more, ""))
    rows.append(("latency ms (per call)", _percentiles(report["latency_ms"]), ""))
    if report["response_ms"].get("count"):
        rows.append(("response ms (from arrival)", _percentiles(report["response_ms"]), ""))
    if report.get("run") and report["lateness_ms"].get("count"):
        late = report["lateness_ms"]
        rows.append(
            (
                "send lateness ms",
                f"p50 {_ms(late['p50'])} · p99 {_ms(late['p99'])} · max {_ms(late['max'])}",
                "",
            )
        )
    if report["settled_by_getclaim"] or report["unsettled"]:
        rows.append(
            (
                "unknown outcomes",
                f"{report['settled_by_getclaim']} settled as granted by GetClaim, "
                f"{report['unsettled']} could not be settled",
                "",
            )
        )
    lines = [f"{report.get('title', 'claimcore demo')}: {report['campaign']}", *_table(rows, width)]
    counted = any((report.get("flow_totals") or {}).values())  # not in a report from before the counts
    table = per_second_table(report.get("per_second") or [], width) if counted else []
    if table:
        lines += [*table, "-" * (width or len(lines[1]))]
    for key, title in (
        ("retry_violation_examples", "retry violations"),
        ("double_tap_unexpected_examples", "unexpected double-tap replies"),
        ("voucher_anomaly_examples", "voucher anomalies"),
        ("lost_voucher_examples", "vouchers missing from GetClaim"),
        ("transport_error_examples", "transport errors"),
    ):
        if report.get(key):
            lines.append(f" {title} (first {len(report[key])}):")
            for example in report[key]:
                lines += _wrap(example, width, "   ", "     ")
    dup = report["duplicate_examples"]
    if dup["users"]:
        lines.append(f" users holding >1 voucher (first {len(dup['users'])}):")
        lines.extend(f"   {u}: {', '.join(vs)}" for u, vs in dup["users"].items())
    if dup["vouchers"]:
        lines.append(f" vouchers seen for >1 user (first {len(dup['vouchers'])}):")
        lines.extend(f"   {v}: {', '.join(us)}" for v, us in dup["vouchers"].items())
    if report.get("behind_plan"):
        lines += _wrap(f"WARNING: {report['behind_plan']}", width, " ", "   ")
    if report["ok"]:
        lines.append(" RESULT: PASS (all checks passed)")
    else:
        for c in report["checks"]:
            if not c["ok"]:
                lines += _wrap(f"FAILED {c['name']}: {c['detail']}", width, " ", "   ")
        lines.append(f" RESULT: FAIL ({', '.join(report['failed'])})")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
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
