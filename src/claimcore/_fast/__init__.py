"""Hot path: Cython modules, each with a pure-Python twin giving identical results.

CLAIMCORE_NO_EXTENSIONS forces the twins (_switch.py says how). COMPILED maps each
selector module to True when its Cython module is in use.
"""

from . import claim_codec, claim_wire, keyed_limiter, shard_hash, token_bucket
from ._switch import NO_EXTENSIONS
from .claim_codec import pack_claims, unpack_claim_reply
from .claim_wire import (
    WireError,
    claim_fields_ok,
    decode_claim_batch,
    encode_claim_batch_reply,
    encode_claim_reply,
)
from .keyed_limiter import KeyedLimiter
from .shard_hash import fnv1a64, jump_hash, shard_of
from .token_bucket import TokenBucket

COMPILED: dict[str, bool] = {
    "claim_codec": claim_codec.COMPILED,
    "claim_wire": claim_wire.COMPILED,
    "keyed_limiter": keyed_limiter.COMPILED,
    "shard_hash": shard_hash.COMPILED,
    "token_bucket": token_bucket.COMPILED,
}

__all__ = [
    "COMPILED", "NO_EXTENSIONS", "KeyedLimiter", "TokenBucket", "WireError", "claim_fields_ok",
    "decode_claim_batch", "encode_claim_batch_reply", "encode_claim_reply", "fnv1a64", "jump_hash",
    "pack_claims", "shard_of", "unpack_claim_reply",
]
