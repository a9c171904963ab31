"""claimcore._fast.claim_wire: ClaimBatch's protobuf bytes, held to protobuf itself.

Each behaviour test takes one implementation from the claim_wire fixture (ids
c-extension-module and pure-python-module, as in test_fast_parity), imported directly
whatever CLAIMCORE_NO_EXTENSIONS says, so an unbuilt extension is a failure, never a
skip. The references are the generated claims_pb2 (upb underneath) for the bytes, and
claimcore.validation's regexes and check_claim for the id rules: decoding must give
pb's fields wherever pb accepts the bytes and WireError wherever pb refuses them;
encoding must give SerializeToString's bytes exactly. Groups are skipped as upb skips
them (matching ends, 100 levels deep at most, field number 0 let pass inside them), so no
corner is known to differ.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import claimcore._fast as fast
from claimcore import validation
from claimcore._fast import NO_EXTENSIONS
from claimcore._fast._wire_errors import WireError
from claimcore.v1 import claims_pb2 as pb
from support import outcome_of

pytestmark = pytest.mark.twins

CW_PY, CW_C = "claimcore._fast._claim_wire_py", "claimcore._fast._claim_wire_c"
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+=-"
FIELDS = ("campaign_id", "user_id", "request_id", "channel_id", "device_id", "client_ip")
PATTERNS = (validation.CAMPAIGN_ID, validation.USER_ID, validation.REQUEST_ID, validation.CHANNEL_ID,
            validation.DEVICE_ID)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mod(name: str) -> ModuleType:
    return importlib.import_module(name)  # deliberately not guarded: unbuilt is an error


@pytest.fixture(scope="module", params=[CW_C, CW_PY], ids=["c-extension-module", "pure-python-module"])
def claim_wire(request: pytest.FixtureRequest) -> ModuleType:
    return _mod(request.param)


def _varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_rows(raw: bytes) -> list[tuple[str, ...]] | None:
    """What protobuf itself reads from the bytes, or None when it refuses them."""
    try:
        message = pb.ClaimBatchRequest.FromString(raw)
    except DecodeError:
        return None
    return [tuple(getattr(claim, name) for name in FIELDS) for claim in message.claims]


def _first_bad(rows: list[tuple[str, ...]]) -> int:
    for index, row in enumerate(rows):
        try:
            validation.check_claim(*row[:5])
        except validation.InvalidInput:
            return index
    return -1


def _agrees_with_pb(claim_wire: ModuleType, raw: bytes) -> None:
    expected = _pb_rows(raw)
    if expected is None:
        with pytest.raises(WireError):
            claim_wire.decode_claim_batch(raw)
    else:
        rows, first_bad = claim_wire.decode_claim_batch(raw)
        assert rows == expected
        assert first_bad == _first_bad(expected)
        assert all(type(value) is str for row in rows for value in row)


# --------------------------------------------------------------------------- selection


def test_selector_follows_the_switch() -> None:
    expected = _mod(CW_PY if NO_EXTENSIONS else CW_C)
    assert fast.claim_wire.COMPILED is (not NO_EXTENSIONS)
    for name in ("decode_claim_batch", "encode_claim_batch_reply", "claim_fields_ok"):
        assert getattr(fast.claim_wire, name) is getattr(expected, name)
        assert getattr(fast, name) is getattr(expected, name)
    assert fast.WireError is WireError is _mod(CW_C).WireError is _mod(CW_PY).WireError
    assert issubclass(WireError, ValueError)


# --------------------------------------------------------------------------- id rules


ID_TEXT = st.one_of(
    st.text(alphabet=ID_CHARS, max_size=140),
    st.text(alphabet=ID_CHARS + "!/ #\x00\x7fé", max_size=20),
    st.text(max_size=10),  # any code point
    st.builds(lambda n, c: c * n, st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129]),
              st.sampled_from(["a", "-", ".", ":", "7"])),
    st.builds(lambda head, n: head + "a" * n, st.sampled_from(["-", ".", "_", ":", "é"]),
              st.sampled_from([0, 62, 63, 127])),
)
GOOD = ("launch-1", "u1", "r1", "bench-app", "dev-1")


@SETTINGS
@given(field=st.integers(0, 4), value=ID_TEXT)
def test_id_rules_are_validations_regexes(claim_wire: ModuleType, field: int, value: str) -> None:
    """One field varied, the others good: the verdict is that field's regex, in both paths."""
    ids = list(GOOD)
    ids[field] = value
    expected = PATTERNS[field].fullmatch(value) is not None
    assert claim_wire.claim_fields_ok(*ids) is expected
    claims = [pb.ClaimRequest(**dict(zip(FIELDS, GOOD, strict=False))),
              pb.ClaimRequest(**dict(zip(FIELDS, ids, strict=False)))]
    raw = pb.ClaimBatchRequest(claims=claims).SerializeToString()
    rows, first_bad = claim_wire.decode_claim_batch(raw)
    assert rows[1][field] == value
    assert first_bad == (-1 if expected else 1)


