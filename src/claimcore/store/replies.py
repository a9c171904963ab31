"""The scripts' vocabulary: what the Lua scripts answer, and the records they keep, as Python.

Every script replies with numbers and "|"-joined records (their headers in lua/ say which);
this file is the one place that names those numbers and parses those records, so the store's
API (inventory.py), the life after the grant (lifecycle/) and the node read them alike.
A refusal a script makes of the whole call ({ -1 } shard missing, { -2, epoch } stale map,
{ -3, epoch } shard moving, { -4 } holds lost) becomes one of the exceptions here.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple


class Code(IntEnum):
    """Per-claim results of claim.lua (see its header)."""

    GRANTED = 1
    REPLAY = 2
    ALREADY_CLAIMED = 3
    EMPTY = 4
    NOT_STARTED = 5
    ENDED = 6
    PAUSED = 7
    NOT_ELIGIBLE = 8
    OTHER_CHANNEL = 9  # a replay of a request granted through another channel: not its grant
    SOLD_OUT = 100  # decided by the node: EMPTY here and nothing left to borrow


class ArchiveCode(IntEnum):
    """archive.lua's reply (see its header)."""

    MISSING = -1
    REFUSED = 0   # archive: the campaign is open to claims; resume: it is archived
    DONE = 1      # now, or before (a resend)


class ClaimItem(NamedTuple):
    user_id: str
    request_id: str
    channel_id: str


class Ineligible(IntEnum):
    """Why a claim is NOT_ELIGIBLE: claim.lua's numbers (1-4), the node's (5, 6); the same as
    claimcore.v1.NotEligibleReason's, which carries them to the caller."""

    DENY_LIST = 1         # on the campaign's deny list
    ALLOW_LIST = 2        # the campaign has an allow list, and the user is not on it
    REGION = 3            # not resident in one of the campaign's regions
    TAG = 4               # lacks one of the campaign's required tags
    ONE_PER_CATEGORY = 5  # holds (or is claiming) a voucher of another campaign of the category
    BLOCKED = 6           # on the node's anti-scalper deny lists (user, device or IP)


class ItemResult(NamedTuple):
    """One claim's result, as claim.lua answers it: (code, voucher, at). For NOT_ELIGIBLE the third
    holds why instead of a time (an Ineligible number): the hot path's codec needs no fourth field."""

    code: int
    voucher_id: str
    granted_at_ms: int


class Record(NamedTuple):
    """A granted claim, as stored in the reqs hash under "user|request_id"."""

    user_id: str
    request_id: str
    voucher_id: str
    granted_at_ms: int
    channel_id: str


class CampaignConflict(Exception):
    """A different campaign config already holds this id."""


class BorrowContention(Exception):
    """Stock kept moving between shards while this node tried to borrow; retry."""


class ShardMissing(Exception):
    """A shard's state is missing: the campaign was not (fully) created."""


class EpochRefusal(Exception):
    """A shard refused the call because of its map epoch (the reply's second field)."""

    def __init__(self, campaign_id: str, epoch: int, why: str) -> None:
        super().__init__(f"{campaign_id}: {why}")
        self.campaign_id = campaign_id
        self.epoch = epoch


class StaleMap(EpochRefusal):
    """The caller's shard map is older than the shard's: reload the campaign, route again."""

    def __init__(self, campaign_id: str, epoch: int) -> None:
        super().__init__(campaign_id, epoch, f"shard map is now at epoch {epoch}")


class HoldsLost(Exception):
    """The node's category holds expired before its claims ran: hold again (categories.py)."""


class ShardMoving(EpochRefusal):
    """The shard is frozen while a reshard moves users into it: retry shortly."""

    def __init__(self, campaign_id: str, epoch: int) -> None:
        super().__init__(campaign_id, epoch, f"being resharded (epoch {epoch}), retry shortly")


MOVING_RETRY_S = 0.005   # how often a call to a shard frozen by a reshard is tried again
MAX_MOVING_S = 10.0      # ... and for how long, before the caller hears UNAVAILABLE


