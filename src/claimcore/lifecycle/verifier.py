"""The external verifier hook at redemption: the national eligibility system's say.

Before a redemption is recorded, the node may ask an external verifier
whether this person may use these vouchers on this order. The hook is
pluggable: anything with `async verify(request) -> Verdict` will do, and
claimcore ships one that POSTs the request as JSON to a URL
(`claimcore serve --verifier-url http://host:port/path`).

Whatever the verifier does, the outcome is clear and nothing is written
unless it said yes: NOT_VERIFIED (it said no, with its reason), or
VERIFICATION_UNAVAILABLE (it did not answer in time, or not sensibly). A
caller may retry either later with the same order id.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class VerifyRequest:
    campaign_id: str
    category: str
    user_id: str
    voucher_ids: list[str]
    merchant_id: str
    order_id: str
    order_amount_cents: int
    sn_codes: list[str]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


class VerifierUnavailable(Exception):
    """The verifier did not answer in time, or not with a verdict."""


class Verifier(Protocol):
    async def verify(self, request: VerifyRequest) -> Verdict: ...


class HttpVerifier:
    """POST {request as JSON} to a URL; expects 200 and {"ok": bool, "reason": str}.

    Plain HTTP/1.1 over asyncio streams, one connection per call, bounded by
    `timeout_s` from connecting to the last byte.
    """

    def __init__(self, url: str, timeout_s: float = 0.3) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--verifier-url must be http://host[:port]/path, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s

    async def verify(self, request: VerifyRequest) -> Verdict:
        try:
            return await asyncio.wait_for(self._post(json.dumps(asdict(request)).encode()), self.timeout_s)
        except (TimeoutError, OSError, ValueError, KeyError) as exc:
            where = f"{self.host}:{self.port}"
            raise VerifierUnavailable(f"verifier at {where}: {type(exc).__name__} {exc}") from exc

    async def _post(self, body: bytes) -> Verdict:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise ValueError(f"answered {head[:60]!r}")
        answer = json.loads(payload)
        if not isinstance(answer, dict) or not isinstance(answer["ok"], bool):
            raise ValueError(f"not a verdict: {payload[:100]!r}")
        return Verdict(answer["ok"], str(answer.get("reason", "")))
