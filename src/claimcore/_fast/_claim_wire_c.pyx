# cython: language_level=3
"""Compiled ClaimBatch wire codec; the twin ``_claim_wire_py`` holds the contract in full.

decode_claim_batch(raw) -> (rows, first_bad), encode_claim_batch_reply(replies) -> bytes,
claim_fields_ok(campaign_id, user_id, request_id, channel_id, device_id) -> bool: the
same results and the same exception types as the twin, WireError from _wire_errors.

Decoding is one pass over the bytes. Each claim's string fields are noted as (pointer,
length) while its tags are read, then turned into str once: ASCII straight into a new
1-byte str, anything else through the strict UTF-8 decoder. A field equal to the same
field of the row before (campaign, channel, an empty device ...) reuses that str. The
id rules are a 256-entry table of char-class bits built from the twin's ID_RULES.

Encoding is two passes, as in _claim_codec_c: the first checks every element, converts
its ints and sums the exact sizes; the second writes into one preallocated bytes object.
Only ints and str are read in between (no Python code runs), so the list cannot change.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from ._claim_wire_py import ID_RULES
from ._wire_errors import WireError

__all__ = ["WireError", "claim_fields_ok", "decode_claim_batch", "encode_claim_batch_reply"]


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object s)
    bint PyUnicode_IS_ASCII(object s)
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    bint PyLong_Check(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    bint PyBytes_Check(object o)
    bint PyTuple_Check(object o)
    bint PyUnicode_Check(object o)


cdef enum:
    MAX_DEPTH = 100  # upb's nesting limit: submessages and groups, the claim itself counting one
    N_FIELDS = 6     # ClaimRequest's strings, field numbers 1 .. 6
    N_CHECKED = 5    # all but client_ip

# The id rules, one table lookup per byte: bit (1 << k) of _CLASS[c] says byte c is in
# char class k; each checked field has a class for its first byte and one for the rest.
cdef uint8_t _CLASS[256]
cdef uint8_t _FIRST[N_CHECKED]
cdef uint8_t _OTHER[N_CHECKED]
cdef Py_ssize_t _MIN_LEN[N_CHECKED]
cdef Py_ssize_t _MAX_LEN[N_CHECKED]


def _build_tables():
    classes = []  # distinct char sets, each one bit
    for i in range(256):
        _CLASS[i] = 0
    for k, (first, other, lo, hi) in enumerate(ID_RULES):
        bits = []
        for chars in (first, other):
            if chars not in classes:
                classes.append(chars)
                for ch in chars:
                    _CLASS[ord(ch)] |= 1 << (len(classes) - 1)
            bits.append(1 << classes.index(chars))
        _FIRST[k], _OTHER[k] = bits
        _MIN_LEN[k], _MAX_LEN[k] = lo, hi
    assert len(ID_RULES) == N_CHECKED and len(classes) <= 8


_build_tables()


cdef inline bint _id_ok(const uint8_t* p, Py_ssize_t n, int k) noexcept:
    """Bytes p[0:n] follow checked field k's rule (a non-ASCII byte is in no class)."""
    if n < _MIN_LEN[k] or n > _MAX_LEN[k]:
        return False
    if n == 0:
        return True
    if not (_CLASS[p[0]] & _FIRST[k]):
        return False
    cdef uint8_t acc = 0xFF
    cdef Py_ssize_t i
    for i in range(1, n):
        acc &= _CLASS[p[i]]
    return (acc & _OTHER[k]) != 0


cdef inline bint _is_ascii(const uint8_t* p, Py_ssize_t n) noexcept:
    cdef uint8_t high = 0
    cdef Py_ssize_t i
    for i in range(n):
        high |= p[i]
    return high < 0x80


cdef inline const char* _utf8(object s, Py_ssize_t* n) except NULL:
    """A str's UTF-8 bytes: an ASCII str's own, else the copy CPython makes once and keeps."""
    if PyUnicode_IS_COMPACT_ASCII(s):
        n[0] = PyUnicode_GET_LENGTH(s)
        return <const char*>PyUnicode_DATA(s)
    return PyUnicode_AsUTF8AndSize(s, n)


cdef int _fail(str reason) except -1:
    raise WireError(reason)


# --------------------------------------------------------------------------- decoding


cdef const uint8_t* _varint(const uint8_t* p, const uint8_t* end, int max_bytes, uint64_t* out) except NULL:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef int i
    cdef uint8_t byte
    for i in range(max_bytes):
        if p >= end:
            _fail("truncated varint")
        byte = p[0]
        p += 1
        value |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = value
            return p
        shift += 7
    _fail("varint too long")
    return NULL


