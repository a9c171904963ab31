"""pack_claims, unpack_claim_reply: the compiled ``_claim_codec_c`` unless disabled or unbuilt,
else the twin."""

from typing import TYPE_CHECKING

from ._switch import NO_EXTENSIONS

COMPILED = False
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._claim_codec_py import pack_claims, unpack_claim_reply
else:
    try:
        from ._claim_codec_c import pack_claims, unpack_claim_reply

        COMPILED = True
    except ImportError:
        from ._claim_codec_py import pack_claims, unpack_claim_reply

__all__ = ["COMPILED", "pack_claims", "unpack_claim_reply"]
