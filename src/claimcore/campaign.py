"""A campaign's configuration: validation, defaults, and its Redis/proto forms.

The spec is immutable once created (only `paused` changes, and that lives
in the shard states where the claim script checks it). The shard map is not:
an operator may reshard a live campaign (reshard.py), which sets `shards` and
bumps `epoch`. Front nodes cache the config anyway: every script that reads
or writes a shard checks the caller's epoch, so a node on an old map is told
(STALE) and reloads, and can never act on it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from claimcore import validation as v
from claimcore.v1 import claims_pb2 as pb

DEFAULT_SHARDS = 8


@dataclass(frozen=True)
class CampaignConfig:
    campaign_id: str
    inventory: int
    shards: int = DEFAULT_SHARDS
    per_user_limit: int = 1
    starts_at_ms: int = 0
    ends_at_ms: int = 0
    admission_rate: int = 0
    admission_burst: int = 0
    name: str = ""
    value_cents: int = 0
    min_spend_cents: int = 0
    category: str = ""
    valid_for_ms: int = 0             # a voucher's validity from its grant; 0 = no expiry
    max_vouchers_per_order: int = 1   # stacking: this campaign's vouchers one order may use
    regions: tuple[str, ...] = ()     # regions whose merchants may redeem; () = all
    allow_list: bool = False          # eligibility: only users on the allow list may claim
    resident_regions: tuple[str, ...] = ()  # eligibility: users must reside in one; () = anywhere
    required_tags: tuple[str, ...] = ()     # eligibility: users must carry all of them
    rounds: tuple[tuple[int, int], ...] = ()  # later rounds: (release_at_ms, amount) held back till then
    one_per_category: bool = False    # a user may hold vouchers of one such campaign per category
    stackable: bool = False           # its vouchers may share an order with other stackable campaigns'
    channels: tuple[str, ...] = ()    # the channels that may claim it (scope.py); () = every channel
    # The live shard map, not part of the spec: kept in the campaign hash.
    epoch: int = 0          # bumped by every reshard
    shard_slots: int = 0    # shards ever made (retired ones keep their grants); 0 = shards

    def __post_init__(self) -> None:
        v.check_id("campaign_id", self.campaign_id, v.CAMPAIGN_ID)
        v.check_range("inventory", self.inventory, 1, v.MAX_INVENTORY)
        v.check_range("shards", self.shards, 1, v.MAX_SHARDS)
        v.check_range("per_user_limit", self.per_user_limit, 1, v.MAX_PER_USER_LIMIT)
        v.check_range("starts_at_ms", self.starts_at_ms, 0, v.MAX_TIME_MS)
        v.check_range("ends_at_ms", self.ends_at_ms, 0, v.MAX_TIME_MS)
        if self.ends_at_ms and self.ends_at_ms <= self.starts_at_ms:
            raise v.InvalidInput("ends_at_ms must be after starts_at_ms (or 0 for never)")
        v.check_range("admission_rate", self.admission_rate, 0, v.MAX_RATE)
        v.check_range("admission_burst", self.admission_burst, 0, v.MAX_RATE)
        v.check_range("value_cents", self.value_cents, 0, v.MAX_MONEY_CENTS)
        v.check_range("min_spend_cents", self.min_spend_cents, 0, v.MAX_MONEY_CENTS)
        v.check_id("category", self.category, v.CATEGORY)
        if len(self.name) > v.MAX_NAME or any(ord(c) < 32 for c in self.name):
            raise v.InvalidInput(f"name must be at most {v.MAX_NAME} printable characters")
        if self.shards > self.inventory:
            raise v.InvalidInput("shards must not exceed inventory (every shard starts with stock)")
        v.check_range("valid_for_ms", self.valid_for_ms, 0, v.MAX_TIME_MS)
        v.check_range("max_vouchers_per_order", self.max_vouchers_per_order, 1, v.MAX_VOUCHERS_PER_ORDER)
        object.__setattr__(self, "regions", tuple(self.regions))
        if len(self.regions) > v.MAX_REGIONS:
            raise v.InvalidInput(f"at most {v.MAX_REGIONS} regions")
        for region in self.regions:
            v.check_id("region", region, v.REGION)
        for name in ("resident_regions", "required_tags"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if len(getattr(self, name)) > v.MAX_REGIONS:
                raise v.InvalidInput(f"at most {v.MAX_REGIONS} {name}")
            for item in getattr(self, name):
                v.check_id(name, item, v.REGION)
        object.__setattr__(self, "rounds", tuple((int(t), int(n)) for t, n in self.rounds))
        if len(self.rounds) > v.MAX_ROUNDS:
            raise v.InvalidInput(f"at most {v.MAX_ROUNDS} rounds")
        for i, (at, amount) in enumerate(self.rounds):
            v.check_range(f"rounds[{i}].release_at_ms", at, 1, v.MAX_TIME_MS)
            v.check_range(f"rounds[{i}].amount", amount, 1, v.MAX_INVENTORY)
            if i and at <= self.rounds[i - 1][0]:
                raise v.InvalidInput("rounds must be in order of release_at_ms, each later than the last")
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) > v.MAX_REGIONS:
            raise v.InvalidInput(f"at most {v.MAX_REGIONS} channels")
        for channel in self.channels:
            if not channel:
                raise v.InvalidInput("channels lists an empty channel id")
            v.check_id("channels", channel, v.CHANNEL_ID)
        if self.one_per_category and not self.category:
            raise v.InvalidInput("one_per_category needs a category")
        if self.initial_stock < self.shards:
            raise v.InvalidInput("the rounds hold back too much: every shard needs stock from the start")
        if self.shard_slots < self.shards:
            object.__setattr__(self, "shard_slots", self.shards)

    @classmethod
    def from_proto(cls, c: pb.Campaign) -> CampaignConfig:
        inventory = c.inventory
        shards = c.shards or min(DEFAULT_SHARDS, max(1, inventory))
        return cls(
            campaign_id=c.campaign_id,
            inventory=inventory,
            shards=shards,
            per_user_limit=c.per_user_limit or 1,
            starts_at_ms=c.starts_at_ms,
            ends_at_ms=c.ends_at_ms,
            admission_rate=c.admission_rate,
            admission_burst=c.admission_burst,
            name=c.name,
            value_cents=c.value_cents,
            min_spend_cents=c.min_spend_cents,
            category=c.category,
            valid_for_ms=c.valid_for_ms,
            max_vouchers_per_order=c.max_vouchers_per_order or 1,
            regions=tuple(c.regions),
            allow_list=c.allow_list,
            resident_regions=tuple(c.resident_regions),
            required_tags=tuple(c.required_tags),
            rounds=tuple((r.release_at_ms, r.amount) for r in c.rounds),
            one_per_category=c.one_per_category,
            stackable=c.stackable,
            channels=tuple(c.channels),
        )

    def spec(self) -> dict[str, object]:
        """The fields the creator chose (with `shards` as the live count)."""
        fields = dataclasses.asdict(self)
        del fields["epoch"], fields["shard_slots"]
        return fields

    def to_proto(self) -> pb.Campaign:
        fields = self.spec()
        fields["rounds"] = [pb.Round(release_at_ms=t, amount=n) for t, n in self.rounds]
        return pb.Campaign(**fields)

    def to_json(self) -> str:
        """The spec as stored at creation (at epoch 0, before any reshard)."""
        return json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))

    def with_map(self, shards: int, epoch: int, shard_slots: int) -> CampaignConfig:
        return dataclasses.replace(self, shards=shards, epoch=epoch, shard_slots=shard_slots)

    @classmethod
    def from_json(cls, text: str | bytes) -> CampaignConfig:
        return cls(**json.loads(text))

    def eligibility_rule(self) -> str:
        """The rule claim.lua checks, kept in every shard's state: "allow|regions|tags"."""
        if not (self.allow_list or self.resident_regions or self.required_tags):
            return ""
        return f"{int(self.allow_list)}|{','.join(self.resident_regions)}|{','.join(self.required_tags)}"

    @property
    def initial_stock(self) -> int:
        """What is claimable from the start: the inventory less what the rounds hold back."""
        return self.inventory - sum(amount for _, amount in self.rounds)

    def due_rounds(self, now_ms: int) -> list[int]:
        """Indexes of the rounds whose release time has come."""
        return [i for i, (at, _) in enumerate(self.rounds) if at <= now_ms]

    def shard_stock(self, shard: int) -> int:
        """Initial stock of one shard: the initial stock split as evenly as possible."""
        base, extra = divmod(self.initial_stock, self.shards)
        return base + (1 if shard < extra else 0)