cdef inline const uint8_t* _tag(const uint8_t* p, const uint8_t* end, uint32_t* out) except NULL:
    if p < end and p[0] < 0x80 and p[0] >= 8:  # one byte, field number not 0: nearly always
        out[0] = p[0]
        return p + 1
    return _long_tag(p, end, out, False)


cdef const uint8_t* _long_tag(const uint8_t* p, const uint8_t* end, uint32_t* out, bint in_group) except NULL:
    cdef uint64_t tag
    p = _varint(p, end, 5, &tag)
    if tag >> 32:
        _fail("tag over 32 bits")
    if tag >> 3 == 0 and not in_group:  # upb skips a group's fields without this check
        _fail("field number 0")
    out[0] = <uint32_t>tag
    return p


cdef inline const uint8_t* _length(const uint8_t* p, const uint8_t* end, Py_ssize_t* out) except NULL:
    cdef uint64_t size
    if p < end and p[0] < 0x80:
        size = p[0]
        p += 1
    else:
        p = _varint(p, end, 5, &size)
    if size > <uint64_t>(end - p):
        _fail("length past the end")
    out[0] = <Py_ssize_t>size
    return p


cdef const uint8_t* _skip(const uint8_t* p, const uint8_t* end, uint32_t tag, int depth) except NULL:
    """The position after the value of an unknown field whose tag was just read."""
    cdef uint64_t ignored
    cdef Py_ssize_t size
    cdef uint32_t inner
    cdef uint32_t wire_type = tag & 7
    if wire_type == 0:
        return _varint(p, end, 10, &ignored)
    if wire_type == 2:
        p = _length(p, end, &size)
        return p + size
    if wire_type == 1 or wire_type == 5:
        size = 8 if wire_type == 1 else 4
        if end - p < size:
            _fail("truncated fixed field")
        return p + size
    if wire_type == 3:
        depth += 1
        if depth > MAX_DEPTH:
            _fail("nested too deep")
        while True:
            if p >= end:
                _fail("unterminated group")
            p = _long_tag(p, end, &inner, True)
            if inner & 7 == 4:
                if inner >> 3 != tag >> 3:
                    _fail("mismatched end group")
                return p
            p = _skip(p, end, inner, depth)
    _fail("end group without start" if wire_type == 4 else f"wire type {wire_type}")
    return NULL


cdef str _EMPTY = ""


cdef object _text(const uint8_t* p, Py_ssize_t n, bint ascii):
    cdef object s
    if ascii:
        s = PyUnicode_New(n, 127)
        memcpy(PyUnicode_DATA(s), p, n)
        return s
    try:
        return PyUnicode_DecodeUTF8(<char*>p, n, NULL)
    except UnicodeDecodeError:
        raise WireError("invalid UTF-8 in a string") from None


cdef int _check_utf8(const uint8_t* p, Py_ssize_t n) except -1:
    """A string occurrence a later one replaces: protobuf still refuses it if not UTF-8."""
    if not _is_ascii(p, n):
        _text(p, n, False)
    return 0


