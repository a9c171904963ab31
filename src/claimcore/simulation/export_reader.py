"""The ledger's reader in the simulation: the central platform exporting every campaign while
everything else goes on (claims, reshards that add and retire shards, node kills, sweeps).

It pages through each campaign with a cursor of its own, as `claimcore export --cursor-file`
does: a random page size, shard order or time order drawn page by page (the cursor is the same
for both), through any node; a call that fails is asked again later with the same cursor. Once
the run has quiesced it drains every cursor. The check (export-once) then holds what it got
against the ledger in Redis: no event twice, and every event up to the final cursor, none beyond;
each time-order page is in time order (export-order).

Its draws come from a Random of their own, so every other draw of a seed stays as it was.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import grpc

from claimcore.lifecycle.ledger import decode_cursor, event_position, stream_position
from claimcore.simulation.checks import Violation
from claimcore.simulation.state import WorldState
from claimcore.simulation.world import World
from claimcore.v1 import claims_pb2 as pb

PAUSE_S = (0.2, 1.0)  # between two pages during the run
MAX_PAGE = 40  # ledger entries per page: small, so pages cut across reshards and kills
DEADLINE_S = 5.0


@dataclass
class ExportReader:
    world: World
    campaigns: list[str]
    rng: random.Random
    cursors: dict[str, str] = field(default_factory=dict)
    exported: dict[str, list[str]] = field(default_factory=dict)  # campaign -> event ids, as received
    misordered: list[Violation] = field(default_factory=list)
    pages: int = 0
    failed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Page through random campaigns until `stop` is set."""
        while not stop.is_set():
            await self.page(self.rng.choice(self.campaigns))
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*PAUSE_S))
            except TimeoutError:
                pass

    async def drain(self) -> None:
        """Every campaign to its end (the run has quiesced: nothing writes the ledger any more)."""
        for campaign in self.campaigns:
            for _ in range(10_000):
                more = await self.page(campaign)
                if more is False:
                    break

    async def page(self, campaign: str) -> bool | None:
        """One page; whether more remain (None: the call failed, the cursor is kept)."""
        node = self.world.nodes[self.rng.randrange(len(self.world.nodes))]
        time_order = self.rng.random() < 0.5
        request = pb.ExportEventsRequest(campaign_id=campaign, cursor=self.cursors.get(campaign, ""),
                                         limit=self.rng.randint(1, MAX_PAGE), time_order=time_order)
        try:
            reply = await node.admin.ExportEvents(request, timeout=DEADLINE_S)
        except grpc.aio.AioRpcError:
            self.failed += 1
            return None
        ids = [e.event_id for e in reply.events]
        if time_order and ids != sorted(ids, key=event_position):
            self.misordered.append(Violation(
                "export-order", campaign,
                f"an ExportEvents page asked in time order came out of order: {ids}", set()))
        self.exported.setdefault(campaign, []).extend(ids)
        self.cursors[campaign] = reply.next_cursor
        self.pages += 1
        return reply.more

    def check(self, ws: WorldState) -> list[Violation]:
        """export-once: per campaign, what was exported is the ledger up to the final cursor, once."""
        out = list(self.misordered)
        for campaign in self.campaigns:
            got = self.exported.get(campaign, [])
            reached = decode_cursor(self.cursors.get(campaign, ""))
            cs = ws.campaigns.get(campaign)
            ledger = [] if cs is None else [e.event_id for e in cs.events]
            due = {i for i in ledger if _upto(i, reached)}
            twice = sorted(i for i, n in Counter(got).items() if n > 1)
            if twice:
                out.append(Violation("export-once", campaign,
                                     f"{len(twice)} events exported twice, e.g. {twice[:3]}", set(),
                                     kind="twice"))
            missing, extra = sorted(due - set(got)), sorted(set(got) - due)
            if missing:
                out.append(Violation("export-once", campaign,
                                     f"{len(missing)} ledger events up to the cursor never exported, "
                                     f"e.g. {missing[:3]}", set(), kind="missing"))
            if extra:
                out.append(Violation("export-once", campaign,
                                     f"{len(extra)} events exported that the ledger does not hold up to "
                                     f"the cursor, e.g. {extra[:3]}", set(), kind="extra"))
        return out


def _upto(event_id: str, reached: dict[int, str]) -> bool:
    """Whether the event's ledger entry is at or before the cursor's position on its shard."""
    ms, seq, shard = event_position(event_id)
    at = reached.get(shard)
    return at is not None and (ms, seq) <= stream_position(at)
