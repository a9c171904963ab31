"""Hot path: Cython modules, each with a pure-Python twin giving identical results.

Set CLAIMCORE_NO_EXTENSIONS to a non-empty value other than "0" to force the twins;
any Python but CPython uses the twins too (as propcache and yarl do: the Cython
modules target CPython's C API). COMPILED maps each selector module to True when
its Cython module is in use.
"""

import os
import sys

NO_EXTENSIONS: bool = (
    sys.implementation.name != "cpython" or os.environ.get("CLAIMCORE_NO_EXTENSIONS", "") not in ("", "0")
)

from . import claim_codec, keyed_limiter, shard_hash, token_bucket  # noqa: E402  (the selectors read NO_EXTENSIONS)
from .claim_codec import pack_claims, unpack_claim_reply  # noqa: E402
from .keyed_limiter import KeyedLimiter  # noqa: E402
from .shard_hash import fnv1a64, jump_hash, shard_of  # noqa: E402
from .token_bucket import TokenBucket  # noqa: E402

COMPILED: dict[str, bool] = {
    "claim_codec": claim_codec.COMPILED,
    "keyed_limiter": keyed_limiter.COMPILED,
    "shard_hash": shard_hash.COMPILED,
    "token_bucket": token_bucket.COMPILED,
}

__all__ = [
    "COMPILED", "NO_EXTENSIONS", "KeyedLimiter", "TokenBucket", "fnv1a64", "jump_hash", "pack_claims",
    "shard_of", "unpack_claim_reply",
]