def decode_claim_batch(raw):
    if not PyBytes_Check(raw):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef const uint8_t* end = p + PyBytes_GET_SIZE(raw)
    cdef const uint8_t* claim_end
    cdef const uint8_t* q
    cdef uint32_t tag, number
    cdef Py_ssize_t size, n, index = 0, first_bad = -1
    cdef int k
    cdef bint seen
    # This claim's fields, and the previous row's (borrowed: the previous row holds them).
    cdef const uint8_t* ptr[N_FIELDS]
    cdef Py_ssize_t length[N_FIELDS]
    cdef const uint8_t* prev_ptr[N_FIELDS]
    cdef Py_ssize_t prev_length[N_FIELDS]
    cdef tuple row
    cdef tuple prev_row = None
    cdef list rows = []
    cdef object value
    for k in range(N_FIELDS):
        prev_length[k] = -1
        prev_ptr[k] = NULL
    while p < end:
        p = _tag(p, end, &tag)
        if tag != 0x0A:  # anything but field 1 (claims), length-delimited
            p = _skip(p, end, tag, 0)
            continue
        p = _length(p, end, &size)
        claim_end = p + size
        for k in range(N_FIELDS):
            length[k] = -1  # absent
            ptr[k] = NULL
        while p < claim_end:
            p = _tag(p, claim_end, &tag)
            number = tag >> 3
            if tag & 7 == 2 and number <= N_FIELDS:
                k = number - 1
                if length[k] >= 0:
                    _check_utf8(ptr[k], length[k])
                p = _length(p, claim_end, &length[k])
                ptr[k] = p
                p += length[k]
            else:
                p = _skip(p, claim_end, tag, 1)
        seen = first_bad < 0
        row = PyTuple_New(N_FIELDS)
        for k in range(N_FIELDS):
            q, n = ptr[k], length[k]
            if n <= 0:
                value = _EMPTY
                n = 0
            elif n == prev_length[k] and memcmp(q, prev_ptr[k], n) == 0:
                value = <object>PyTuple_GET_ITEM(prev_row, k)  # passed its check, if first_bad is still -1
                Py_INCREF(value)
                PyTuple_SET_ITEM(row, k, value)
                continue
            else:
                value = _text(q, n, _is_ascii(q, n))
            if seen and k < N_CHECKED and not _id_ok(q, n, k):
                first_bad = index
                seen = False
            prev_ptr[k] = q
            prev_length[k] = n
            Py_INCREF(value)
            PyTuple_SET_ITEM(row, k, value)
        prev_row = row
        rows.append(row)
        index += 1
    return rows, first_bad


def claim_fields_ok(campaign_id, user_id, request_id, channel_id, device_id):
    cdef tuple values = (campaign_id, user_id, request_id, channel_id, device_id)
    cdef Py_ssize_t n
    cdef const char* data
    cdef int k
    for k in range(N_CHECKED):
        if not PyUnicode_Check(values[k]):
            raise TypeError(f"ids are str, not {type(values[k]).__name__}")
    for k in range(N_CHECKED):
        if not PyUnicode_IS_ASCII(values[k]):
            return False
        data = _utf8(values[k], &n)
        if not _id_ok(<const uint8_t*>data, n, k):
            return False
    return True


# --------------------------------------------------------------------------- encoding


cdef struct _Sizes:
    Py_ssize_t body       # the ClaimResponse's bytes (or the spliced bytes' length)
    Py_ssize_t voucher    # the Voucher's bytes, -1 when absent
    int64_t outcome
    int64_t retry_after_ms
    int64_t reason        # not_eligible_reason: 0 for a 4-tuple
    int64_t ints[3]       # granted_at_ms, value_cents, min_spend_cents


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline uint8_t* _put_varint(uint8_t* p, uint64_t v) noexcept:
    while v >= 0x80:
        p[0] = <uint8_t>((v & 0x7F) | 0x80)
        v >>= 7
        p += 1
    p[0] = <uint8_t>v
    return p + 1


cdef inline Py_ssize_t _str_size(object s) except -1:
    cdef Py_ssize_t n
    if not PyUnicode_Check(s):
        raise TypeError(f"a string field holds {type(s).__name__}")
    _utf8(s, &n)
    return 0 if n == 0 else 1 + _varint_size(n) + n


cdef inline Py_ssize_t _int_size(int64_t v) noexcept:
    return 0 if v == 0 else 1 + _varint_size(<uint64_t>v)


