"""The history: every call the driver made and what it was answered, in the order they began.

Unlike claimcore.harness.history (claims only), a call here is any RPC of the public API, so the
checker can hold redemptions, reversals, releases and eligibility changes against Redis too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# gRPC codes that prove nothing was written; any other failure leaves the outcome unknown.
DEFINITE_ERRORS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "UNIMPLEMENTED",
        "OUT_OF_RANGE",
        "ABORTED",
    }
)
UNKNOWN = "UNKNOWN_OUTCOME"  # the call failed in a way that may have written (UNAVAILABLE, a kill, ...)
REFUSED = "REFUSED"  # the call failed in a way that proves nothing was written


@dataclass
class Call:
    call_id: int
    op: str  # the simulated operation this call belongs to (claim, double_tap, ...)
    rpc: str  # Claim, ClaimBatch, Redeem, Reverse, Release, ...
    node: int
    campaign: str
    user: str = ""
    request_id: str = ""  # claims
    channel: str = ""  # claims and redemptions: the caller's channel
    order_id: str = ""  # redemptions and reversals
    vouchers: tuple[str, ...] = ()  # sent: redeemed, released (all parts of a stacked order)
    parts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # stacked: (campaign, vouchers) each
    sns: tuple[str, ...] = ()
    t_invoke: float = 0.0
    t_complete: float | None = None
    outcome: str = UNKNOWN  # the reply's outcome name, REFUSED, or UNKNOWN
    error: str = ""  # the gRPC status name of a failed call
    answer: dict[str, Any] = field(default_factory=dict)  # what the reply said (voucher, ...)

    @property
    def answered(self) -> bool:
        return self.outcome not in (UNKNOWN, REFUSED)

    def keys(self) -> set[str]:
        """What the call touched, for picking the minimal history of a violation."""
        out = {f"user:{self.user}", f"order:{self.user}|{self.order_id}"} if self.user else set()
        out.update(f"voucher:{v}" for v in self.vouchers)
        out.update(f"sn:{s}" for s in self.sns)
        if self.answer.get("voucher"):
            out.add(f"voucher:{self.answer['voucher']}")
        out.update(f"voucher:{v}" for v in self.answer.get("vouchers", ()))
        if self.rpc == "Reshard":  # what changes a campaign's map
            out.add(f"campaign:{self.campaign}")
        elif self.rpc in ("kill -9", "restart"):  # what empties a node's caches
            out.add(f"node:{self.node}")
        return out

    def line(self, t0: float) -> str:
        begun = f"{self.t_invoke - t0:8.3f}"
        took = "open" if self.t_complete is None else f"{(self.t_complete - self.t_invoke) * 1000:.0f}ms"
        what = [self.rpc, f"node{self.node}", self.campaign]
        if self.user:
            what.append(f"user={self.user}")
        if self.request_id:
            what.append(f"rid={self.request_id}")
        if self.channel:
            what.append(f"ch={self.channel}")
        if self.order_id:
            what.append(f"order={self.order_id}")
        if self.parts:
            what.append("parts=" + ";".join(f"{c}:{','.join(v)}" for c, v in self.parts))
        elif self.vouchers:
            what.append("vouchers=" + ",".join(self.vouchers))
        if self.sns:
            what.append("sns=" + ",".join(self.sns))
        answer = self.outcome + (f"({self.error})" if self.error else "")
        extra = " ".join(f"{k}={v}" for k, v in self.answer.items() if v not in ("", None, [], ()))
        head = f"  t={begun}s {took:>6} #{self.call_id} [{self.op}] {' '.join(what)}"
        return f"{head} -> {answer} {extra}".rstrip()


class CallLog:
    """Append-only; the driver is one asyncio loop, so no lock is needed."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.t0 = time.monotonic()

    def begin(self, op: str, rpc: str, node: int, campaign: str, **fields: Any) -> Call:
        call = Call(len(self.calls), op, rpc, node, campaign, t_invoke=time.monotonic(), **fields)
        self.calls.append(call)
        return call

    @staticmethod
    def end(call: Call, outcome: str, **answer: Any) -> Call:
        call.t_complete = time.monotonic()
        call.outcome = outcome
        call.answer.update(answer)
        return call

    @staticmethod
    def failed(call: Call, code: str) -> Call:
        call.t_complete = time.monotonic()
        call.error = code
        call.outcome = REFUSED if code in DEFINITE_ERRORS else UNKNOWN
        return call

    def touching(self, keys: set[str], limit: int = 40, until: int = -1) -> list[Call]:
        """The calls touching any of keys (the last `limit` of them, up to call id `until`)."""
        calls = self.calls if until < 0 else self.calls[: until + 1]
        found = [c for c in calls if c.keys() & keys]
        return found[-limit:]

    def __len__(self) -> int:
        return len(self.calls)
