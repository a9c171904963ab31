"""Pure-Python twin of ``_claim_wire_c``: ClaimBatch's protobuf bytes without protobuf objects.

    decode_claim_batch(raw) -> (rows, first_bad)
        rows: one (campaign_id, user_id, request_id, channel_id, device_id, client_ip)
        tuple of str per ``claims`` entry of a ClaimBatchRequest, in order, "" for an
        absent field. first_bad: the index of the first row whose five ids break the
        id rules below (client_ip is not checked here: the caller does), or -1.
    encode_claim_batch_reply(replies) -> bytes
        A ClaimBatchResponse, byte for byte what protobuf's SerializeToString gives. Each
        element is a serialized ClaimResponse (bytes, spliced in as is) or a tuple
        (outcome, retry_after_ms, detail, voucher[, not_eligible_reason]), voucher None or
        the 9-tuple (voucher_id, campaign_id, user_id, request_id, granted_at_ms,
        value_cents, min_spend_cents, category, channel_id) in Voucher's field order; the
        fifth element may be left out (0: only NOT_ELIGIBLE replies carry a reason).
        proto3: zero and "" are left out; a voucher tuple is always written, even all
        default. Strings must be str (TypeError), ints int (TypeError); outcome or reason
        outside int32 or another int outside int64 is ValueError; a tuple of the wrong
        length ValueError.
    encode_claim_reply(reply) -> bytes
        One ClaimResponse (for the unary Claim) from such a tuple, as SerializeToString gives it.
    claim_fields_ok(campaign_id, user_id, request_id, channel_id, device_id) -> bool
        The same id rules for one claim (TypeError for a non-str).

Decoding follows protobuf's own decoder (upb, as the python protobuf package uses it)
wherever it accepts bytes: unknown fields of every wire type are skipped, groups too
(start and end must match, nesting at most 100 deep counting the claim itself, as upb's
depth limit); a field of a known number but another wire type is unknown; a string
field given twice keeps the last, and every occurrence must be valid UTF-8. Tags are at
most 5 bytes and below 2**32, lengths at most 5 bytes, varints at most 10 bytes; field
number 0 (but inside a group, where upb lets it pass), wire types 6 and 7, an end group
without its start, a length past the end of its message: all WireError
(claimcore._fast._wire_errors), as upb refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._wire_errors import WireError

__all__ = ["ID_RULES", "WireError", "claim_fields_ok", "decode_claim_batch", "encode_claim_batch_reply",
           "encode_claim_reply"]

# The id rules of claimcore.validation (CAMPAIGN_ID, USER_ID, REQUEST_ID, CHANNEL_ID,
# DEVICE_ID), restated here because _fast sits below validation; tests hold them to its regexes.
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NAME_CHARS = ALNUM + "._-"  # [A-Za-z0-9._-]: a campaign id after its first char, a channel id
KEY_CHARS = ALNUM + "._:@+=-"  # [A-Za-z0-9._:@+=-]: user, request and device ids
# (first char, other chars, min length, max length), one per checked field in row order.
ID_RULES: tuple[tuple[str, str, int, int], ...] = (
    (ALNUM, NAME_CHARS, 1, 64),  # campaign_id  [A-Za-z0-9][A-Za-z0-9._-]{0,63}
    (KEY_CHARS, KEY_CHARS, 1, 128),  # user_id      [A-Za-z0-9._:@+=-]{1,128}
    (KEY_CHARS, KEY_CHARS, 1, 128),  # request_id   [A-Za-z0-9._:@+=-]{1,128}
    (NAME_CHARS, NAME_CHARS, 0, 64),  # channel_id   [A-Za-z0-9._-]{0,64}
    (KEY_CHARS, KEY_CHARS, 0, 128),  # device_id    [A-Za-z0-9._:@+=-]{0,128}
)
_RULE_SETS = tuple((frozenset(first), frozenset(other), lo, hi) for first, other, lo, hi in ID_RULES)

MAX_DEPTH = 100  # upb's nesting limit: submessages and groups, the claim itself counting one
_MASK64 = 2**64 - 1
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _rows_ok(values: Sequence[str]) -> bool:
    for value, (first, other, lo, hi) in zip(values, _RULE_SETS, strict=False):  # a row's client_ip: no rule
        if not lo <= len(value) <= hi or (value and value[0] not in first) or not other.issuperset(value):
            return False
    return True


def claim_fields_ok(campaign_id: str, user_id: str, request_id: str, channel_id: str, device_id: str) -> bool:
    values = (campaign_id, user_id, request_id, channel_id, device_id)
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"ids are str, not {type(value).__name__}")
    return _rows_ok(values)


# --------------------------------------------------------------------------- decoding


def _varint(raw: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise WireError("truncated varint")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise WireError("varint too long")


def _tag(raw: bytes, pos: int, end: int, in_group: bool = False) -> tuple[int, int]:
    tag, pos = _varint(raw, pos, end, 5)
    if tag >> 32:
        raise WireError("tag over 32 bits")
    if tag >> 3 == 0 and not in_group:  # upb skips a group's fields without this check
        raise WireError("field number 0")
    return tag, pos


def _length(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    size, pos = _varint(raw, pos, end, 5)
    if size > end - pos:
        raise WireError("length past the end")
    return size, pos


def _skip(raw: bytes, pos: int, end: int, tag: int, depth: int) -> int:
    """The position after the value of an unknown field whose tag was just read."""
    wire_type = tag & 7
    if wire_type == 0:
        return _varint(raw, pos, end, 10)[1]
    if wire_type == 2:
        size, pos = _length(raw, pos, end)
        return pos + size
    if wire_type in (1, 5):
        size = 8 if wire_type == 1 else 4
        if end - pos < size:
            raise WireError("truncated fixed field")
        return pos + size
    if wire_type == 3:
        depth += 1
        if depth > MAX_DEPTH:
            raise WireError("nested too deep")
        while True:
            if pos >= end:
                raise WireError("unterminated group")
            inner, pos = _tag(raw, pos, end, True)
            if inner & 7 == 4:
                if inner >> 3 != tag >> 3:
                    raise WireError("mismatched end group")
                return pos
            pos = _skip(raw, pos, end, inner, depth)
    raise WireError("end group without start" if wire_type == 4 else f"wire type {wire_type}")


def _text(raw: bytes, start: int, stop: int) -> str:
    try:
        return raw[start:stop].decode()
    except UnicodeDecodeError:
        raise WireError("invalid UTF-8 in a string") from None


def _claim(raw: bytes, pos: int, end: int) -> tuple[str, str, str, str, str, str]:
    fields = ["", "", "", "", "", ""]
    while pos < end:
        tag, pos = _tag(raw, pos, end)
        number = tag >> 3
        if tag & 7 == 2 and number <= 6:
            size, pos = _length(raw, pos, end)
            fields[number - 1] = _text(raw, pos, pos + size)
            pos += size
        else:
            pos = _skip(raw, pos, end, tag, 1)
    return tuple(fields)  # type: ignore[return-value]


def decode_claim_batch(raw: bytes) -> tuple[list[tuple[str, str, str, str, str, str]], int]:
    if not isinstance(raw, bytes):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    rows = []
    first_bad = -1
    pos, end = 0, len(raw)
    while pos < end:
        tag, pos = _tag(raw, pos, end)
        if tag == 0x0A:  # field 1 (claims), length-delimited
            size, pos = _length(raw, pos, end)
            row = _claim(raw, pos, pos + size)
            pos += size
            if first_bad < 0 and not _rows_ok(row):
                first_bad = len(rows)
            rows.append(row)
        else:
            pos = _skip(raw, pos, end, tag, 0)
    return rows, first_bad


# --------------------------------------------------------------------------- encoding


def _put_varint(out: bytearray, value: int) -> None:
    value &= _MASK64  # negative ints as their 64-bit two's complement: 10 bytes
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_int(out: bytearray, key: int, value: object, bounds: tuple[int, int]) -> None:
    if not isinstance(value, int):
        raise TypeError(f"an int field holds {type(value).__name__}")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{value} is out of range")
    if value:
        out.append(key)
        _put_varint(out, value)


def _put_str(out: bytearray, key: int, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a string field holds {type(value).__name__}")
    if value:
        data = value.encode()
        out.append(key)
        _put_varint(out, len(data))
        out += data


def _put_message(out: bytearray, key: int, body: bytes | bytearray) -> None:
    out.append(key)
    _put_varint(out, len(body))
    out += body


def _voucher(voucher: object) -> bytearray:
    if not isinstance(voucher, tuple):
        raise TypeError(f"a voucher is a tuple or None, not {type(voucher).__name__}")
    if len(voucher) != 9:
        raise ValueError(f"a voucher tuple has 9 fields, not {len(voucher)}")
    voucher_id, campaign_id, user_id, request_id, granted_at, value, min_spend, category, channel = voucher
    body = bytearray()
    _put_str(body, 0x0A, voucher_id)
    _put_str(body, 0x12, campaign_id)
    _put_str(body, 0x1A, user_id)
    _put_str(body, 0x22, request_id)
    _put_int(body, 0x28, granted_at, _INT64)
    _put_int(body, 0x30, value, _INT64)
    _put_int(body, 0x38, min_spend, _INT64)
    _put_str(body, 0x42, category)
    _put_str(body, 0x4A, channel)
    return body


def _reply(reply: tuple) -> bytearray:
    if len(reply) == 4:
        outcome, retry_after_ms, detail, voucher = reply
        reason = 0
    elif len(reply) == 5:
        outcome, retry_after_ms, detail, voucher, reason = reply
    else:
        raise ValueError(f"a reply tuple has 4 or 5 fields, not {len(reply)}")
    body = bytearray()
    _put_int(body, 0x08, outcome, _INT32)
    if voucher is not None:
        _put_message(body, 0x12, _voucher(voucher))
    _put_int(body, 0x18, retry_after_ms, _INT64)
    _put_str(body, 0x22, detail)
    _put_int(body, 0x28, reason, _INT32)
    return body


def encode_claim_batch_reply(replies: Sequence[bytes | tuple]) -> bytes:
    out = bytearray()
    for reply in replies:
        if isinstance(reply, bytes):
            _put_message(out, 0x0A, reply)
        elif isinstance(reply, tuple):
            _put_message(out, 0x0A, _reply(reply))
        else:
            raise TypeError(f"a reply is bytes or a tuple, not {type(reply).__name__}")
    return bytes(out)


def encode_claim_reply(reply: tuple) -> bytes:
    if not isinstance(reply, tuple):
        raise TypeError(f"a reply is a tuple, not {type(reply).__name__}")
    return bytes(_reply(reply))