def test_id_rules_at_their_edges(claim_wire: ModuleType) -> None:
    ok = claim_wire.claim_fields_ok
    assert ok("a" * 64, "u" * 128, "r" * 128, "c" * 64, "d" * 128)
    assert ok("A", "=", "@", "", "")
    assert not ok("a" * 65, "u", "r", "", "")
    assert not ok("", "u", "r", "", "")
    assert not ok("-a", "u", "r", "", "")
    assert ok("a-._", "u", "r", "", "")
    assert not ok("a:", "u", "r", "", "")
    assert not ok("a", "u" * 129, "r", "", "")
    assert not ok("a", "", "r", "", "")
    assert not ok("a", "u", "", "", "")
    assert not ok("a", "u", "r", "c:", "")
    assert not ok("a", "u", "r", "", "d" * 129)
    assert not ok("a", "ü", "r", "", "")
    assert not ok("a", "u", "r\n", "", "")


@pytest.mark.parametrize("args", [(None, "u", "r", "", ""), ("a", b"u", "r", "", ""), ("a", "u", "r", "", 5)])
def test_claim_fields_ok_wants_str(claim_wire: ModuleType, args: tuple) -> None:
    with pytest.raises(TypeError):
        claim_wire.claim_fields_ok(*args)


# --------------------------------------------------------------------------- decoding


TEXT = st.one_of(st.just(""), ID_TEXT, st.text(max_size=30))
CLAIM = st.fixed_dictionaries({}, optional={name: TEXT for name in FIELDS})


@SETTINGS
@given(claims=st.lists(CLAIM, max_size=12))
@example(claims=[])
@example(claims=[{}])
def test_decode_equals_protobuf(claim_wire: ModuleType, claims: list[dict[str, str]]) -> None:
    raw = pb.ClaimBatchRequest(claims=[pb.ClaimRequest(**claim) for claim in claims]).SerializeToString()
    rows, first_bad = claim_wire.decode_claim_batch(raw)
    assert rows == [tuple(claim.get(name, "") for name in FIELDS) for claim in claims]
    assert first_bad == _first_bad(rows)


def test_decode_a_realistic_batch(claim_wire: ModuleType) -> None:
    claims = [pb.ClaimRequest(campaign_id="launch-1", user_id=f"u{i:05d}-67", request_id=f"req-{i:08d}",
                              channel_id="bench-app", client_ip="10.0.0.1") for i in range(100)]
    claims[57].user_id = "bad user"
    rows, first_bad = claim_wire.decode_claim_batch(pb.ClaimBatchRequest(claims=claims).SerializeToString())
    assert len(rows) == 100 and first_bad == 57
    assert rows[3] == ("launch-1", "u00003-67", "req-00000003", "bench-app", "", "10.0.0.1")
    assert rows[57][1] == "bad user"


@st.composite
def _tag(draw: st.DrawFn, field: int, wire_type: int) -> bytes:
    """A tag, sometimes in an overlong (padded, still at most 5 bytes) encoding."""
    tag = _varint(field << 3 | wire_type)
    pad = draw(st.sampled_from([0] * 6 + [1, 5 - len(tag), 6 - len(tag)]))
    return _pad(tag, pad) if pad > 0 else tag


