from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_GRANTED: _ClassVar[Outcome]
    OUTCOME_ALREADY_CLAIMED: _ClassVar[Outcome]
    OUTCOME_SOLD_OUT: _ClassVar[Outcome]
    OUTCOME_NOT_STARTED: _ClassVar[Outcome]
    OUTCOME_ENDED: _ClassVar[Outcome]
    OUTCOME_NOT_ELIGIBLE: _ClassVar[Outcome]
    OUTCOME_RATE_LIMITED: _ClassVar[Outcome]
    OUTCOME_PAUSED: _ClassVar[Outcome]

class NotEligibleReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOT_ELIGIBLE_REASON_UNSPECIFIED: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_DENY_LIST: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_ALLOW_LIST: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_REGION: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_TAG: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_ONE_PER_CATEGORY: _ClassVar[NotEligibleReason]
    NOT_ELIGIBLE_REASON_BLOCKED: _ClassVar[NotEligibleReason]

class CampaignPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAMPAIGN_PHASE_UNSPECIFIED: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_OPEN: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_SOLD_OUT: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_STOCK_RETURNING: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_PAUSED: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_NOT_STARTED: _ClassVar[CampaignPhase]
    CAMPAIGN_PHASE_ENDED: _ClassVar[CampaignPhase]

class RedeemOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDEEM_OUTCOME_UNSPECIFIED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_REDEEMED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_ALREADY_REDEEMED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_EXPIRED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_NOT_OWNER: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_MERCHANT_NOT_ALLOWED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_BELOW_MINIMUM_SPEND: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_NOT_STACKABLE: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_ORDER_ID_REUSED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_NOT_VERIFIED: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_VERIFICATION_UNAVAILABLE: _ClassVar[RedeemOutcome]
    REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED: _ClassVar[RedeemOutcome]

class ReverseOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVERSE_OUTCOME_UNSPECIFIED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_REVERSED: _ClassVar[ReverseOutcome]
    REVERSE_OUTCOME_ORDER_NOT_FOUND: _ClassVar[ReverseOutcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_GRANTED: Outcome
OUTCOME_ALREADY_CLAIMED: Outcome
OUTCOME_SOLD_OUT: Outcome
OUTCOME_NOT_STARTED: Outcome
OUTCOME_ENDED: Outcome
OUTCOME_NOT_ELIGIBLE: Outcome
OUTCOME_RATE_LIMITED: Outcome
OUTCOME_PAUSED: Outcome
NOT_ELIGIBLE_REASON_UNSPECIFIED: NotEligibleReason
NOT_ELIGIBLE_REASON_DENY_LIST: NotEligibleReason
NOT_ELIGIBLE_REASON_ALLOW_LIST: NotEligibleReason
NOT_ELIGIBLE_REASON_REGION: NotEligibleReason
NOT_ELIGIBLE_REASON_TAG: NotEligibleReason
NOT_ELIGIBLE_REASON_ONE_PER_CATEGORY: NotEligibleReason
NOT_ELIGIBLE_REASON_BLOCKED: NotEligibleReason
CAMPAIGN_PHASE_UNSPECIFIED: CampaignPhase
CAMPAIGN_PHASE_OPEN: CampaignPhase
CAMPAIGN_PHASE_SOLD_OUT: CampaignPhase
CAMPAIGN_PHASE_STOCK_RETURNING: CampaignPhase
CAMPAIGN_PHASE_PAUSED: CampaignPhase
CAMPAIGN_PHASE_NOT_STARTED: CampaignPhase
CAMPAIGN_PHASE_ENDED: CampaignPhase
REDEEM_OUTCOME_UNSPECIFIED: RedeemOutcome
REDEEM_OUTCOME_REDEEMED: RedeemOutcome
REDEEM_OUTCOME_ALREADY_REDEEMED: RedeemOutcome
REDEEM_OUTCOME_EXPIRED: RedeemOutcome
REDEEM_OUTCOME_NOT_OWNER: RedeemOutcome
REDEEM_OUTCOME_MERCHANT_NOT_ALLOWED: RedeemOutcome
REDEEM_OUTCOME_BELOW_MINIMUM_SPEND: RedeemOutcome
REDEEM_OUTCOME_NOT_STACKABLE: RedeemOutcome
REDEEM_OUTCOME_ORDER_ID_REUSED: RedeemOutcome
REDEEM_OUTCOME_NOT_VERIFIED: RedeemOutcome
REDEEM_OUTCOME_VERIFICATION_UNAVAILABLE: RedeemOutcome
REDEEM_OUTCOME_SN_ALREADY_SUBSIDISED: RedeemOutcome
REVERSE_OUTCOME_UNSPECIFIED: ReverseOutcome
REVERSE_OUTCOME_REVERSED: ReverseOutcome
REVERSE_OUTCOME_ORDER_NOT_FOUND: ReverseOutcome

class ClaimRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "request_id", "channel_id", "device_id", "client_ip")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    request_id: str
    channel_id: str
    device_id: str
    client_ip: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., request_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., device_id: _Optional[str] = ..., client_ip: _Optional[str] = ...) -> None: ...

