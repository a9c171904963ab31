"""TokenBucket: the compiled ``_token_bucket_c`` unless disabled or unbuilt, else the twin."""

from typing import TYPE_CHECKING

from ._switch import NO_EXTENSIONS

COMPILED = False
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._token_bucket_py import TokenBucket
else:
    try:
        from ._token_bucket_c import TokenBucket

        COMPILED = True
    except ImportError:
        from ._token_bucket_py import TokenBucket

__all__ = ["COMPILED", "TokenBucket"]