def _pad(encoded: bytes, extra: int) -> bytes:
    """The same varint value in `extra` more bytes (continuation bits and zero groups)."""
    body = bytearray(encoded)
    body[-1] |= 0x80
    return bytes(body) + b"\x80" * (extra - 1) + b"\x00"


STRING_BYTES = st.one_of(
    TEXT.map(lambda s: s.encode()),
    st.binary(max_size=8),  # mostly invalid UTF-8
    st.sampled_from([b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xef\xbf\xbd"]),
)


@st.composite
def _unknown(draw: st.DrawFn, depth: int = 0, in_group: bool = False) -> bytes:
    """One field protobuf does not know (or knows under another wire type); in a group, field 0 too."""
    field = draw(st.sampled_from([1, 2, 3, 6, 7, 15, 16, 2047, 2**29 - 1] + [0] * in_group))
    kind = draw(st.sampled_from(["varint", "fixed64", "fixed32", "bytes", "group"] if depth < 3
                                else ["varint", "fixed32"]))
    if kind == "varint":
        value = draw(st.sampled_from([0, 1, 300, 2**63, 2**64 - 1]))
        return draw(_tag(field, 0)) + _varint(value)
    if kind == "fixed64":
        return draw(_tag(field, 1)) + draw(st.binary(min_size=8, max_size=8))
    if kind == "fixed32":
        return draw(_tag(field, 5)) + draw(st.binary(min_size=4, max_size=4))
    if kind == "bytes":
        data = draw(st.binary(max_size=12))
        return draw(_tag(field, 2)) + _varint(len(data)) + data
    inner = b"".join(draw(st.lists(_unknown(depth + 1, True), max_size=3)))
    return draw(_tag(field, 3)) + inner + draw(_tag(field, 4))


@st.composite
def _claim_body(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 3)):
            data = draw(STRING_BYTES)
            parts.append(draw(_tag(draw(st.integers(1, 6)), 2)) + _varint(len(data)) + data)
        else:
            parts.append(draw(_unknown(1)))
    return b"".join(parts)


@st.composite
def _batch_bytes(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 2)):
            body = draw(_claim_body())
            parts.append(draw(_tag(1, 2)) + _varint(len(body)) + body)
        else:
            parts.append(draw(_unknown()))
    return b"".join(parts)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(_batch_bytes()))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
        at = draw(st.integers(0, len(raw)))
        byte = draw(st.sampled_from([0x00, 0x01, 0x04, 0x07, 0x0A, 0x0B, 0x0C, 0x7F, 0x80, 0xFF])
                    | st.integers(0, 255))
        if action == "flip" and at < len(raw):
            raw[at] = byte
        elif action == "insert":
            raw.insert(at, byte)
        elif action == "delete" and at < len(raw):
            del raw[at]
        elif action == "truncate":
            del raw[at:]
        elif action == "append":
            raw += draw(st.binary(max_size=6))
    return bytes(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_batch_bytes())
def test_decode_wire_variants_like_protobuf(claim_wire: ModuleType, raw: bytes) -> None:
    """Unknown fields of every wire type, groups, overlong tags, repeated and non-UTF-8 strings."""
    _agrees_with_pb(claim_wire, raw)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_mutated())
def test_decode_mutated_bytes_like_protobuf(claim_wire: ModuleType, raw: bytes) -> None:
    _agrees_with_pb(claim_wire, raw)


@settings(max_examples=1500, deadline=None)
@given(raw=st.binary(max_size=40))
def test_decode_random_bytes_like_protobuf(claim_wire: ModuleType, raw: bytes) -> None:
    _agrees_with_pb(claim_wire, raw)


def test_decode_random_bytes_accepted_and_refused_both_seen(claim_wire: ModuleType) -> None:
    """The fuzzing above is not vacuous: mutations land on both sides of protobuf's verdict."""
    rng = random.Random(5)
    verdicts = set()
    for _ in range(3000):
        claims = [pb.ClaimRequest(campaign_id="c1", user_id=f"u{i}", request_id="r", client_ip="::1")
                  for i in range(rng.randint(1, 4))]
        raw = bytearray(pb.ClaimBatchRequest(claims=claims).SerializeToString())
        raw[rng.randrange(len(raw))] = rng.randrange(256)
        verdicts.add(_pb_rows(bytes(raw)) is None)
        _agrees_with_pb(claim_wire, bytes(raw))
    assert verdicts == {True, False}