class Voucher(_message.Message):
    __slots__ = ("voucher_id", "campaign_id", "user_id", "request_id", "granted_at_ms", "value_cents", "min_spend_cents", "category", "channel_id")
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEND_CENTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    voucher_id: str
    campaign_id: str
    user_id: str
    request_id: str
    granted_at_ms: int
    value_cents: int
    min_spend_cents: int
    category: str
    channel_id: str
    def __init__(self, voucher_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., request_id: _Optional[str] = ..., granted_at_ms: _Optional[int] = ..., value_cents: _Optional[int] = ..., min_spend_cents: _Optional[int] = ..., category: _Optional[str] = ..., channel_id: _Optional[str] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("outcome", "voucher", "retry_after_ms", "detail", "not_eligible_reason")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    NOT_ELIGIBLE_REASON_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    voucher: Voucher
    retry_after_ms: int
    detail: str
    not_eligible_reason: NotEligibleReason
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., voucher: _Optional[_Union[Voucher, _Mapping]] = ..., retry_after_ms: _Optional[int] = ..., detail: _Optional[str] = ..., not_eligible_reason: _Optional[_Union[NotEligibleReason, str]] = ...) -> None: ...

class ClaimBatchRequest(_message.Message):
    __slots__ = ("claims",)
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[ClaimRequest]
    def __init__(self, claims: _Optional[_Iterable[_Union[ClaimRequest, _Mapping]]] = ...) -> None: ...

