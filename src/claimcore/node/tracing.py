"""Optional OpenTelemetry tracing of claims (docs/metrics.md, "Tracing"): off unless asked for.

`claimcore serve --trace-file PATH` (or CLAIMCORE_TRACE_FILE) calls `setup`,
which imports opentelemetry (the `tracing` extra) only then. Finished spans go
through a BatchSpanProcessor to `JsonLinesExporter`: one JSON object per span
per line in PATH. `shutdown` (Node.stop, so SIGTERM) flushes them.

Spans:

- a SERVER span per ClaimService Claim / ClaimBatch call, "claimcore.Claim" /
  "claimcore.ClaimBatch", made by the `Traced` layer of the call pipeline. It continues the
  caller's trace when the call's metadata holds a W3C `traceparent`. Its
  attributes name the campaign(s) and the outcome(s) with their counts, never
  a user id, request id or key.
- a CLIENT span per batcher flush, "redis.claim_flush": the one Redis round
  trip serving many claims, so not a child of any of them but LINKED to the
  span of every claim call it served (`ClaimBatcher` keeps each queued claim's
  span context while tracing is on).

When off, `enabled` is False and the hot path makes no tracer call: the
interceptor is not installed and the batcher's hooks test that one boolean.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import IO, Any

import grpc

from claimcore.node.pipeline import rewrapped
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import short_name

ENV = "CLAIMCORE_TRACE_FILE"
TRACED_METHODS = {
    f"/{pb.DESCRIPTOR.services_by_name['ClaimService'].full_name}/Claim": "claimcore.Claim",
    f"/{pb.DESCRIPTOR.services_by_name['ClaimService'].full_name}/ClaimBatch": "claimcore.ClaimBatch",
}
FLUSH_SPAN = "redis.claim_flush"
MAX_LINKS = 16_384  # links per flush span, at most (the SDK's default, 128, is less than one flush)

enabled = False  # the one boolean the hot path tests
_tracer: Any = None
_provider: Any = None


class TracingUnavailable(ValueError):
    """Tracing was asked for, but opentelemetry is not installed."""


def setup(path: str, service_name: str = "claimcore") -> None:
    """Trace this process's claims into `path` (appended to, one JSON span per line)."""
    global enabled, _tracer, _provider
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            f"--trace-file needs opentelemetry (pip install 'claimcore[tracing]'): {exc}") from None
    exporter = JsonLinesExporter(open(path, "a", encoding="utf-8"))  # noqa: SIM115 - closed on shutdown
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              span_limits=SpanLimits(max_links=MAX_LINKS))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("claimcore")
    enabled = True


def shutdown() -> None:
    """Flush the spans not yet written and close the file; tracing is off afterwards."""
    global enabled, _tracer, _provider
    enabled = False
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def span_json(span: Any) -> dict[str, Any]:
    """One finished SDK span (ReadableSpan) as the JSON object written for it."""
    ctx, parent = span.context, span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                  for link in span.links],
    }


class JsonLinesExporter:
    """A SpanExporter writing one JSON object per span and line (duck-typed: no SDK import needed
    to define it; `export` answers the SDK's SpanExportResult)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_json(s), default=str) + "\n" for s in spans)
        with self._lock:
            if self.out.closed:
                return SpanExportResult.FAILURE
            self.out.write(lines)
            self.out.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if not self.out.closed:
                self.out.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self.out.close()


def current_span_context() -> Any:
    """The span context of the claim call running now (the batcher keeps it for the flush's links)."""
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


def flush_span(calls: Iterable[tuple[str, int]], links: Iterable[Any]) -> Any:
    """Start the span of one batcher flush: `calls` is (campaign, claims) per shard call, `links`
    the span contexts of the claim calls served. The caller ends it. A root span, whatever
    context the flusher task inherited."""
    from opentelemetry import context, trace

    calls = list(calls)
    unique = {(c.trace_id, c.span_id): c for c in links if c is not None and c.is_valid}
    return _tracer.start_span(
        FLUSH_SPAN, context=context.Context(), kind=trace.SpanKind.CLIENT,
        links=[trace.Link(c) for c in unique.values()],
        attributes={"db.system": "redis", "claimcore.claims": sum(n for _, n in calls),
                    "claimcore.shards": len(calls),
                    "claimcore.store.campaign_cache": sorted({campaign for campaign, _ in calls})},
    )


def end_span(span: Any, error: BaseException | None = None) -> None:
    """End a span started here; an error marks it failed (its type only: messages may hold keys)."""
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def _outcome_name(outcome: int) -> str:
    return short_name(pb.Outcome, outcome).lower() if outcome in pb.Outcome.values() else str(outcome)


def _claim_attributes(request: Any) -> dict[str, Any]:
    if isinstance(request, bytes):  # ClaimBatch takes its request undecoded (claim_service.add_to_server)
        request = pb.ClaimBatchRequest.FromString(request)
    if isinstance(request, pb.ClaimRequest):
        return {"claimcore.campaign": request.campaign_id}
    campaigns = sorted({c.campaign_id for c in request.claims})
    return {"claimcore.store.campaign_cache": campaigns, "claimcore.claims": len(request.claims)}


def _reply_attributes(method: str, reply: Any) -> dict[str, Any]:
    if isinstance(reply, bytes):  # Claim and ClaimBatch send encoded replies (claim_service.add_to_server)
        reply = (pb.ClaimResponse if method == "claimcore.Claim" else pb.ClaimBatchResponse).FromString(reply)
    if isinstance(reply, pb.ClaimResponse):
        return {"claimcore.outcome": _outcome_name(reply.outcome)}
    counts: dict[str, int] = {}
    for r in reply.replies:
        name = _outcome_name(r.outcome)
        counts[name] = counts.get(name, 0) + 1
    return {f"claimcore.outcomes.{name}": n for name, n in counts.items()}


class Traced:
    """A layer of the call pipeline (pipeline.py): a SERVER span around each Claim and ClaimBatch call,
    current while the call runs (so the batcher sees it). Stacked inside the decoding layer (it reads
    decoded requests), only with tracing on."""

    def __init__(self) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.propagator = TraceContextTextMapPropagator()

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        name = TRACED_METHODS.get(method)
        if name is None or handler.unary_unary is None or _tracer is None:
            return handler
        behaviour, tracer, propagator = handler.unary_unary, _tracer, self.propagator

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            from opentelemetry import trace
            from opentelemetry.trace import Status, StatusCode

            carrier = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            with tracer.start_as_current_span(
                name, context=propagator.extract(carrier), kind=trace.SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.method": name.rpartition(".")[2],
                            **_claim_attributes(request)},
                record_exception=False, set_status_on_exception=False,
            ) as span:
                try:
                    reply = await behaviour(request, context)
                except BaseException as exc:
                    code = context.code()
                    code = code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__
                    span.set_attribute("rpc.grpc.status", code)
                    span.set_status(Status(StatusCode.ERROR, code))
                    raise
                span.set_attribute("rpc.grpc.status", "OK")
                span.set_attributes(_reply_attributes(name, reply))
                return reply

        return rewrapped(handler, unary_unary)
