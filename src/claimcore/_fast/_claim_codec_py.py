"""Pure-Python twin of ``_claim_codec_c``: the wire format of claim.lua calls.

unpack_claim_reply(reply, result_type) -> (stock_left, results): one
result_type(code, voucher_id, granted_at_ms) per (code, voucher, at) triple of
the script's reply (see lua/claim.lua); result_type is a tuple subclass of
three fields (claimcore.store.replies.ItemResult). For NOT_ELIGIBLE (code 8) the
script writes why in the `at` place (a NotEligibleReason number): it comes
through as any `at`, an int.

pack_claims(sha, calls, now_ms) -> bytes: one EVALSHA command per call,
concatenated, exactly as redis-py's Connection.pack_command would encode
each of them. A call is (state_key, users_key, reqs_key, log_key, elig_key,
voucher_prefix, epoch, trusted_until, items), an item is (user_id, request_id, channel_id); the epoch is a
str (claim.lua's ARGV[3]). All strings are ASCII
(claimcore.validation guarantees it for ids; keys are built from ids), so
len(s) is also their length in bytes; anything else raises ValueError.
"""

from __future__ import annotations

from collections.abc import Sequence

Call = tuple[str, str, str, str, str, str, str, str, Sequence[Sequence[str]]]


def _bulk(parts: list[bytes], value: str) -> None:
    if not value.isascii():
        raise ValueError(f"not ASCII: {value[:40]!r}")
    parts.append(b"$%d\r\n%s\r\n" % (len(value), value.encode()))


def pack_claims(sha: str, calls: Sequence[Call], now_ms: int) -> bytes:
    now = str(int(now_ms))
    parts: list[bytes] = []
    for state, users, reqs, log, elig, prefix, epoch, trusted_until, items in calls:
        parts.append(b"*%d\r\n$7\r\nEVALSHA\r\n" % (12 + 3 * len(items)))
        _bulk(parts, sha)
        parts.append(b"$1\r\n5\r\n")
        for value in (state, users, reqs, log, elig, now, prefix, epoch, trusted_until):
            _bulk(parts, value)
        for user, request, channel in items:
            _bulk(parts, user)
            _bulk(parts, request)
            _bulk(parts, channel)
    return b"".join(parts)


def unpack_claim_reply(reply: Sequence[object], result_type: type) -> tuple[int, list]:
    new = tuple.__new__
    return int(reply[0]), [  # type: ignore[call-overload]
        new(result_type, (int(reply[i]), reply[i + 1], int(reply[i + 2])))  # type: ignore[call-overload]
        for i in range(1, len(reply), 3)
    ]
