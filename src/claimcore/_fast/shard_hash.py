"""shard_of/fnv1a64/jump_hash: the compiled ``_shard_hash_c`` unless disabled or unbuilt, else the twin."""

from typing import TYPE_CHECKING

from ._switch import NO_EXTENSIONS

COMPILED = False
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._shard_hash_py import fnv1a64, jump_hash, shard_of
else:
    try:
        from ._shard_hash_c import fnv1a64, jump_hash, shard_of

        COMPILED = True
    except ImportError:
        from ._shard_hash_py import fnv1a64, jump_hash, shard_of

__all__ = ["COMPILED", "fnv1a64", "jump_hash", "shard_of"]