class ClaimBatchResponse(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[ClaimResponse]
    def __init__(self, replies: _Optional[_Iterable[_Union[ClaimResponse, _Mapping]]] = ...) -> None: ...

class GetClaimRequest(_message.Message):
    __slots__ = ("campaign_id", "request_id", "user_id")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    request_id: str
    user_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetClaimResponse(_message.Message):
    __slots__ = ("found", "vouchers")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VOUCHERS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    vouchers: _containers.RepeatedCompositeFieldContainer[Voucher]
    def __init__(self, found: _Optional[bool] = ..., vouchers: _Optional[_Iterable[_Union[Voucher, _Mapping]]] = ...) -> None: ...

class WatchCampaignsRequest(_message.Message):
    __slots__ = ("campaign_ids",)
    CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchCampaignsResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: CampaignState
    def __init__(self, state: _Optional[_Union[CampaignState, _Mapping]] = ...) -> None: ...

class CampaignState(_message.Message):
    __slots__ = ("campaign_id", "phase", "shard_epoch", "sequence", "observed_at_ms", "sold_out_valid_for_ms", "stock_back_by_ms")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SHARD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SOLD_OUT_VALID_FOR_MS_FIELD_NUMBER: _ClassVar[int]
    STOCK_BACK_BY_MS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    phase: CampaignPhase
    shard_epoch: int
    sequence: int
    observed_at_ms: int
    sold_out_valid_for_ms: int
    stock_back_by_ms: int
    def __init__(self, campaign_id: _Optional[str] = ..., phase: _Optional[_Union[CampaignPhase, str]] = ..., shard_epoch: _Optional[int] = ..., sequence: _Optional[int] = ..., observed_at_ms: _Optional[int] = ..., sold_out_valid_for_ms: _Optional[int] = ..., stock_back_by_ms: _Optional[int] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("campaign_id", "name", "inventory", "shards", "per_user_limit", "starts_at_ms", "ends_at_ms", "admission_rate", "admission_burst", "value_cents", "min_spend_cents", "category", "valid_for_ms", "max_vouchers_per_order", "regions", "allow_list", "resident_regions", "required_tags", "rounds", "one_per_category", "stackable", "channels")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    PER_USER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_RATE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_BURST_FIELD_NUMBER: _ClassVar[int]
    VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEND_CENTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    VALID_FOR_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_VOUCHERS_PER_ORDER_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LIST_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_REGIONS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TAGS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ONE_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    STACKABLE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    name: str
    inventory: int
    shards: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    admission_rate: int
    admission_burst: int
    value_cents: int
    min_spend_cents: int
    category: str
    valid_for_ms: int
    max_vouchers_per_order: int
    regions: _containers.RepeatedScalarFieldContainer[str]
    allow_list: bool
    resident_regions: _containers.RepeatedScalarFieldContainer[str]
    required_tags: _containers.RepeatedScalarFieldContainer[str]
    rounds: _containers.RepeatedCompositeFieldContainer[Round]
    one_per_category: bool
    stackable: bool
    channels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign_id: _Optional[str] = ..., name: _Optional[str] = ..., inventory: _Optional[int] = ..., shards: _Optional[int] = ..., per_user_limit: _Optional[int] = ..., starts_at_ms: _Optional[int] = ..., ends_at_ms: _Optional[int] = ..., admission_rate: _Optional[int] = ..., admission_burst: _Optional[int] = ..., value_cents: _Optional[int] = ..., min_spend_cents: _Optional[int] = ..., category: _Optional[str] = ..., valid_for_ms: _Optional[int] = ..., max_vouchers_per_order: _Optional[int] = ..., regions: _Optional[_Iterable[str]] = ..., allow_list: _Optional[bool] = ..., resident_regions: _Optional[_Iterable[str]] = ..., required_tags: _Optional[_Iterable[str]] = ..., rounds: _Optional[_Iterable[_Union[Round, _Mapping]]] = ..., one_per_category: _Optional[bool] = ..., stackable: _Optional[bool] = ..., channels: _Optional[_Iterable[str]] = ...) -> None: ...

class Round(_message.Message):
    __slots__ = ("release_at_ms", "amount")
    RELEASE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    release_at_ms: int
    amount: int
    def __init__(self, release_at_ms: _Optional[int] = ..., amount: _Optional[int] = ...) -> None: ...

class EligibilityRecord(_message.Message):
    __slots__ = ("user_id", "allowed", "denied", "region", "tags", "remove")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    allowed: bool
    denied: bool
    region: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    remove: bool
    def __init__(self, user_id: _Optional[str] = ..., allowed: _Optional[bool] = ..., denied: _Optional[bool] = ..., region: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., remove: _Optional[bool] = ...) -> None: ...

class UpdateEligibilityRequest(_message.Message):
    __slots__ = ("campaign_id", "records")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    records: _containers.RepeatedCompositeFieldContainer[EligibilityRecord]
    def __init__(self, campaign_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[EligibilityRecord, _Mapping]]] = ...) -> None: ...

class UpdateEligibilityResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class CreateCampaignRequest(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class CreateCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class GetCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class GetCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class PauseCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class PauseCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class ResumeCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ResumeCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class ArchiveCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ArchiveCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class UnarchiveCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class UnarchiveCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ...) -> None: ...

class RecycleExpiredRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ListMerchantsRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ShardFigures(_message.Message):
    __slots__ = ("shard", "remaining", "granted", "retired")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    shard: int
    remaining: int
    granted: int
    retired: bool
    def __init__(self, shard: _Optional[int] = ..., remaining: _Optional[int] = ..., granted: _Optional[int] = ..., retired: _Optional[bool] = ...) -> None: ...