def refusal(campaign_id: str, shard: int, reply: list[Any]) -> Exception:
    """The error for a script's refusal: { -1 } missing, { -2, epoch } stale, { -3, epoch } moving."""
    status = int(reply[0])
    if status == -2:
        return StaleMap(campaign_id, int(reply[1]))
    if status == -3:
        return ShardMoving(campaign_id, int(reply[1]))
    if status == -4:
        return HoldsLost(campaign_id)
    return ShardMissing(f"{campaign_id} shard {shard}")


def parse_lease(raw: str) -> tuple[int, int]:
    """(destination shard, amount) of a lease record "dest|amount|at" (or "dest|amount|at|C")."""
    dest, amount, _ = raw.split("|", 2)
    return int(dest), int(amount)


def lease_credited(raw: str) -> bool:
    """A lease record kept after its credit: lend.lua finds it if the LEND is ever sent again."""
    return raw.endswith("|C")


def request_field(user_id: str, request_id: str) -> str:
    return f"{user_id}|{request_id}"


def parse_record(field: str, raw: str) -> Record:
    user, request_id = field.split("|", 1)
    voucher, at, channel = raw.split("|", 2)
    return Record(user, request_id, voucher, int(at), channel)


# ------------------------------------------------------------ the redemption scripts' codes
# One class per script, each exactly its header's. Their numbers overlap on purpose: each
# script's are RedeemOutcome / ReverseOutcome numbers of claims.proto where a node passes them
# on (the outcomes the node decides itself fill the gaps: lifecycle/redemption.py).


class RedeemCode(IntEnum):
    """redeem.lua's first reply field (see its header); STALE / MOVING are refusal()'s."""

    REDEEMED = 1             # now, or earlier for this order (a replay)
    ALREADY_REDEEMED = 2
    EXPIRED = 3
    NOT_OWNER = 4
    BELOW_MINIMUM_SPEND = 6
    ORDER_ID_REUSED = 8
    SN_HOLD_LOST = 12        # the SN holds are no longer to be trusted (snregistry.py)
    STALE_PREPARE = 13       # a voucher is held by a stacked order's stale preparation: settle, retry


class ReverseCode(IntEnum):
    """reverse.lua's first reply field (see its header); STALE / MOVING are refusal()'s."""

    REVERSED = 1             # now, or earlier (a replay)
    ORDER_NOT_FOUND = 2


class StackCode(IntEnum):
    """stack.lua's first reply field to `prepare` (see its header); STALE / MOVING are refusal()'s.
    `commit` and `abort` answer 1 done (now or before), or 2: for commit, nothing of this
    instance is prepared (it was aborted); for abort, the part was committed already."""

    PREPARED = 1             # now, or before (a replay)
    ALREADY_REDEEMED = 2     # 2 to 8 as redeem.lua
    EXPIRED = 3
    NOT_OWNER = 4
    BELOW_MINIMUM_SPEND = 6
    ORDER_ID_REUSED = 8
    COMMITTED_BEFORE = 9     # this part was committed already (a replay of a decided order)
    STALE_PREPARE = 13       # a voucher is held by another order's stale preparation: settle, retry


class RecycleCode(IntEnum):
    """recycle.lua's per-voucher reply fields (see its header); STALE / MOVING are refusal()'s."""

    NOT_RECYCLED = 0         # in use, not the user's, released, or not expired / expired
    RECYCLED = 1             # now
    DONE_BEFORE = 2          # by the same op (L for release, E or X for expire): a resend
    EXPIRED = 3              # (release) found expired: recycled as such
    STALE_PREPARED = 4       # (expire) held by a stacked order's stale preparation: settle, sweep again


class HoldCode(IntEnum):
    """holds.lua's first reply field to `hold` and `decide` (see its header); its other ops
    answer { 0 }, and `hold_each` the count of things it could not hold."""

    HELD = 0                 # hold: every thing is held (or was ours); decide: decided (now or before)
    TAKEN = 1                # hold: used or held by other owners; decide: too late, or taken
    STALE = 2                # hold: held by owners past their deadline: settle them, hold again
