"""WireError: what both claim_wire implementations raise for bytes that are not a ClaimBatchRequest.

It lives in a plain module of its own so the compiled ``_claim_wire_c`` and its twin
``_claim_wire_py`` raise one and the same class (a caller catches it once, whichever
implementation claimcore._fast selected).
"""


class WireError(ValueError):
    """Malformed protobuf wire format; the message is a short reason ("truncated varint", ...)."""
