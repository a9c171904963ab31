"""Arrival traces on disk: record a run's plan, replay it later with the same timing and ids.

A trace is CSV text, one claim a line, in order of planned time:

    offset_ms,user_id,request_id,kind
    0.412,u000000,5f3a9c1e-0,first
    137.006,u000000,5f3a9c1e-0,replay

offset_ms has exactly microsecond resolution (three decimals), so writing a plan and
reading it back gives the same offsets. kind is first, replay (the first claim's
request_id again) or double_tap (a new request_id). Ids contain no commas (their alphabet
excludes them), so no quoting is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from claimcore.loadtest.arrivals import KINDS, Event, Plan

HEADER = "offset_ms,user_id,request_id,kind"


class TraceError(ValueError):
    """A trace file that cannot be read as a plan; the message names the line."""


def _format_ms(offset_us: int) -> str:
    return f"{offset_us // 1000}.{offset_us % 1000:03d}"


def write_trace(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write the plan to path (replacing it), in planned order."""
    with open(path, "w", encoding="ascii", newline="\n") as out:
        out.write(HEADER + "\n")
        lines = []
        for offset, user, request, kind in zip(
            plan.offsets_us, plan.users, plan.request_ids, plan.kinds, strict=True
        ):
            lines.append(f"{_format_ms(offset)},{user},{request},{KINDS[kind]}\n")
            if len(lines) >= 10_000:
                out.writelines(lines)
                lines.clear()
        out.writelines(lines)


def read_trace(path: str | os.PathLike[str]) -> Plan:
    """Read a trace written by write_trace (or by hand); raises TraceError on bad content."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise TraceError(f"{path}: line 1 must be the header {HEADER!r}")
    events: list[Event] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 4:
            raise TraceError(f"{path}:{number}: expected 4 fields, found {len(fields)}: {line!r}")
        offset_text, user, request, kind = (f.strip() for f in fields)
        try:
            offset_us = round(float(offset_text) * 1000)
        except ValueError:
            raise TraceError(f"{path}:{number}: offset_ms {offset_text!r} is not a number") from None
        if not 0 <= offset_us < 86_400_000_000:
            raise TraceError(f"{path}:{number}: offset_ms {offset_text} is outside 0..86400000")
        if not user or not request:
            raise TraceError(f"{path}:{number}: user_id and request_id must not be empty")
        if kind not in KINDS:
            raise TraceError(f"{path}:{number}: kind {kind!r} is not one of {', '.join(KINDS)}")
        events.append(Event(offset_us, user, request, kind))
    if not events:
        raise TraceError(f"{path}: the trace holds no claims")
    plan = Plan.from_events(events)
    problems = plan.check()
    if problems:
        raise TraceError(f"{path}: " + "; ".join(problems))
    return plan
