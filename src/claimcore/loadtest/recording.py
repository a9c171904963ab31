"""Arrival traces on disk: record a run's plan, replay it later with the same timing and ids.

A trace is CSV text, one claim a line, in order of planned time, after leading comment
lines (`#`) that say what the run was made of (its spec):

    # claimcore loadgen trace
    # version=1
    # campaign.inventory=500
    # campaign.shards=4
    # campaign.per_user_limit=1
    # campaign.admission_rate=0
    # arrival.shape=launch
    # arrival.users=3000
    # seed=7
    offset_ms,user_id,request_id,kind
    0.412,u000000,5f3a9c1e-0,first
    137.006,u000000,5f3a9c1e-0,replay

offset_ms has exactly microsecond resolution (three decimals), so writing a plan and
reading it back gives the same offsets. kind is first, replay (the first claim's
request_id again) or double_tap (a new request_id). Ids contain no commas (their alphabet
excludes them), so no quoting is needed.

The spec lines are `# key=value`, the value JSON (a string is written bare unless it would
read as another JSON value); a `#` line without `=` is a remark. CSV readers that skip
comment lines read the claims as before (pandas: `read_csv(path, comment="#")`; shell:
`grep -v '^#'`). Keys:

- `version`: 1.
- `campaign.<field>`: the claimed campaign's settings, named as the fields of the
  claimcore.v1.Campaign message (inventory, shards, per_user_limit, admission_rate always;
  others, such as category, regions, value_cents, only when set), without its id and name.
  Times are relative to the start of sending: `campaign.starts_in_ms` and
  `campaign.ends_in_ms` (absent: open at once, never ends) instead of starts_at_ms and
  ends_at_ms, and `campaign.rounds` is a list of {"amount", "release_in_ms"}.
- `arrival.<name>`: how the plan was made (shape, users, duration_s, rate, tail_share,
  launch_window_s, retry_share, double_tap_share, follow_up_within_s); for the record only,
  the claim lines are the plan.
- `seed`: the run's seed.

A trace written before specs existed (header on line 1) still reads; it just has no spec.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from claimcore.loadtest.arrivals import KINDS, Event, Plan
from claimcore.v1 import claims_pb2

HEADER = "offset_ms,user_id,request_id,kind"
TITLE = "claimcore loadgen trace"
SPEC_VERSION = 1
#: Campaign fields a trace does not carry as they are: the id and name are the new run's,
#: and absolute times become relative ones (_RELATIVE_TIMES).
_NOT_CARRIED = ("campaign_id", "name", "starts_at_ms", "ends_at_ms", "rounds")
_RELATIVE_TIMES = {"starts_at_ms": "starts_in_ms", "ends_at_ms": "ends_in_ms"}
_ALWAYS = ("inventory", "shards", "per_user_limit", "admission_rate")
_CAMPAIGN_KEYS = frozenset(
    {f.name for f in claims_pb2.Campaign.DESCRIPTOR.fields if f.name not in _NOT_CARRIED}
    | set(_RELATIVE_TIMES.values()) | {"rounds"}
)
_KNOWN = "known: version, seed, campaign.<field>, arrival.<name>"
_KEY = re.compile(r"[a-z_]+(\.[a-z_]+)?")


@dataclass
class Recording:
    """A trace read back: the plan, and the spec its comment lines carry (empty if none)."""

    plan: Plan
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def campaign(self) -> dict[str, Any] | None:
        """The recorded campaign's settings (campaign.* keys), or None for an old trace."""
        return self.spec.get("campaign")


class TraceError(ValueError):
    """A trace file that cannot be read as a plan; the message names the line."""


def _format_ms(offset_us: int) -> str:
    return f"{offset_us // 1000}.{offset_us % 1000:03d}"


# ---------------------------------------------------------------- the spec


def campaign_spec(campaign: claims_pb2.Campaign, sending_at_ms: int) -> dict[str, Any]:
    """A campaign's settings as a trace carries them (times relative to sending_at_ms)."""
    spec: dict[str, Any] = {name: getattr(campaign, name) for name in _ALWAYS}
    for fd, value in campaign.ListFields():
        if fd.name in _NOT_CARRIED or fd.name in spec:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        spec[fd.name] = list(value) if repeated else value
    for absolute, relative in _RELATIVE_TIMES.items():
        at = getattr(campaign, absolute)
        if at:
            spec[relative] = at - sending_at_ms
    if campaign.rounds:
        spec["rounds"] = [{"amount": r.amount, "release_in_ms": r.release_at_ms - sending_at_ms}
                          for r in campaign.rounds]  # fmt: skip
    return spec


