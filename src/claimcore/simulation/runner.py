"""One seed from start to verdict: start the world, create the campaigns, run the schedule,
quiesce, probe every node, reconcile, read Redis back and check."""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections import Counter
from typing import Any

import grpc

from claimcore.client import ClaimClient
from claimcore.simulation import checks
from claimcore.simulation.calls import CallLog
from claimcore.simulation.campaigns import MERCHANTS, Plan, plan_campaigns
from claimcore.simulation.checks import Violation
from claimcore.simulation.export_reader import ExportReader
from claimcore.simulation.model import Model
from claimcore.simulation.operations import OPERATIONS, Ctx, recycle, reshard, sold_out_probe
from claimcore.simulation.report import SeedResult, describe
from claimcore.simulation.schedule import draw
from claimcore.simulation.state import WorldState, read_world
from claimcore.simulation.world import World
from claimcore.store.keyspace import campaign_key
from claimcore.store.reshard import LOCK_TTL_MS
from claimcore.v1 import claims_pb2 as pb

MAX_IN_FLIGHT = 48  # operations running at once; the schedule waits beyond that
# After the last sweep (itself at least 3 s after the load): holds (5 s + 1 s margin) have lapsed,
# returning stock (2 s) is due, and every sold-out snapshot has checked again (1.5 s).
SETTLE_S = 4.0
DRAIN_S = 20.0  # the most operations in flight get once the load stops


async def _create(world: World, plans: list[Plan]) -> None:
    admin = world.nodes[0].admin
    for plan in plans:
        await admin.CreateCampaign(pb.CreateCampaignRequest(campaign=plan.campaign), timeout=20)
        category = plan.campaign.category
        merchant = pb.Merchant(campaign_id=plan.campaign_id, merchant_id=MERCHANTS[category], name="sim",
                               category=category)
        await admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=merchant), timeout=10)


async def _drive(ctx: Ctx, steps: list[Any], result: SeedResult) -> None:
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks = []

    async def run(step: Any) -> None:
        try:
            await OPERATIONS[step.kind](ctx, random.Random(step.seed), step.args)
        except Exception as exc:  # noqa: BLE001 - a driver bug is reported, the run goes on
            result.driver_errors.append(
                f"{step.kind}: {type(exc).__name__}: {exc} {traceback.format_exc(limit=3)!r}"
            )
        finally:
            slots.release()

    for step in steps:
        delay = ctx.started + step.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        result.operations[step.kind] += 1
        tasks.append(asyncio.create_task(run(step)))
    # The load stops here: what is still running gets DRAIN_S, then is cut (its calls stay unknown,
    # as a client that gave up would leave them).
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_S) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        result.driver_errors.append(
            f"{len(pending)} operations still running {DRAIN_S:.0f} s after the load stopped were cut"
        )


async def _probe(ctx: Ctx, plans: list[Plan]) -> list[Violation]:
    """After the quiesce: each node, each campaign, while stock is there."""
    found = await asyncio.gather(
        *(
            sold_out_probe(
                ctx, "probe", slot.index, plan.campaign_id, f"final{slot.index}-{plan.campaign_id}"
            )
            for plan in plans
            for slot in ctx.world.nodes
        )
    )
    return [v for v in found if v is not None]


async def _finish_reshards(ctx: Ctx, plans: list[Plan], result: SeedResult) -> None:
    """A reshard cut off (its node killed, or still running when the load stopped) is finished by
    running it again to the count it published, as an operator would (reshard.py)."""
    for plan in plans:
        status, shards = await asyncio.to_thread(_campaign_fields, ctx.world, plan.campaign_id)
        if status != "resharding":
            continue
        result.driver_errors.append(
            f"{plan.campaign_id}: a reshard to {shards} was left unfinished; finished at the quiesce"
        )
        # A reshard whose node was killed keeps its lock until the lock's TTL runs out: until then
        # every attempt is ABORTED (busy), which says "retry later", so retry until past the TTL.
        give_up = time.monotonic() + LOCK_TTL_MS / 1000 + 10.0
        attempt = 0
        while True:
            call = await reshard(ctx, "quiesce", attempt % len(ctx.world.nodes), plan.campaign_id, shards)
            attempt += 1
            if call.outcome == "RESHARDED":
                break
            if time.monotonic() > give_up:
                result.driver_errors.append(
                    f"{plan.campaign_id}: the reshard to {shards} could not be finished: {call.outcome}")
                break
            await asyncio.sleep(1.0)


def _campaign_fields(world: World, campaign_id: str) -> tuple[str, int]:
    client = world.redis_client()
    try:
        status, shards = client.hmget(campaign_key(campaign_id), "status", "shards")
        return status or "", int(shards or 0)
    finally:
        client.close()


async def _reconcile(ctx: Ctx, plans: list[Plan]) -> list[Violation]:
    out = []
    for k, plan in enumerate(plans):
        node = k % len(ctx.world.nodes)
        call = ctx.log.begin("reconcile", "Reconcile", node, plan.campaign_id)
        try:
            reply = await ctx.world.nodes[node].admin.Reconcile(
                pb.ReconcileRequest(campaign_id=plan.campaign_id), timeout=30
            )
        except grpc.aio.AioRpcError as err:
            ctx.log.failed(call, err.code().name)
            out.append(
                Violation(
                    "reconcile", plan.campaign_id, f"Reconcile failed: {err.code().name} {err.details()}"
                )
            )
            continue
        bad = [f"{f.name}: ledger {f.from_ledger} live {f.live}" for f in reply.figures if not f.ok]
        ctx.log.end(call, "OK" if reply.ok else "MISMATCH", figures="; ".join(bad))
        if not reply.ok:
            out.append(Violation("reconcile", plan.campaign_id, "; ".join(bad)))
    return out