cdef int64_t _as_int(object value, bint int32) except? -1:
    cdef int overflow = 0
    cdef long long v
    if not PyLong_Check(value):
        raise TypeError(f"an int field holds {type(value).__name__}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or (int32 and (v < -2147483648 or v > 2147483647)):
        raise ValueError(f"{value} is out of range")
    return v


cdef inline uint8_t* _put_str(uint8_t* p, uint8_t key, object s) noexcept:
    cdef Py_ssize_t n
    cdef const char* data = _utf8(s, &n)  # cannot fail: the first pass made the UTF-8 of each
    if n:
        p[0] = key
        p = _put_varint(p + 1, <uint64_t>n)
        memcpy(p, data, n)
        p += n
    return p


cdef inline uint8_t* _put_int(uint8_t* p, uint8_t key, int64_t v) noexcept:
    if v:
        p[0] = key
        p = _put_varint(p + 1, <uint64_t>v)
    return p


cdef Py_ssize_t _measure(object reply, _Sizes* s) except -1:
    cdef tuple t
    cdef tuple v
    cdef Py_ssize_t body
    if PyBytes_Check(reply):
        s.body = PyBytes_GET_SIZE(reply)
        s.voucher = -1
        return s.body
    if not PyTuple_Check(reply):
        raise TypeError(f"a reply is bytes or a tuple, not {type(reply).__name__}")
    t = <tuple>reply
    if len(t) != 4 and len(t) != 5:
        raise ValueError(f"a reply tuple has 4 or 5 fields, not {len(t)}")
    s.outcome = _as_int(t[0], True)
    body = _int_size(s.outcome)
    s.voucher = -1
    voucher = t[3]
    if voucher is not None:
        if not PyTuple_Check(voucher):
            raise TypeError(f"a voucher is a tuple or None, not {type(voucher).__name__}")
        v = <tuple>voucher
        if len(v) != 9:
            raise ValueError(f"a voucher tuple has 9 fields, not {len(v)}")
        s.voucher = _str_size(v[0]) + _str_size(v[1]) + _str_size(v[2]) + _str_size(v[3])
        s.ints[0] = _as_int(v[4], False)
        s.ints[1] = _as_int(v[5], False)
        s.ints[2] = _as_int(v[6], False)
        s.voucher += _int_size(s.ints[0]) + _int_size(s.ints[1]) + _int_size(s.ints[2])
        s.voucher += _str_size(v[7]) + _str_size(v[8])
        body += 1 + _varint_size(s.voucher) + s.voucher
    s.retry_after_ms = _as_int(t[1], False)
    body += _int_size(s.retry_after_ms)
    body += _str_size(t[2])
    s.reason = _as_int(t[4], True) if len(t) == 5 else 0
    body += _int_size(s.reason)
    s.body = body
    return body


cdef uint8_t* _write(uint8_t* p, object reply, _Sizes* s) noexcept:
    p[0] = 0x0A
    p = _put_varint(p + 1, <uint64_t>s.body)
    if PyBytes_Check(reply):
        memcpy(p, PyBytes_AS_STRING(reply), s.body)
        return p + s.body
    return _write_reply(p, <tuple>reply, s)


cdef uint8_t* _write_reply(uint8_t* p, tuple t, _Sizes* s) noexcept:
    """One ClaimResponse's fields (the body of a reply tuple that _measure sized)."""
    cdef tuple v
    p = _put_int(p, 0x08, s.outcome)
    if s.voucher >= 0:
        v = <tuple>t[3]
        p[0] = 0x12
        p = _put_varint(p + 1, <uint64_t>s.voucher)
        p = _put_str(p, 0x0A, v[0])
        p = _put_str(p, 0x12, v[1])
        p = _put_str(p, 0x1A, v[2])
        p = _put_str(p, 0x22, v[3])
        p = _put_int(p, 0x28, s.ints[0])
        p = _put_int(p, 0x30, s.ints[1])
        p = _put_int(p, 0x38, s.ints[2])
        p = _put_str(p, 0x42, v[7])
        p = _put_str(p, 0x4A, v[8])
    p = _put_int(p, 0x18, s.retry_after_ms)
    p = _put_str(p, 0x22, t[2])
    return _put_int(p, 0x28, s.reason)


def encode_claim_batch_reply(replies):
    cdef list items = replies if type(replies) is list else list(replies)
    cdef Py_ssize_t count = len(items)
    cdef Py_ssize_t i, total = 0, body
    cdef _Sizes* sizes = <_Sizes*>PyMem_Malloc(max(count, 1) * sizeof(_Sizes))
    cdef uint8_t* p
    cdef uint8_t* start
    if sizes == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            body = _measure(items[i], &sizes[i])
            total += 1 + _varint_size(<uint64_t>body) + body
        out = PyBytes_FromStringAndSize(NULL, total)
        start = p = <uint8_t*>PyBytes_AS_STRING(out)
        for i in range(count):
            p = _write(p, items[i], &sizes[i])
        if p - start != total:
            raise AssertionError("encode_claim_batch_reply: sizes and bytes written differ")
        return out
    finally:
        PyMem_Free(sizes)


def encode_claim_reply(reply):
    cdef _Sizes size
    if not PyTuple_Check(reply):
        raise TypeError(f"a reply is a tuple, not {type(reply).__name__}")
    cdef Py_ssize_t body = _measure(reply, &size)
    out = PyBytes_FromStringAndSize(NULL, body)
    cdef uint8_t* start = <uint8_t*>PyBytes_AS_STRING(out)
    if _write_reply(start, <tuple>reply, &size) - start != body:
        raise AssertionError("encode_claim_reply: size and bytes written differ")
    return out