class CampaignInfo(_message.Message):
    __slots__ = ("campaign", "paused", "granted", "remaining", "sold_out_at_ms", "shards", "created_at_ms", "shard_epoch", "resharding", "held_for_rounds", "archived")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    SOLD_OUT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SHARD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RESHARDING_FIELD_NUMBER: _ClassVar[int]
    HELD_FOR_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    paused: bool
    granted: int
    remaining: int
    sold_out_at_ms: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardFigures]
    created_at_ms: int
    shard_epoch: int
    resharding: bool
    held_for_rounds: int
    archived: bool
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ..., paused: _Optional[bool] = ..., granted: _Optional[int] = ..., remaining: _Optional[int] = ..., sold_out_at_ms: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardFigures, _Mapping]]] = ..., created_at_ms: _Optional[int] = ..., shard_epoch: _Optional[int] = ..., resharding: _Optional[bool] = ..., held_for_rounds: _Optional[int] = ..., archived: _Optional[bool] = ...) -> None: ...

class ReshardRequest(_message.Message):
    __slots__ = ("campaign_id", "shards")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    shards: int
    def __init__(self, campaign_id: _Optional[str] = ..., shards: _Optional[int] = ...) -> None: ...

class ReshardResponse(_message.Message):
    __slots__ = ("campaign", "from_shards", "to_shards", "shard_epoch", "moved_users", "moved_records", "moved_stock", "frozen_ms", "took_ms", "resumed")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    TO_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SHARD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MOVED_USERS_FIELD_NUMBER: _ClassVar[int]
    MOVED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MOVED_STOCK_FIELD_NUMBER: _ClassVar[int]
    FROZEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    campaign: CampaignInfo
    from_shards: int
    to_shards: int
    shard_epoch: int
    moved_users: int
    moved_records: int
    moved_stock: int
    frozen_ms: int
    took_ms: int
    resumed: bool
    def __init__(self, campaign: _Optional[_Union[CampaignInfo, _Mapping]] = ..., from_shards: _Optional[int] = ..., to_shards: _Optional[int] = ..., shard_epoch: _Optional[int] = ..., moved_users: _Optional[int] = ..., moved_records: _Optional[int] = ..., moved_stock: _Optional[int] = ..., frozen_ms: _Optional[int] = ..., took_ms: _Optional[int] = ..., resumed: _Optional[bool] = ...) -> None: ...

class ListCampaignsRequest(_message.Message):
    __slots__ = ("include_archived",)
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    include_archived: bool
    def __init__(self, include_archived: _Optional[bool] = ...) -> None: ...

class ListCampaignsResponse(_message.Message):
    __slots__ = ("campaign_ids",)
    CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "kind", "shard", "at_ms", "user_id", "request_id", "voucher_id", "channel_id", "order_id", "merchant_id", "order_amount_cents", "subsidy_cents", "sn_codes", "returned")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    SUBSIDY_CENTS_FIELD_NUMBER: _ClassVar[int]
    SN_CODES_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: str
    shard: int
    at_ms: int
    user_id: str
    request_id: str
    voucher_id: str
    channel_id: str
    order_id: str
    merchant_id: str
    order_amount_cents: int
    subsidy_cents: int
    sn_codes: _containers.RepeatedScalarFieldContainer[str]
    returned: bool
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[str] = ..., shard: _Optional[int] = ..., at_ms: _Optional[int] = ..., user_id: _Optional[str] = ..., request_id: _Optional[str] = ..., voucher_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., order_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., order_amount_cents: _Optional[int] = ..., subsidy_cents: _Optional[int] = ..., sn_codes: _Optional[_Iterable[str]] = ..., returned: _Optional[bool] = ...) -> None: ...

class Merchant(_message.Message):
    __slots__ = ("campaign_id", "merchant_id", "name", "category", "region")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    merchant_id: str
    name: str
    category: str
    region: str
    def __init__(self, campaign_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class RegisterMerchantRequest(_message.Message):
    __slots__ = ("merchant",)
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ...) -> None: ...

class RegisterMerchantResponse(_message.Message):
    __slots__ = ("merchant",)
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ...) -> None: ...