async def run_seed(
    seed: int,
    minutes: float,
    cluster: bool = False,
    rate: float = 25.0,
    node_count: int = 3,
    keep: dict[str, Any] | None = None,
    settle_s: float = SETTLE_S,
    stacked: bool = False,
) -> SeedResult:
    """Run one seed; `keep`, if given, receives the world (left running: the caller stops it), the log,
    the plans and the state read, so tests can tamper with them and check again; `stacked` runs the
    stacked-heavy mix (bigger stackable campaigns, more stacked orders, more kills)."""
    began = time.monotonic()
    result = SeedResult(seed, cluster)
    rng = random.Random(f"world-{seed}")
    run_s = minutes * 60
    world = await asyncio.to_thread(World.start, rng, cluster, node_count)
    log = CallLog()
    ws: WorldState | None = None
    try:
        await world.connect()
        plans = plan_campaigns(random.Random(f"campaigns-{seed}"), seed, run_s, stacked)
        await _create(world, plans)
        client = ClaimClient([s.node.address for s in world.nodes], deadline_s=3.0, max_attempts=3)
        # The app backend of op_watched_claim: batching, answering sold-out campaigns from the pushed state.
        watching = ClaimClient(
            [s.node.address for s in world.nodes], deadline_s=3.0, max_attempts=3, watch=True
        )
        ctx = Ctx(
            world,
            log,
            Model(),
            {p.campaign_id: p for p in plans},
            client,
            time.monotonic(),
            users_per_s=max(2.0, rate * 0.4),
            watching=watching,
        )
        log.t0 = ctx.started
        # The central platform's export, paging through the ledgers while everything else runs.
        reader = ExportReader(world, [p.campaign_id for p in plans], random.Random(f"export-{seed}"))
        load_done = asyncio.Event()
        exporting = asyncio.create_task(reader.run(load_done))
        try:
            await _drive(ctx, draw(seed, run_s, plans, node_count, rate, stacked), result)
        finally:
            load_done.set()
            await exporting
        # Quiesce: every node up, nothing in flight, holds lapsed, every voucher expired and swept
        # (so no sweep writes while Reconcile reads the ledger and then the live counters),
        # returning stock due. Reconcile before the probe, whose grants would expire later.
        load_stopped = time.monotonic()
        for i in range(node_count):
            await asyncio.to_thread(world.restart, i)
        await _finish_reshards(ctx, plans, result)
        valid_s = max(p.campaign.valid_for_ms for p in plans) / 1000
        await asyncio.sleep(max(0.0, load_stopped + valid_s + 0.5 - time.monotonic()))
        for plan in plans:
            await recycle(ctx, "quiesce", 0, plan.campaign_id)
        await asyncio.sleep(settle_s)
        result.violations += await _reconcile(ctx, plans)
        result.violations += ctx.found + await _probe(ctx, plans)
        await reader.drain()  # after the probe's grants: nothing writes a ledger from here on
        client_ = world.redis_client()
        try:
            ws = await asyncio.to_thread(
                read_world,
                client_,
                [p.campaign_id for p in plans],
                sorted({p.campaign.category for p in plans}),
            )
        finally:
            client_.close()
        result.violations += reader.check(ws)
        opc = {p.campaign_id: p.campaign.category for p in plans if p.campaign.one_per_category}
        result.violations = checks.classify(checks.check(log.calls, ws, opc) + result.violations, log.calls)
        result.figures = checks.figures(ws)
        result.figures["ledger events exported"] = sum(len(ids) for ids in reader.exported.values())
        result.figures["export pages"] = reader.pages
        result.figures["export calls failed"] = reader.failed
        await client.close()
        result.answered_locally = watching.answered_locally
        await watching.close()
        if keep is not None:
            keep.update(world=world, log=log, plans=plans, state=ws, one_per_category=opc, reader=reader)
    finally:
        await world.close_channels()
        if keep is None:
            world.stop()  # not in a thread: this must also run when the run is cancelled (Ctrl-C)
    result.calls = len(log)
    result.outcomes = Counter(c.outcome for c in log.calls)
    for c in log.calls:
        result.by_op.setdefault(c.op, Counter())[f"{c.rpc} {c.outcome}"] += 1
    result.seconds = time.monotonic() - began
    result.text = describe(result, log, ws)
    return result


def recheck(kept: dict[str, Any]) -> list[Violation]:
    """The checks again, over the kept run's calls and Redis as it is now (tests tamper with both)."""
    client = kept["world"].redis_client()
    try:
        ws = read_world(
            client,
            [p.campaign_id for p in kept["plans"]],
            sorted({p.campaign.category for p in kept["plans"]}),
        )
    finally:
        client.close()
    kept["state"] = ws
    return checks.check(kept["log"].calls, ws, kept["one_per_category"])
