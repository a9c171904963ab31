"""When claims arrive: arrival shapes, and the claim plan built on them.

An arrival shape is a pure function of (shape, count, seed): sorted offsets in whole
microseconds from the common start of a run. Offsets are whole microseconds so that a
recorded trace (claimcore.loadtest.recording) replays them exactly.

The plan says who claims when: user k (in order of arrival) is `user_id(k)`; a share of
them resends its request_id later (a replay, as after a lost reply), a share taps twice
with a new request_id. A follow-up is planned within `follow_up_within_s` of its user's
first claim; the driver never sends it before that first claim is answered, as an app
would not.
"""

from __future__ import annotations

import math
import random
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

SHAPES = ("burst", "ramp", "poisson", "launch")
#: Event kinds, as written in traces; a plan stores their index.
KINDS = ("first", "replay", "double_tap")
FIRST, REPLAY, DOUBLE_TAP = range(3)
US = 1_000_000


def user_id(index: int) -> str:
    """The generated user ids: u000000, u000001, ..."""
    return f"u{index:06d}"


@dataclass(frozen=True)
class ArrivalShape:
    """How arrivals spread over time.

    burst:   uniformly within the first `duration_s` (0: all at the very start).
    ramp:    a rate rising linearly from 0 over `duration_s`.
    poisson: independent arrivals at `rate` per second (for as long as it takes).
    launch:  (1 - tail_share) of the arrivals uniformly within the first `launch_s`, the
             rest in a tail decaying exponentially until `duration_s`.
    """

    kind: str = "burst"
    duration_s: float = 1.0
    rate: float = 0.0
    tail_share: float = 0.3
    launch_s: float = 1.0

    def problems(self) -> list[str]:
        """What is wrong with these parameters (empty when usable)."""
        out = []
        if self.kind not in SHAPES:
            out.append(f"arrival must be one of {', '.join(SHAPES)}, not {self.kind!r}")
        if not 0 <= self.duration_s <= 86_400:
            out.append("--duration must be within 0..86400 seconds")
        if self.kind == "ramp" and self.duration_s <= 0:
            out.append("a ramp needs --duration > 0")
        if self.kind == "poisson" and not self.rate > 0:
            out.append("poisson arrivals need --rate > 0")
        if self.kind == "launch":
            if not 0 <= self.tail_share <= 1:
                out.append("--tail-share must be within 0..1")
            if not self.launch_s > 0:
                out.append("--launch-window must be > 0")
            elif self.tail_share > 0 and self.duration_s <= self.launch_s:
                out.append("a launch with a tail needs --duration > --launch-window")
        return out

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"shape": self.kind}
        if self.kind == "poisson":
            info["rate"] = self.rate
        else:
            info["duration_s"] = self.duration_s
        if self.kind == "launch":
            info.update(launch_s=self.launch_s, tail_share=self.tail_share)
        return info


def _stratified(count: int, rng: random.Random) -> Iterator[float]:
    """count increasing points in [0, 1), one uniformly within each of count equal strata."""
    for i in range(count):
        yield (i + rng.random()) / count


def arrival_offsets(shape: ArrivalShape, count: int, seed: int) -> array:
    """Sorted arrival offsets in microseconds, array('q') of length count."""
    problems = shape.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = random.Random(f"arrivals:{seed}")
    d = shape.duration_s
    out = array("q")
    if shape.kind == "burst":
        out.extend(round(u * d * US) for u in _stratified(count, rng))
    elif shape.kind == "ramp":
        # The rate grows as t, so the share arrived by t is (t/d)**2.
        out.extend(round(d * math.sqrt(u) * US) for u in _stratified(count, rng))
    elif shape.kind == "poisson":
        t = 0.0
        for _ in range(count):
            t += rng.expovariate(shape.rate)
            out.append(round(t * US))
    else:
        tail = round(count * shape.tail_share)
        out.extend(round(u * shape.launch_s * US) for u in _stratified(count - tail, rng))
        # A truncated exponential over [launch_s, d): a third of the tail's length per e-fold.
        span = d - shape.launch_s
        tau = span / 3.0
        mass = 1.0 - math.exp(-span / tau) if tail else 1.0
        out.extend(
            round((shape.launch_s - tau * math.log1p(-u * mass)) * US) for u in _stratified(tail, rng)
        )
    return out


class Event(NamedTuple):
    offset_us: int
    user_id: str
    request_id: str
    kind: str