def _groups(depth: int, field: int = 2) -> bytes:
    return _varint(field << 3 | 3) * depth + _varint(field << 3 | 4) * depth


def _in_claim(body: bytes) -> bytes:
    return b"\x0a" + _varint(len(body)) + body


CORNERS = {
    "empty": b"",
    "one empty claim": b"\x0a\x00",
    "tag of 2**32": b"\x80\x80\x80\x80\x10\x00",
    "tag of 6 bytes": b"\x88\x80\x80\x80\x80\x00\x00",
    "claims tag in 5 bytes": b"\x8a\x80\x80\x80\x00\x00",
    "highest field number": b"\xf8\xff\xff\xff\x0f\x00",
    "field 0 varint": b"\x00\x00",
    "field 0 group": b"\x03\x04",
    "wire type 6": b"\x0e\x00",
    "wire type 7": b"\x0f\x00",
    "varint of 10 bytes": b"\x10" + b"\xff" * 9 + b"\x7f",
    "varint of 11 bytes": b"\x10" + b"\xff" * 10 + b"\x01",
    "truncated varint": b"\x10\xff",
    "length 0 in 5 bytes": b"\x0a\x80\x80\x80\x80\x00",
    "length 0 in 6 bytes": b"\x0a\x80\x80\x80\x80\x80\x00",
    "length past the end": b"\x12\x05ab",
    "huge length": b"\x12\xff\xff\xff\xff\x07",
    "claims as varint": b"\x08\x05",
    "claims as fixed32": b"\x0d\x01\x02\x03\x04",
    "claims as fixed64": b"\x09" + b"\x00" * 8,
    "claims as group": b"\x0b\x0c",
    "truncated fixed32": b"\x15\x01\x02",
    "truncated fixed64": b"\x11\x01\x02\x03\x04\x05\x06\x07",
    "campaign as varint": _in_claim(b"\x08\x01"),
    "campaign twice": _in_claim(b"\x0a\x01a\x0a\x01b"),
    "campaign twice, first not UTF-8": _in_claim(b"\x0a\x01\xff\x0a\x01b"),
    "campaign not UTF-8": _in_claim(b"\x0a\x01\xff"),
    "surrogate": _in_claim(b"\x0a\x03\xed\xa0\x80"),
    "overlong UTF-8": _in_claim(b"\x0a\x02\xc0\x80"),
    "beyond U+10FFFF": _in_claim(b"\x0a\x04\xf4\x90\x80\x80"),
    "non-ASCII user": _in_claim(b"\x12\x02\xc3\xbc"),
    "client_ip not UTF-8": _in_claim(b"\x32\x01\x80"),
    "unknown field 7 not UTF-8": _in_claim(b"\x3a\x01\x80"),
    "unknown group": b"\x13\x08\x01\x14",
    "nested groups": b"\x13\x1b\x1c\x14",
    "group end mismatched": b"\x13\x1c",
    "group unterminated": b"\x13\x08\x01",
    "end group alone": b"\x14",
    "end group in a claim": _in_claim(b"\x14"),
    "group in a claim": _in_claim(b"\x3b\x3c"),
    "group crossing a claim's end": b"\x0a\x01\x3b\x3c",
    "string crossing a claim's end": b"\x0a\x02\x0a\x01ab",
    "varint crossing a claim's end": b"\x0a\x02\x10\xff\x01",
    "group end overlong": b"\x13\x94\x00",
    "bad length inside a group": b"\x13\x12\x05\x14",
    "wire type 6 inside a group": b"\x13\x16\x14",
    "field 0 in a group": b"\x13\x00\x00\x02\x01a\x03\x04\x05abcd\x01abcdefgh\x14",
    "field 0 ending a group": b"\x13\x00\x14",
    "field 0 in a group, overlong": b"\x0a\x0f\x8b\x00\x80\x80\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x0c",
    "tag of 2**32 in a group": b"\x13\x80\x80\x80\x80\x10\x00\x14",
    "tag of 6 bytes in a group": b"\x13\x88\x80\x80\x80\x80\x00\x00\x14",
    "end tag of 6 bytes": b"\x13\x94\x80\x80\x80\x80\x00",
    "length 0 in 6 bytes in a group": b"\x13\x0a\x80\x80\x80\x80\x80\x00\x14",
    "groups 100 deep": _groups(100),
    "groups 101 deep, field 0 inside": b"\x13" + b"\x03" * 100 + b"\x04" * 100 + b"\x14",
    "groups 101 deep": _groups(101),
    "groups 99 deep in a claim": _in_claim(_groups(99, 7)),
    "groups 100 deep in a claim": _in_claim(_groups(100, 7)),
    "groups 2000 deep": _groups(2000),
}


