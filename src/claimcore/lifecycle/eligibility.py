"""Eligibility (资格核验), loaded before the launch and checked inside the claim.

Each user's record lives on the user's shard, in `cc:{C:s}:elig`, so claim.lua
checks it in the same atomic step as the grant: no external call, no extra
round trip, and a change (变更资格) is seen by a claim wholly or not at all.
A campaign's rule (allow list, regions of residence, required tags) is kept
in every shard's state; a deny list applies once any record is loaded.

The records come from a CSV file (`claimcore eligibility load`); read_csv
reads and checks the whole file, naming the line of anything wrong, before
anything is sent.
"""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from claimcore import validation as v
from claimcore._fast import shard_of
from claimcore.campaign import CampaignConfig
from claimcore.store import scripts
from claimcore.store.campaign_cache import CampaignCache
from claimcore.store.inventory import RedisInventory
from claimcore.store.keyspace import shard_keys
from claimcore.store.replies import refusal

MAX_RECORDS = 10_000  # per call


@dataclass(frozen=True)
class Eligibility:
    user_id: str
    allowed: bool = False
    denied: bool = False
    region: str = ""
    tags: tuple[str, ...] = ()
    remove: bool = False

    def check(self) -> None:
        v.check_id("user_id", self.user_id, v.USER_ID)
        if self.region:
            v.check_id("region", self.region, v.REGION)
        if len(self.tags) > v.MAX_REGIONS:
            raise v.InvalidInput(f"at most {v.MAX_REGIONS} tags per user")
        for tag in self.tags:
            v.check_id("tag", tag, v.REGION)

    def line(self) -> str:
        """The user's line for eligibility.lua: an empty record removes it."""
        if self.remove:
            return f"{self.user_id}\t"
        return f"{self.user_id}\t{int(self.allowed)}|{int(self.denied)}|{self.region}|{','.join(self.tags)}"


# ---------------------------------------------------------------- the CSV file

COLUMNS = ("user_id", "allowed", "denied", "region", "tags", "remove")
COLUMNS_HELP = """\
The file is CSV, UTF-8, its first line the header naming its columns (in any order; only user_id is
required, a missing column is empty for every user):

  user_id   the user (required)
  allowed   1/0 (also yes/no, true/false, y/n; empty = 0): on the allow list
  denied    1/0: on the deny list, never eligible
  region    the user's region of residence
  tags      the user's tags, separated by ';' (e.g. vip;staff)
  remove    1/0: forget this user's record instead

e.g.
  user_id,allowed,region,tags
  u1,1,north,vip
  u2,0,,"""

YES, NO = ("1", "true", "yes", "y"), ("", "0", "false", "no", "n")


def _flag(column: str, text: str) -> bool:
    if text.strip().lower() in YES:
        return True
    if text.strip().lower() in NO:
        return False
    raise ValueError(f"{column}: not a yes/no value: {text!r} (1/0, yes/no, true/false)")


def read_csv(lines: Iterable[str], name: str) -> list[Eligibility]:
    """Every record of an eligibility CSV file, checked; ValueError `<name> line N: ...` at the first
    thing wrong, N counted from 1 as an editor shows it (a quoted value over several lines counts them
    all; blank lines are skipped but counted)."""
    reader = csv.reader(lines)
    header: list[str] | None = None
    records: list[Eligibility] = []
    first_line: dict[str, int] = {}
    end = 0  # the last line read so far
    try:
        for row in reader:
            line, end = end + 1, reader.line_num  # the row's first line
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                _check_header(header, name, line)
                continue
            if len(row) > len(header):
                raise ValueError(f"{name} line {line}: {len(row)} values, but the header names only "
                                 f"{', '.join(header)}")
            cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
            try:
                record = Eligibility(
                    user_id=cells.get("user_id", ""), allowed=_flag("allowed", cells.get("allowed", "")),
                    denied=_flag("denied", cells.get("denied", "")), region=cells.get("region", ""),
                    tags=tuple(t.strip() for t in cells.get("tags", "").split(";") if t.strip()),
                    remove=_flag("remove", cells.get("remove", "")))
                record.check()
            except ValueError as exc:
                raise ValueError(f"{name} line {line}: {exc}") from None
            if record.user_id in first_line:
                raise ValueError(f"{name} line {line}: user_id {record.user_id!r} again (first on line "
                                 f"{first_line[record.user_id]})")
            first_line[record.user_id] = line
            records.append(record)
    except csv.Error as exc:
        raise ValueError(f"{name} line {reader.line_num}: not CSV: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name} line {end + 1}: not UTF-8 text") from None
    if header is None:
        raise ValueError(f"{name} line 1: no header: the file is empty; its first line names the columns "
                         f"({','.join(COLUMNS)})")
    return records


def _check_header(header: list[str], name: str, line: int) -> None:
    unknown = [column for column in header if column not in COLUMNS]
    if "user_id" not in header:
        if unknown and all(column not in COLUMNS for column in header):
            raise ValueError(f"{name} line {line}: no header: the first line must name the columns "
                             f"(user_id and any of {','.join(COLUMNS[1:])}), not {','.join(header)!r}")
        raise ValueError(f"{name} line {line}: the header has no user_id column")
    if unknown:
        raise ValueError(f"{name} line {line}: unknown column {unknown[0]!r} (the columns: "
                         f"{','.join(COLUMNS)})")
    twice = sorted({column for column in header if header.count(column) > 1})
    if twice:
        raise ValueError(f"{name} line {line}: column {twice[0]!r} twice in the header")


async def update(inventory: RedisInventory, campaigns: CampaignCache, config: CampaignConfig,
                 records: Sequence[Eligibility]) -> int:
    """Write the records on their users' shards (one call per shard); returns how many."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise v.InvalidInput(f"a call carries 1 to {MAX_RECORDS} records, not {len(records)}")
    for record in records:
        record.check()
    seen: set[str] = set()
    for r in records:
        if r.user_id in seen:
            raise v.InvalidInput(f"records: user_id {r.user_id!r} appears twice in one call")
        seen.add(r.user_id)

    call_id = uuid.uuid4().hex  # the same for every shard and every retry of this one update

    async def write(c: CampaignConfig) -> int:
        by_shard: dict[int, list[str]] = defaultdict(list)
        for record in records:
            by_shard[shard_of(record.user_id, c.shards)].append(record.line())

        async def one(shard: int, lines: list[str]) -> int:
            keys = shard_keys(c.campaign_id, shard)
            reply = await scripts.ELIGIBILITY(inventory.redis, [keys.state, keys.elig, keys.elig_calls],
                                              [c.epoch, "\n".join(lines), call_id])
            if int(reply[0]) < 0:
                raise refusal(c.campaign_id, shard, reply)
            return int(reply[0])

        # Rewriting a shard's records again after a STALE or MOVING is harmless: the same values.
        return sum(await asyncio.gather(*(one(s, lines) for s, lines in by_shard.items())))

    return await campaigns.on_live_map(config, write)