class ListMerchantsResponse(_message.Message):
    __slots__ = ("merchants",)
    MERCHANTS_FIELD_NUMBER: _ClassVar[int]
    merchants: _containers.RepeatedCompositeFieldContainer[Merchant]
    def __init__(self, merchants: _Optional[_Iterable[_Union[Merchant, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "voucher_id")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    voucher_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., voucher_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released", "detail")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    released: bool
    detail: str
    def __init__(self, released: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RecycleExpiredResponse(_message.Message):
    __slots__ = ("recycled",)
    RECYCLED_FIELD_NUMBER: _ClassVar[int]
    recycled: int
    def __init__(self, recycled: _Optional[int] = ...) -> None: ...

class RedeemRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "voucher_ids", "merchant_id", "order_id", "order_amount_cents", "sn_codes", "channel_id", "stacked")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    SN_CODES_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    STACKED_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    voucher_ids: _containers.RepeatedScalarFieldContainer[str]
    merchant_id: str
    order_id: str
    order_amount_cents: int
    sn_codes: _containers.RepeatedScalarFieldContainer[str]
    channel_id: str
    stacked: _containers.RepeatedCompositeFieldContainer[StackedVouchers]
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., voucher_ids: _Optional[_Iterable[str]] = ..., merchant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., order_amount_cents: _Optional[int] = ..., sn_codes: _Optional[_Iterable[str]] = ..., channel_id: _Optional[str] = ..., stacked: _Optional[_Iterable[_Union[StackedVouchers, _Mapping]]] = ...) -> None: ...

class StackedVouchers(_message.Message):
    __slots__ = ("campaign_id", "voucher_ids")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    voucher_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign_id: _Optional[str] = ..., voucher_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RedeemResponse(_message.Message):
    __slots__ = ("outcome", "voucher_ids", "subsidy_cents", "redeemed_at_ms", "detail")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    SUBSIDY_CENTS_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    outcome: RedeemOutcome
    voucher_ids: _containers.RepeatedScalarFieldContainer[str]
    subsidy_cents: int
    redeemed_at_ms: int
    detail: str
    def __init__(self, outcome: _Optional[_Union[RedeemOutcome, str]] = ..., voucher_ids: _Optional[_Iterable[str]] = ..., subsidy_cents: _Optional[int] = ..., redeemed_at_ms: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class ReverseRequest(_message.Message):
    __slots__ = ("campaign_id", "user_id", "order_id")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    user_id: str
    order_id: str
    def __init__(self, campaign_id: _Optional[str] = ..., user_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class ReverseResponse(_message.Message):
    __slots__ = ("outcome", "returned_voucher_ids", "expired_voucher_ids", "reversed_at_ms")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RETURNED_VOUCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_VOUCHER_IDS_FIELD_NUMBER: _ClassVar[int]
    REVERSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    outcome: ReverseOutcome
    returned_voucher_ids: _containers.RepeatedScalarFieldContainer[str]
    expired_voucher_ids: _containers.RepeatedScalarFieldContainer[str]
    reversed_at_ms: int
    def __init__(self, outcome: _Optional[_Union[ReverseOutcome, str]] = ..., returned_voucher_ids: _Optional[_Iterable[str]] = ..., expired_voucher_ids: _Optional[_Iterable[str]] = ..., reversed_at_ms: _Optional[int] = ...) -> None: ...

class ExportEventsRequest(_message.Message):
    __slots__ = ("campaign_id", "cursor", "limit", "time_order")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIME_ORDER_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    cursor: str
    limit: int
    time_order: bool
    def __init__(self, campaign_id: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ..., time_order: _Optional[bool] = ...) -> None: ...

class ExportEventsResponse(_message.Message):
    __slots__ = ("events", "next_cursor", "more")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_cursor: str
    more: bool
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., more: _Optional[bool] = ...) -> None: ...

class ReconcileFigure(_message.Message):
    __slots__ = ("name", "from_ledger", "live", "ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_LEDGER_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_ledger: int
    live: int
    ok: bool
    def __init__(self, name: _Optional[str] = ..., from_ledger: _Optional[int] = ..., live: _Optional[int] = ..., ok: _Optional[bool] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("ok", "figures", "events")
    OK_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    figures: _containers.RepeatedCompositeFieldContainer[ReconcileFigure]
    events: int
    def __init__(self, ok: _Optional[bool] = ..., figures: _Optional[_Iterable[_Union[ReconcileFigure, _Mapping]]] = ..., events: _Optional[int] = ...) -> None: ...