@pytest.mark.parametrize("raw", CORNERS.values(), ids=CORNERS.keys())
def test_decode_corners_like_protobuf(claim_wire: ModuleType, raw: bytes) -> None:
    _agrees_with_pb(claim_wire, raw)


def test_decode_reuses_nothing_wrongly(claim_wire: ModuleType) -> None:
    """Rows repeating a field (the compiled side reuses the str) and a row after a bad one."""
    same = pb.ClaimRequest(campaign_id="launch-1", user_id="u1", request_id="r1", channel_id="app")
    bad = pb.ClaimRequest(campaign_id="launch-1", user_id="u 1", request_id="r1", channel_id="app")
    other = pb.ClaimRequest(campaign_id="launch-2", user_id="u1", request_id="r1", channel_id="ap")
    raw = pb.ClaimBatchRequest(claims=[same, same, other, bad, bad, same]).SerializeToString()
    rows, first_bad = claim_wire.decode_claim_batch(raw)
    assert first_bad == 3
    assert rows == _pb_rows(raw)
    raw = pb.ClaimBatchRequest(claims=[same, other, same]).SerializeToString()
    assert claim_wire.decode_claim_batch(raw) == (_pb_rows(raw), -1)


@pytest.mark.parametrize("raw", [bytearray(b""), memoryview(b""), None, "\x0a\x00"])
def test_decode_wants_bytes(claim_wire: ModuleType, raw: object) -> None:
    with pytest.raises(TypeError):
        claim_wire.decode_claim_batch(raw)


def test_wire_error_says_why(claim_wire: ModuleType) -> None:
    for raw, reason in [(b"\x10\xff", "truncated varint"), (b"\x12\x05ab", "length past the end"),
                        (_in_claim(b"\x0a\x01\xff"), "UTF-8"), (b"\x13\x1c", "end group"),
                        (_groups(101), "deep")]:
        with pytest.raises(WireError, match=reason):
            claim_wire.decode_claim_batch(raw)


# --------------------------------------------------------------------------- encoding


def _int(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(-1, 300), st.sampled_from(bounds), st.integers(*bounds))


VOUCHER = st.tuples(TEXT, TEXT, TEXT, TEXT, _int(INT64), _int(INT64), _int(INT64), TEXT, TEXT)
# (outcome, retry_after_ms, detail, voucher) or with a fifth, not_eligible_reason
REPLY = (st.tuples(_int(INT32), _int(INT64), TEXT, st.none() | VOUCHER)
         | st.tuples(_int(INT32), _int(INT64), TEXT, st.none() | VOUCHER, _int(INT32)))


def _pb_reply(reply: tuple) -> pb.ClaimResponse:
    outcome, retry_after_ms, detail, voucher = reply[:4]
    reason = reply[4] if len(reply) == 5 else 0
    message = pb.ClaimResponse(outcome=outcome, retry_after_ms=retry_after_ms, detail=detail,
                               not_eligible_reason=reason)
    if voucher is not None:
        names = ("voucher_id", "campaign_id", "user_id", "request_id", "granted_at_ms", "value_cents",
                 "min_spend_cents", "category", "channel_id")
        message.voucher.CopyFrom(pb.Voucher(**dict(zip(names, voucher, strict=True))))
    return message


