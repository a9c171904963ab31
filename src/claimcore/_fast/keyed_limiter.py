"""KeyedLimiter: the compiled ``_keyed_limiter_c`` unless disabled or unbuilt, else the twin."""

from typing import TYPE_CHECKING

from ._switch import NO_EXTENSIONS

COMPILED = False
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._keyed_limiter_py import KeyedLimiter
else:
    try:
        from ._keyed_limiter_c import KeyedLimiter

        COMPILED = True
    except ImportError:
        from ._keyed_limiter_py import KeyedLimiter

__all__ = ["COMPILED", "KeyedLimiter"]
