"""decode_claim_batch, encode_claim_batch_reply, encode_claim_reply, claim_fields_ok: the compiled
``_claim_wire_c`` unless disabled or unbuilt, else the twin (``_claim_wire_py`` says what they do).
WireError is one class for both."""

from typing import TYPE_CHECKING

from ._switch import NO_EXTENSIONS
from ._wire_errors import WireError

COMPILED = False
if TYPE_CHECKING or NO_EXTENSIONS:
    from ._claim_wire_py import (
        claim_fields_ok,
        decode_claim_batch,
        encode_claim_batch_reply,
        encode_claim_reply,
    )
else:
    try:
        from ._claim_wire_c import (
            claim_fields_ok,
            decode_claim_batch,
            encode_claim_batch_reply,
            encode_claim_reply,
        )

        COMPILED = True
    except ImportError:
        from ._claim_wire_py import (
            claim_fields_ok,
            decode_claim_batch,
            encode_claim_batch_reply,
            encode_claim_reply,
        )

__all__ = ["COMPILED", "WireError", "claim_fields_ok", "decode_claim_batch", "encode_claim_batch_reply",
           "encode_claim_reply"]