@SETTINGS
@given(replies=st.lists(REPLY, max_size=10))
@example(replies=[])
@example(replies=[(0, 0, "", None)])
@example(replies=[(0, 0, "", ("", "", "", "", 0, 0, 0, "", ""))])
@example(replies=[(-1, -(2**63), "é", ("v", "c", "u", "r", -1, 2**63 - 1, 1, "cat", "ch"))])
@example(replies=[(6, 0, "", None, 3), (6, 0, "x", None, -(2**31)), (1, 0, "", None, 0),
                  (6, 0, "", None, 2**31 - 1)])
def test_encode_equals_protobuf(claim_wire: ModuleType, replies: list[tuple]) -> None:
    expected = pb.ClaimBatchResponse(replies=[_pb_reply(r) for r in replies]).SerializeToString()
    assert claim_wire.encode_claim_batch_reply(replies) == expected
    assert claim_wire.encode_claim_batch_reply(tuple(replies)) == expected


@SETTINGS
@given(reply=REPLY)
@example(reply=(0, 0, "", None))
@example(reply=(0, 0, "", ("", "", "", "", 0, 0, 0, "", "")))
@example(reply=(6, 0, "", None, 1))
def test_encode_one_reply_equals_protobuf(claim_wire: ModuleType, reply: tuple) -> None:
    assert claim_wire.encode_claim_reply(reply) == _pb_reply(reply).SerializeToString()


@SETTINGS
@given(replies=st.lists(st.tuples(st.booleans(), REPLY), max_size=10))
def test_encode_splices_serialized_replies(claim_wire: ModuleType, replies: list[tuple[bool, tuple]]) -> None:
    given_ = [_pb_reply(r).SerializeToString() if as_bytes else r for as_bytes, r in replies]
    expected = pb.ClaimBatchResponse(replies=[_pb_reply(r) for _, r in replies]).SerializeToString()
    assert claim_wire.encode_claim_batch_reply(given_) == expected


@given(blobs=st.lists(st.binary(max_size=200), max_size=5))
def test_encode_splices_bytes_as_they_are(claim_wire: ModuleType, blobs: list[bytes]) -> None:
    """Spliced bytes are not looked into: each is one field 1, whatever it holds."""
    expected = b"".join(b"\x0a" + _varint(len(blob)) + blob for blob in blobs)
    assert claim_wire.encode_claim_batch_reply(blobs) == expected


def test_encode_a_realistic_batch(claim_wire: ModuleType) -> None:
    replies = [(1, 0, "", (f"launch-1-3-{i}", "launch-1", f"u{i:05d}-67", f"req-{i:08d}",
                           1_795_440_000_000 + i, 500, 2000, "food", "bench-app")) for i in range(100)]
    replies[7] = (7, 250, "rate limited", None)
    replies[9] = (pb.OUTCOME_NOT_ELIGIBLE, 0, "", None, pb.NOT_ELIGIBLE_REASON_REGION)
    raw = claim_wire.encode_claim_batch_reply(replies)
    parsed = pb.ClaimBatchResponse.FromString(raw)
    assert len(parsed.replies) == 100
    assert parsed.replies[7].retry_after_ms == 250 and not parsed.replies[7].HasField("voucher")
    assert parsed.replies[9].not_eligible_reason == pb.NOT_ELIGIBLE_REASON_REGION
    assert parsed.replies[9].outcome == pb.OUTCOME_NOT_ELIGIBLE and not parsed.replies[9].HasField("voucher")
    assert parsed.replies[7].not_eligible_reason == pb.NOT_ELIGIBLE_REASON_UNSPECIFIED
    assert parsed.replies[42].voucher.request_id == "req-00000042"
    assert raw == parsed.SerializeToString()