@dataclass
class Plan:
    """The claims of a run in order of planned time: four columns of equal length."""

    offsets_us: array
    users: list[str]
    request_ids: list[str]
    kinds: bytearray

    def __len__(self) -> int:
        return len(self.offsets_us)

    def events(self) -> Iterator[Event]:
        for offset, user, request, kind in zip(
            self.offsets_us, self.users, self.request_ids, self.kinds, strict=True
        ):
            yield Event(offset, user, request, KINDS[kind])

    def distinct_users(self) -> int:
        return self.kinds.count(FIRST)

    def span_s(self) -> float:
        return self.offsets_us[-1] / US if len(self) else 0.0

    def counts(self) -> dict[str, int]:
        return {name: self.kinds.count(k) for k, name in enumerate(KINDS)}

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> Plan:
        """A plan from events (kinds by name); see check() for validity.

        Sorted by offset, first claims ahead of follow-ups at the same instant, otherwise in
        the given order (stable): the order plan_claims makes, so a trace reads back as it was.
        """
        ordered = sorted(events, key=lambda e: (e.offset_us, e.kind != "first"))
        return cls(
            array("q", (e.offset_us for e in ordered)),
            [e.user_id for e in ordered],
            [e.request_id for e in ordered],
            bytearray(KINDS.index(e.kind) for e in ordered),
        )

    def check(self) -> list[str]:
        """Why the driver could not run this plan (empty when it can)."""
        problems: list[str] = []
        firsts: dict[str, tuple[int, str]] = {}
        previous = 0
        for n, (offset, user, request, kind) in enumerate(
            zip(self.offsets_us, self.users, self.request_ids, self.kinds, strict=True)
        ):
            if len(problems) >= 10:
                break
            if offset < previous:
                problems.append(f"event {n}: offsets are not in order")
            previous = offset
            if kind == FIRST:
                if user in firsts:
                    problems.append(f"event {n}: user {user} has a second 'first' claim")
                firsts[user] = (offset, request)
                continue
            first = firsts.get(user)
            if first is None:
                problems.append(f"event {n}: {KINDS[kind]} of {user} comes before its first claim")
            elif kind == REPLAY and request != first[1]:
                problems.append(f"event {n}: replay of {user} has request_id {request}, not {first[1]}")
            elif kind == DOUBLE_TAP and request == first[1]:
                problems.append(f"event {n}: double_tap of {user} reuses the first request_id")
        return problems

    def partition(self, parts: int) -> list[Plan]:
        """Split into `parts` plans by user (all of a user's claims land in one), keeping order."""
        out = [Plan(array("q"), [], [], bytearray()) for _ in range(parts)]
        for offset, user, request, kind in zip(
            self.offsets_us, self.users, self.request_ids, self.kinds, strict=True
        ):
            p = out[zlib.crc32(user.encode()) % parts]
            p.offsets_us.append(offset)
            p.users.append(user)
            p.request_ids.append(request)
            p.kinds.append(kind)
        return out

    def pack(self) -> dict[str, Any]:
        """A form that pickles fast (a few large strings and byte blocks, not a million tuples)."""
        return {
            "offsets_us": self.offsets_us.tobytes(),
            "users": "\n".join(self.users),
            "request_ids": "\n".join(self.request_ids),
            "kinds": bytes(self.kinds),
        }

    @classmethod
    def unpack(cls, packed: dict[str, Any]) -> Plan:
        offsets = array("q")
        offsets.frombytes(packed["offsets_us"])
        n = len(offsets)
        users = packed["users"].split("\n") if n else []
        requests = packed["request_ids"].split("\n") if n else []
        return cls(offsets, users, requests, bytearray(packed["kinds"]))


def plan_claims(
    *,
    users: int,
    shape: ArrivalShape,
    seed: int,
    retry_share: float = 0.0,
    double_tap_share: float = 0.0,
    follow_up_within_s: float = 0.0,
    run_tag: str = "r",
) -> Plan:
    """The claims of `users` distinct users arriving as `shape` says; a pure function of its input.

    run_tag starts every request_id (`{run_tag}-{k}`, `{run_tag}-{k}-t` for a second tap), so
    two runs against one campaign do not replay each other's grants.
    """
    offsets = arrival_offsets(shape, users, seed)
    rng = random.Random(f"follow-ups:{seed}")
    within_us = round(follow_up_within_s * US)
    follow_ups: list[tuple[int, int, int]] = []  # (offset, user index, kind)
    for k in range(users):
        replay = rng.random() < retry_share
        tap = rng.random() < double_tap_share
        if replay:
            follow_ups.append((offsets[k] + rng.randint(0, within_us), k, REPLAY))
        if tap:
            follow_ups.append((offsets[k] + rng.randint(0, within_us), k, DOUBLE_TAP))
    follow_ups.sort()
    plan = Plan(array("q"), [], [], bytearray())

    def add(offset: int, k: int, kind: int) -> None:
        plan.offsets_us.append(offset)
        plan.users.append(user_id(k))
        plan.request_ids.append(f"{run_tag}-{k}-t" if kind == DOUBLE_TAP else f"{run_tag}-{k}")
        plan.kinds.append(kind)

    # Merge the sorted first claims with the sorted follow-ups; at equal times firsts go first.
    j = 0
    for k in range(users):
        while j < len(follow_ups) and follow_ups[j][0] < offsets[k]:
            add(*follow_ups[j])
            j += 1
        add(offsets[k], k, FIRST)
    for f in follow_ups[j:]:
        add(*f)
    return plan