def campaign_from_spec(
    spec: Mapping[str, Any], campaign_id: str, name: str, sending_at_ms: int
) -> claims_pb2.Campaign:
    """The Campaign to create from a trace's campaign spec; times relative to sending_at_ms.

    A start already past becomes 0 (open at once). Raises TraceError on a value that does
    not fit its field.
    """
    fields = {k: v for k, v in spec.items() if k not in ("rounds", *_RELATIVE_TIMES.values())}
    campaign = claims_pb2.Campaign(campaign_id=campaign_id, name=name)
    try:
        json_format.ParseDict(fields, campaign)
    except json_format.ParseError as exc:
        raise TraceError(f"campaign spec: {exc}") from None
    try:
        starts = int(spec.get("starts_in_ms", 0))
        ends = int(spec.get("ends_in_ms", 0))
        if starts > 0:
            campaign.starts_at_ms = sending_at_ms + starts
        if "ends_in_ms" in spec:
            campaign.ends_at_ms = sending_at_ms + ends
        for r in spec.get("rounds", []):
            release_at = sending_at_ms + int(r["release_in_ms"])
            campaign.rounds.add(amount=int(r["amount"]), release_at_ms=release_at)
    except (TypeError, ValueError, KeyError) as exc:
        raise TraceError(f"campaign spec: bad time or round: {exc!r}") from None
    return campaign


def _format_value(value: Any) -> str:
    if isinstance(value, str) and value == value.strip() and value and "\n" not in value:
        try:
            json.loads(value)
        except ValueError:
            return value  # reads back as itself
    return json.dumps(value, separators=(",", ":"))


def _spec_lines(spec: Mapping[str, Any]) -> list[str]:
    lines = [f"# {TITLE}\n", f"# version={SPEC_VERSION}\n"]
    for key, value in spec.items():
        if key == "version":
            continue
        if isinstance(value, Mapping):
            lines += [f"# {key}.{k}={_format_value(v)}\n" for k, v in value.items()]
        else:
            lines.append(f"# {key}={_format_value(value)}\n")
    return lines


def _read_spec_line(path: Any, number: int, line: str, spec: dict[str, Any]) -> None:
    body = line[1:].strip()
    key, sep, text = body.partition("=")
    if not sep:
        return  # a remark
    key, text = key.strip(), text.strip()
    if not _KEY.fullmatch(key):
        raise TraceError(f"{path}:{number}: {key!r} is not a spec key (a.b=value)")
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    group, dot, name = key.partition(".")
    if not dot:
        if key == "version":
            if value != SPEC_VERSION:
                raise TraceError(f"{path}:{number}: trace version {value!r}; this claimcore reads "
                                 f"version {SPEC_VERSION}")
        elif key != "seed":
            raise TraceError(f"{path}:{number}: unknown spec key {key!r} ({_KNOWN})")
        spec[key] = value
        return
    if group == "campaign" and name not in _CAMPAIGN_KEYS:
        raise TraceError(f"{path}:{number}: {key!r} is not a campaign field")
    if group not in ("campaign", "arrival"):
        raise TraceError(f"{path}:{number}: unknown spec key {key!r} ({_KNOWN})")
    spec.setdefault(group, {})[name] = value


# ---------------------------------------------------------------- the trace


def write_trace(plan: Plan, path: str | os.PathLike[str], spec: Mapping[str, Any] | None = None) -> None:
    """Write the plan to path (replacing it), in planned order, after the spec's comment lines.

    spec: {"campaign": {...}, "arrival": {...}, "seed": n} as the module docstring says (None:
    no spec lines, the old format).
    """
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        if spec:
            out.writelines(_spec_lines(spec))
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
    return read_recording(path).plan


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a trace and its spec lines; raises TraceError naming the line on bad content."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    lines = text.splitlines()
    spec: dict[str, Any] = {}
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        _read_spec_line(path, start + 1, lines[start], spec)
        start += 1
    if start >= len(lines) or lines[start].strip() != HEADER:
        where = "line 1" if not start else f"line {start + 1}, after the # lines,"
        raise TraceError(f"{path}: {where} must be the header {HEADER!r}")
    events: list[Event] = []
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
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
    if spec.get("campaign") is not None:
        try:  # refuse a spec that cannot make a Campaign now, not after the run started
            campaign_from_spec(spec["campaign"], "check", "check", 0)
        except TraceError as exc:
            raise TraceError(f"{path}: {exc}") from None
    return Recording(plan, spec)