V = ("v", "c", "u", "r", 1, 2, 3, "cat", "ch")
BAD_REPLIES = [
    ([(1.0, 0, "", None)], TypeError),
    ([(1, 0, "", None, 5, 0)], ValueError),
    ([(6, 0, "", None, 1.0)], TypeError),
    ([(6, 0, "", None, None)], TypeError),
    ([(6, 0, "", None, 2**31)], ValueError),
    ([(6, 0, "", None, -(2**31) - 1)], ValueError),
    ([(1, 0, "")], ValueError),
    ([(2**31, 0, "", None)], ValueError),
    ([(-(2**31) - 1, 0, "", None)], ValueError),
    ([(1, 2**63, "", None)], ValueError),
    ([(1, 0, b"x", None)], TypeError),
    ([(1, 0, None, None)], TypeError),
    ([(1, 0, "", list(V))], TypeError),
    ([(1, 0, "", V[:8])], ValueError),
    ([(1, 0, "", V[:4] + ("1",) + V[5:])], TypeError),
    ([(1, 0, "", V[:5] + (-(2**63) - 1,) + V[6:])], ValueError),
    ([(1, 0, "", (b"v",) + V[1:])], TypeError),
    ([(1, 0, "", V[:8] + (None,))], TypeError),
    ([(1, 0, "\ud800", None)], UnicodeEncodeError),
    ([(1, 0, "", ("\udfff",) + V[1:])], UnicodeEncodeError),
    (["x"], TypeError),
    ([None], TypeError),
    ([bytearray(b"\x08\x01")], TypeError),
    ([[1, 0, "", None]], TypeError),
]


@pytest.mark.parametrize(("replies", "error"), BAD_REPLIES)
def test_encode_refuses_what_it_cannot_write(claim_wire: ModuleType, replies: list, error: type) -> None:
    with pytest.raises(error):
        claim_wire.encode_claim_batch_reply([(1, 0, "", V)] + replies)


# --------------------------------------------------------------------------- twins side by side


@pytest.mark.parametrize("seed", range(5))
def test_twins_agree_on_everything(seed: int) -> None:
    """Same rows, first_bad, bytes and exception types for the same random inputs."""
    py, c = _mod(CW_PY), _mod(CW_C)
    rng = random.Random(seed)
    alphabet = ID_CHARS + " é\x00"
    for _ in range(400):
        claims = [pb.ClaimRequest(**{name: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
                                     for name in FIELDS if rng.random() < 0.8})
                  for _ in range(rng.randint(0, 6))]
        raw = bytearray(pb.ClaimBatchRequest(claims=claims).SerializeToString())
        if raw and rng.random() < 0.5:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        assert outcome_of(py.decode_claim_batch, bytes(raw)) == outcome_of(c.decode_claim_batch, bytes(raw))
        ids = [claim.campaign_id for claim in claims[:5]] + [""] * (5 - min(len(claims), 5))
        assert py.claim_fields_ok(*ids) is c.claim_fields_ok(*ids)
    for replies, _ in BAD_REPLIES:
        expected = outcome_of(py.encode_claim_batch_reply, replies)
        assert outcome_of(c.encode_claim_batch_reply, replies) is expected


def test_encode_takes_any_iterable(claim_wire: ModuleType) -> None:
    """A generator works too (the compiled side makes a list of it first)."""
    replies = [(1, 0, "", V), (3, 0, "sold out", None)]
    encode = claim_wire.encode_claim_batch_reply
    assert encode(r for r in replies) == encode(replies)


def test_subclasses_of_bytes_and_str_are_taken(claim_wire: ModuleType) -> None:
    class Raw(bytes):
        pass

    class Text(str):
        pass

    assert claim_wire.decode_claim_batch(Raw(b"\x0a\x03\x0a\x01a")) == ([("a", "", "", "", "", "")], 0)
    assert claim_wire.claim_fields_ok(Text("a"), "u", "r", "", "")
    assert not claim_wire.claim_fields_ok(Text("a:"), "u", "r", "", "")
    assert claim_wire.encode_claim_batch_reply([(1, 0, Text("dé"), None), Raw(b"\x08\x03")]) == (
        pb.ClaimBatchResponse(replies=[pb.ClaimResponse(outcome=1, detail="dé"), pb.ClaimResponse(outcome=3)])
        .SerializeToString())
