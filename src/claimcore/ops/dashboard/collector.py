"""What the dashboard shows, asked of the nodes: one snapshot per tick (docs/dashboard.md).

Each snapshot is collected from the nodes (--target) through `claimcore.security.access` (TLS, API key):
AdminService.ListCampaigns/GetCampaign for the figures (granted, remaining, per shard, sold-out time;
grants per second are the granted deltas), AdminService.ExportEvents once per campaign without a start
time for its first claim (the first grant in its ledger: time to sold out counts from there), the gRPC
health service for node and Redis health (a node answers NOT_SERVING while its Redis is unreachable),
and, with --metrics, the nodes' Prometheus endpoints (prometheus.py) for latency percentiles, the
outcome mix and the rejection reasons. Without --metrics those panels say so and everything else works.

The campaigns come in launch order: the live ones first (open, paused, not started, and one this
dashboard saw sell out or end within the last hour), by start time; then the others, most recent first. The
header's totals and the outcome mix cover the "focus", never old rehearsals: the live ones that have
started (open, paused, just sold out or ended); else, before a launch, the ones not started yet; else, with
--campaign, every campaign shown. A snapshot is plain JSON (no NaN or Infinity) for web.py to serve.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from claimcore.lifecycle import ledger
from claimcore.ops.dashboard import prometheus as m
from claimcore.security import access
from claimcore.v1 import claims_pb2, claims_pb2_grpc

RATE_WINDOW_S = 2.0  # grants/s and calls/s: over the last 2 s
RECENT_WINDOW_S = 10.0  # latency percentiles and outcome rates: over the last 10 s
SERIES_S = 120.0  # the sparklines' history
LIST_EVERY_S = 3.0  # how often the campaign list is asked again (without --campaign)
RPC_TIMEOUT_S = 2.0
HEALTH_TIMEOUT_S = 1.0
SCRAPE_TIMEOUT_S = 2.0
#: Codes after which another node is asked: the call may succeed there.
RETRY_ELSEWHERE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                   grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
                   grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}  # fmt: skip
HEALTH_NAMES = {
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
}
OUTCOMES = ("granted", "already_claimed", "sold_out", "not_started", "ended", "not_eligible",
            "rate_limited", "paused")  # fmt: skip
REDEEMED = "redeemed"
LIVE = ("OPEN", "PAUSED", "NOT_STARTED")
CLOSED_KEPT_S = 3600.0  # a campaign seen selling out or ending stays live (first, in the header) this long
#: A stream position after every entry: a cursor holding it for shards 0..s-1 makes ExportEvents
#: start at shard s's first entry.
PAST_THE_END = f"{2**64 - 1}-{2**64 - 2}"
FIRST_CLAIM_RETRY_S = 10.0  # a ledger read that failed (or found no grant) is tried again this much later


def _finite(value: Any) -> Any:
    """JSON without NaN or Infinity (the page's JSON.parse refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _ms(value: int) -> int | None:
    return int(value) if value else None


def _rpc_text(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code else "ERROR"
    hint = ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        hint = " (give the admin API key: --api-key or CLAIMCORE_API_KEY)"
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        hint = " (this API key is not the admin's)"
    return f"{name}: {details}{hint}"


class RateTracker:
    """A counter's rate over the last RATE_WINDOW_S, its peak, and a short history for the sparkline."""

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()
        self.series: deque[tuple[int, float]] = deque()
        self.peak = 0.0

    def add(self, t: float, value: float) -> float | None:
        self.points.append((t, value))
        while len(self.points) > 2 and self.points[1][0] <= t - RATE_WINDOW_S:
            self.points.popleft()
        t0, v0 = self.points[0]
        if t - t0 <= 0:
            return None
        rate = max(0.0, (value - v0) / (t - t0))
        self.peak = max(self.peak, rate)
        self.series.append((int(t * 1000), round(rate, 2)))
        while self.series and self.series[0][0] < (t - SERIES_S) * 1000:
            self.series.popleft()
        return rate


class Collector:
    """Asks the nodes for one snapshot at a time (tick)."""

    def __init__(self, targets: Sequence[str], metrics_urls: Sequence[str], campaigns: Sequence[str],
                 reach: access.Access, every_s: float, max_campaigns: int = 24) -> None:
        self.targets = list(targets)
        self.metrics_urls = list(metrics_urls)
        self.fixed = list(dict.fromkeys(campaigns))
        self.reach = reach
        self.every_s = every_s
        self.max_campaigns = max_campaigns
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.admin: dict[str, claims_pb2_grpc.AdminServiceStub] = {}
        self.health: dict[str, health_pb2_grpc.HealthStub] = {}
        self.node_state: dict[str, dict[str, Any]] = {t: {"status": "UNKNOWN", "since_ms": None}
                                                      for t in self.targets}
        self.ids: list[str] = list(self.fixed)
        self.listed = len(self.fixed)
        self.listed_at = -math.inf
        self.infos: dict[str, claims_pb2.CampaignInfo] = {}
        self.info_errors: dict[str, str] = {}
        self.stale_since: dict[str, float] = {}
        self.grant_rates: dict[str, RateTracker] = {}
        self.call_rates: dict[str, RateTracker] = {}
        self.total_peak = 0.0
        self.total_series: deque[tuple[int, float]] = deque()
        self.total_calls = RateTracker()
        self.errors: list[str] = []
        self.state = m.MetricsState(keep_s=max(SERIES_S, RECENT_WINDOW_S * 2))
        self.sources: dict[str, dict[str, Any]] = {u: {"url": u, "ok": None, "error": None}
                                                   for u in self.metrics_urls}
        self.first_redemption: dict[str, dict[str, Any]] = {}
        self.first_claim_ms: dict[str, int] = {}
        self.first_claim_tried: dict[str, float] = {}
        self.last_status: dict[str, str] = {}
        self.seen_closing: dict[str, float] = {}
        self.metrics_ssl = ssl.create_default_context(cafile=reach.ca or None)
        self.http: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Channels to the nodes and an HTTP client for their /metrics; inside the running loop."""
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S))
        for target in self.targets:
            channel = self.reach.aio_channel(target)
            self.channels[target] = channel
            self.admin[target] = claims_pb2_grpc.AdminServiceStub(channel)
            self.health[target] = health_pb2_grpc.HealthStub(channel)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        for channel in self.channels.values():
            await channel.close()

    # -- the nodes

    def _order(self) -> list[str]:
        rank = {"SERVING": 0, "UNKNOWN": 1, "SERVICE_UNKNOWN": 1, "NOT_SERVING": 2, "UNREACHABLE": 3}
        return sorted(self.targets, key=lambda t: rank.get(self.node_state[t]["status"], 1))

    async def _admin_call(self, method: str, request: Any) -> Any:
        last: grpc.RpcError | None = None
        for target in self._order():
            try:
                return await getattr(self.admin[target], method)(request, timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as exc:
                if exc.code() not in RETRY_ELSEWHERE:
                    raise
                last = exc
        assert last is not None
        raise last

    async def _check_health(self, target: str, now: float) -> None:
        started = time.perf_counter()
        detail = ""
        try:
            reply = await self.health[target].Check(health_pb2.HealthCheckRequest(service=""),
                                                    timeout=HEALTH_TIMEOUT_S)
            status = HEALTH_NAMES.get(reply.status, "UNKNOWN")
        except grpc.RpcError as exc:
            status, detail = "UNREACHABLE", _rpc_text(exc)
        state = self.node_state[target]
        if state["status"] != status:
            state["status"], state["since_ms"] = status, int(now * 1000)
        state["rtt_ms"] = round((time.perf_counter() - started) * 1000, 1)
        state["detail"] = detail

    async def _list(self, now: float) -> None:
        if self.fixed or now - self.listed_at < LIST_EVERY_S:
            return
        try:
            reply = await self._admin_call("ListCampaigns", claims_pb2.ListCampaignsRequest())
        except grpc.RpcError as exc:
            self.errors.append(f"ListCampaigns: {_rpc_text(exc)}")
            return
        self.listed_at = now
        ids = sorted(reply.campaign_ids)
        self.listed = len(ids)
        if len(ids) > self.max_campaigns:  # the first N in launch order (unwatched ones: their last figures)
            await self._fetch([i for i in ids if i not in self.infos])
            ids = sorted(ids, key=lambda i: self._rank(i, now))[: self.max_campaigns]
        self.ids = ids

    async def _fetch(self, ids: Sequence[str]) -> None:
        limit = asyncio.Semaphore(16)

        async def one(campaign_id: str) -> None:
            async with limit:
                try:
                    info = (await self._admin_call(
                        "GetCampaign", claims_pb2.GetCampaignRequest(campaign_id=campaign_id))).campaign
                except grpc.RpcError as exc:
                    self.info_errors[campaign_id] = _rpc_text(exc)
                    self.stale_since.setdefault(campaign_id, time.time())
                    return
                self.infos[campaign_id] = info
                self.info_errors.pop(campaign_id, None)
                self.stale_since.pop(campaign_id, None)

        await asyncio.gather(*(one(i) for i in ids))

    async def _first_claim(self, campaign_id: str) -> None:
        """The first grant in the campaign's ledger: the earliest of each shard's first entry (one
        ExportEvents page of one entry per shard, asked once; the ledger only grows)."""
        info = self.infos[campaign_id]
        firsts: list[int] = []
        for shard in sorted({s.shard for s in info.shards}):
            cursor = ledger.encode_cursor(dict.fromkeys(range(shard), PAST_THE_END))
            try:
                page = await self._admin_call("ExportEvents", claims_pb2.ExportEventsRequest(
                    campaign_id=campaign_id, cursor=cursor, limit=1))
            except grpc.RpcError as exc:
                self.errors.append(f"{campaign_id}: first claim: {_rpc_text(exc)}")
                return
            firsts += [e.at_ms for e in page.events if e.kind == "grant" and e.shard == shard]
        if firsts:
            self.first_claim_ms[campaign_id] = min(firsts)

    async def _first_claims(self, now: float) -> None:
        wanted = [i for i in self.ids if i in self.infos and i not in self.first_claim_ms
                  and not self.infos[i].campaign.starts_at_ms and self.infos[i].granted > 0
                  and now - self.first_claim_tried.get(i, -math.inf) >= FIRST_CLAIM_RETRY_S]
        for i in wanted:
            self.first_claim_tried[i] = now
        await asyncio.gather(*(self._first_claim(i) for i in wanted))

    def _status(self, info: claims_pb2.CampaignInfo, now_ms: int) -> str:
        c = info.campaign
        if info.paused:
            return "PAUSED"
        if c.ends_at_ms and now_ms >= c.ends_at_ms:
            return "ENDED"
        if info.remaining == 0 and info.sold_out_at_ms:
            return "SOLD_OUT"
        if c.starts_at_ms and now_ms < c.starts_at_ms:
            return "NOT_STARTED"
        return "OPEN"

    def _is_live(self, campaign_id: str, now: float) -> bool:
        """Open, paused, not started, or seen selling out or ending by this dashboard in the last hour."""
        info = self.infos.get(campaign_id)
        if info is None:
            return False
        status = self._status(info, int(now * 1000))
        self.last_status.setdefault(campaign_id, status)
        if status in LIVE:
            self.last_status[campaign_id] = status
            return True
        if status in ("SOLD_OUT", "ENDED") and self.last_status[campaign_id] in LIVE:
            self.seen_closing[campaign_id] = now
        self.last_status[campaign_id] = status
        closed = self.seen_closing.get(campaign_id)
        return status in ("SOLD_OUT", "ENDED") and closed is not None and now - closed < CLOSED_KEPT_S

    def _rank(self, campaign_id: str, now: float) -> tuple[int, float]:
        """Launch order: the live ones by start time (a campaign without one started when created), then the
        others by their end (sold out, ended, else start), most recent first; unknown ones last."""
        info = self.infos.get(campaign_id)
        if info is None:
            return (2, 0.0)
        start = max(info.campaign.starts_at_ms, info.created_at_ms)
        if self._is_live(campaign_id, now):
            return (0, float(start))
        end = info.sold_out_at_ms or info.campaign.ends_at_ms or start
        return (1, -float(end))

    async def _scrape(self, url: str, now: float) -> None:
        source = self.sources[url]

        async def fetch() -> str:
            assert self.http is not None
            ctx = self.metrics_ssl if url.startswith("https:") else None
            async with self.http.get(url, headers={"Accept": "text/plain"}, ssl=ctx) as resp:
                resp.raise_for_status()
                return (await resp.content.read(64 << 20)).decode("utf-8", errors="replace")

        try:
            samples = m.parse_text(await fetch())
        except Exception as exc:  # noqa: BLE001 - any failure is "this source is down", shown as such
            why = str(exc) or (f"no answer within {SCRAPE_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError)
                               else "")
            source.update(ok=False, error=f"{type(exc).__name__}: {why}")
            return
        self.state.observe(url, samples, now)
        redis_up = self.state.gauges(url, m.REDIS_UP)
        info = self.state.gauges(url, m.INFO)
        source.update(ok=True, error=None, scraped_at_ms=int(now * 1000), samples=len(samples),
                      redis_up=(redis_up[0][1] >= 1) if redis_up else None,
                      version=m.label(info[0][0], "version") if info else None)

    async def tick(self) -> dict[str, Any]:
        now = time.time()
        self.errors = []
        await asyncio.gather(
            *(self._check_health(t, now) for t in self.targets),
            *(self._scrape(u, now) for u in self.metrics_urls),
            self._list(now),
        )
        await self._fetch(self.ids)
        await self._first_claims(now)
        return self.snapshot(now)

    # -- the snapshot

    def _campaign(self, campaign_id: str, now: float) -> dict[str, Any]:
        info = self.infos.get(campaign_id)
        error = self.info_errors.get(campaign_id)
        if info is None:
            return {"id": campaign_id, "error": error or "no figures yet", "status": "UNKNOWN",
                    "live": False, "focus": False}
        c = info.campaign
        now_ms = int(now * 1000)
        status = self._status(info, now_ms)
        # The clock of the launch: its start time, or (without one) its first claim; never its creation.
        start_ms = max(c.starts_at_ms, info.created_at_ms) if c.starts_at_ms else None
        first_claim = self.first_claim_ms.get(campaign_id)
        clock_from = start_ms or first_claim
        grants = self.grant_rates.setdefault(campaign_id, RateTracker())
        rate = grants.add(now, float(info.granted)) if campaign_id not in self.stale_since else None
        ttso = None
        if info.sold_out_at_ms and clock_from:
            ttso = max(0.0, (info.sold_out_at_ms - clock_from) / 1000)
        out: dict[str, Any] = {
            "id": campaign_id, "name": c.name, "status": status, "error": error,
            "live": self._is_live(campaign_id, now), "focus": False,
            "stale": campaign_id in self.stale_since,
            "inventory": c.inventory, "granted": info.granted, "remaining": info.remaining,
            "held_for_rounds": info.held_for_rounds, "paused": info.paused,
            "shards_live": c.shards, "shard_epoch": info.shard_epoch, "resharding": info.resharding,
            "per_user_limit": c.per_user_limit or 1,
            "starts_at_ms": _ms(c.starts_at_ms), "ends_at_ms": _ms(c.ends_at_ms),
            "created_at_ms": _ms(info.created_at_ms), "first_claim_at_ms": first_claim,
            "clock_from": "start" if start_ms else "first_claim" if first_claim else None,
            "clock_from_ms": clock_from,
            "sold_out_at_ms": _ms(info.sold_out_at_ms), "time_to_sold_out_s": ttso,
            "since_open_s": (now_ms - clock_from) / 1000 if clock_from and now_ms >= clock_from else None,
            "starts_in_s": (c.starts_at_ms - now_ms) / 1000 if c.starts_at_ms > now_ms else None,
            "claims_per_s": rate, "peak_claims_per_s": grants.peak, "series": list(grants.series),
            "shards": [{"shard": s.shard, "remaining": s.remaining, "granted": s.granted,
                        "retired": s.retired} for s in info.shards],
            "first_redemption": self._first_redemption(campaign_id, now),
            "calls_per_s": None, "mix": None,
        }
        if self.state.last:
            tracker = self.call_rates.setdefault(campaign_id, RateTracker())
            mix = self._mix({campaign_id}, now, with_errors=False)
            out["calls_per_s"] = tracker.add(now, mix["calls_total"])
            out["mix"] = mix
        return out

    def _first_redemption(self, campaign_id: str, now: float) -> dict[str, Any]:
        """AdminService's figures have no redemption time: the first redemption is when the nodes'
        claimcore_redemptions_total{outcome="redeemed"} first counts one (seen by this dashboard)."""
        if not self.metrics_urls:
            return {"state": "no_metrics"}
        if not self.state.last:
            return {"state": "metrics_down"}
        known = self.first_redemption.get(campaign_id)
        redeemed = m.by_label(self.state.totals(), m.REDEMPTIONS, "outcome",
                              {"campaign": {campaign_id}}).get(REDEEMED, 0.0)
        if known is None:
            # The first look: redemptions already counted happened before the dashboard started.
            known = {"state": "before_start", "count": redeemed} if redeemed else {"state": "none_yet"}
        elif known["state"] == "none_yet" and redeemed:
            known = {"state": "seen", "at_ms": int(now * 1000), "within_s": self.every_s}
        if known["state"] in ("before_start", "seen"):
            known["count"] = redeemed
        self.first_redemption[campaign_id] = known
        return known

    def _mix(self, campaigns: set[str], now: float, with_errors: bool = True) -> dict[str, Any]:
        """The outcome mix (totals and shares since the nodes started) and the top rejection reasons
        (ranked by their rate over the last RECENT_WINDOW_S) of these campaigns. Failed calls carry no
        campaign: they are in the focus's mix only (with_errors)."""
        where = {"campaign": campaigns}
        totals = self.state.totals()
        recent, span = self.state.window(RECENT_WINDOW_S, now)

        def per_s(value: float) -> float | None:
            return value / span if span > 0 else None

        outcome_totals = m.by_label(totals, m.CLAIMS, "outcome", where)
        outcome_recent = m.by_label(recent, m.CLAIMS, "outcome", where)
        all_calls = sum(outcome_totals.values())
        names = list(OUTCOMES) + sorted(set(outcome_totals) - set(OUTCOMES))
        outcomes = [{"outcome": o, "total": outcome_totals.get(o, 0.0),
                     "share": outcome_totals.get(o, 0.0) / all_calls if all_calls else None}
                    for o in names]
        reasons: list[dict[str, Any]] = []
        for o in names:
            if o != "granted" and outcome_totals.get(o):
                reasons.append({"kind": "outcome", "reason": o, "total": outcome_totals[o],
                                "per_s": per_s(outcome_recent.get(o, 0.0))})
        drops, drops_recent = (m.by_label(s, m.ADMISSION_DROPS, "reason", where) for s in (totals, recent))
        for reason, total in drops.items():
            if total:
                reasons.append({"kind": "admission", "reason": reason, "total": total,
                                "per_s": per_s(drops_recent.get(reason, 0.0))})
        if with_errors:
            errors, errors_recent = (m.by_label(s, m.RPC_ERRORS, "code") for s in (totals, recent))
            for code, total in errors.items():
                if total:
                    reasons.append({"kind": "rpc_error", "reason": code, "total": total,
                                    "per_s": per_s(errors_recent.get(code, 0.0))})
        reasons.sort(key=lambda r: (-(r["per_s"] or 0), -r["total"]))
        return {"outcomes": outcomes, "calls_total": all_calls, "rejections": reasons[:10]}

    def _metrics(self, now: float, focus: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"configured": bool(self.metrics_urls), "available": bool(self.state.last),
                               "sources": list(self.sources.values()), "window_s": RECENT_WINDOW_S}
        if not self.state.last:
            return out
        out.update(self._mix(focus, now))
        out["calls_per_s"] = self.total_calls.add(now, out["calls_total"])
        totals = self.state.totals()
        recent, _ = self.state.window(RECENT_WINDOW_S, now)
        hist_total = m.histograms(totals, m.CLAIM_SECONDS, "method")
        hist_recent = m.histograms(recent, m.CLAIM_SECONDS, "method")
        latency = []
        for method, buckets in hist_total.items():
            count = buckets[-1][1] if buckets else 0.0
            latency.append({"method": method, "count": count,
                            "recent": m.percentiles(hist_recent.get(method, [])),
                            "total": m.percentiles(buckets)})
        latency.sort(key=lambda r: -r["count"])
        out["latency"] = latency
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        watched = set(self.ids)
        order = sorted(self.ids, key=lambda i: (self._rank(i, now), i))
        campaigns = [self._campaign(i, now) for i in order]
        live = [c for c in campaigns if c["live"]]
        focused = ([c for c in live if c["status"] != "NOT_STARTED"] or live
                   or (campaigns if self.fixed else []))
        for c in focused:
            c["focus"] = True
        focus = {c["id"] for c in focused}
        rates = [c["claims_per_s"] for c in focused if c.get("claims_per_s") is not None]
        total_granted = sum(c.get("granted", 0) for c in focused)
        # The header's rate is the sum of the focus's own rates: a campaign joining or leaving the focus
        # is no jump in grants.
        total_rate = sum(rates) if rates else None
        if total_rate is not None:
            self.total_peak = max(self.total_peak, total_rate)
            self.total_series.append((int(now * 1000), round(total_rate, 2)))
        while self.total_series and self.total_series[0][0] < (now - SERIES_S) * 1000:
            self.total_series.popleft()
        nodes = []
        for target in self.targets:
            st = self.node_state[target]
            redis = {"SERVING": "up", "NOT_SERVING": "down"}.get(st["status"], "unknown")
            nodes.append({"target": target, "status": st["status"], "redis": redis,
                          "since_ms": st["since_ms"], "rtt_ms": st.get("rtt_ms"), "detail": st.get("detail")})
        errors = list(self.errors)
        errors += [f"{i}: {e}" for i, e in self.info_errors.items() if i in watched]
        snap = {
            "at_ms": int(now * 1000), "every_s": self.every_s,
            "watching": {"campaigns": len(self.ids), "listed": self.listed, "fixed": bool(self.fixed),
                         "max": self.max_campaigns},
            # The header's figures: the focus only (see the module's docstring), never old rehearsals.
            "totals": {"campaigns": sorted(focus),
                       "inventory": sum(c.get("inventory", 0) for c in focused),
                       "granted": total_granted,
                       "remaining": sum(c.get("remaining", 0) for c in focused),
                       "claims_per_s": total_rate,
                       "peak_claims_per_s": self.total_peak, "series": list(self.total_series)},
            "campaigns": campaigns,
            "nodes": nodes,
            "metrics": self._metrics(now, focus),
            "errors": errors[:20],
        }
        return _finite(snap)
