# cython: language_level=3
"""Compiled wire format of claim.lua calls; the twin is ``_claim_codec_py``.

Same contract as the twin: pack_claims(sha, calls, now_ms) -> bytes, identical
output, ValueError on non-ASCII strings; unpack_claim_reply(reply, result_type)
-> (stock_left, results). Two passes over the calls: the first
sums the exact size, the second writes into one preallocated bytes object, so
no intermediate objects are made per argument.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object s)


cdef inline Py_ssize_t _digits(Py_ssize_t n) noexcept:
    cdef Py_ssize_t d = 1
    while n >= 10:
        n //= 10
        d += 1
    return d


cdef inline Py_ssize_t _bulk_size(str s) except -1:
    if not PyUnicode_IS_ASCII(s):
        raise ValueError(f"not ASCII: {s[:40]!r}")
    cdef Py_ssize_t n = len(s)
    return 1 + _digits(n) + 2 + n + 2


cdef inline char* _write_int(char* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t d = _digits(n)
    cdef Py_ssize_t i = d
    while i > 0:
        i -= 1
        p[i] = <char>(48 + n % 10)
        n //= 10
    return p + d


cdef inline char* _write_bulk(char* p, str s) except NULL:
    cdef Py_ssize_t n
    cdef const char* data = PyUnicode_AsUTF8AndSize(s, &n)
    p[0] = b'$'
    p = _write_int(p + 1, n)
    p[0] = b'\r'
    p[1] = b'\n'
    memcpy(p + 2, data, n)
    p += 2 + n
    p[0] = b'\r'
    p[1] = b'\n'
    return p + 2


def pack_claims(str sha, calls, now_ms):
    cdef str now = str(int(now_ms))
    cdef Py_ssize_t size = 0
    cdef Py_ssize_t n_items
    for call in calls:
        state, users, reqs, log, elig, prefix, epoch, trusted_until, items = call
        n_items = len(items)
        size += 1 + _digits(12 + 3 * n_items) + 2 + 13  # *N\r\n $7\r\nEVALSHA\r\n
        size += _bulk_size(sha) + 7                     # sha, $1\r\n5\r\n
        size += _bulk_size(state) + _bulk_size(users) + _bulk_size(reqs) + _bulk_size(log)
        size += _bulk_size(elig)
        size += _bulk_size(now) + _bulk_size(prefix) + _bulk_size(epoch) + _bulk_size(trusted_until)
        for item in items:
            user, request, channel = item
            size += _bulk_size(user) + _bulk_size(request) + _bulk_size(channel)
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    for call in calls:
        state, users, reqs, log, elig, prefix, epoch, trusted_until, items = call
        p[0] = b'*'
        p = _write_int(p + 1, 12 + 3 * len(items))
        memcpy(p, b"\r\n$7\r\nEVALSHA\r\n", 15)
        p = _write_bulk(p + 15, sha)
        memcpy(p, b"$1\r\n5\r\n", 7)
        p += 7
        p = _write_bulk(p, state)
        p = _write_bulk(p, users)
        p = _write_bulk(p, reqs)
        p = _write_bulk(p, log)
        p = _write_bulk(p, elig)
        p = _write_bulk(p, now)
        p = _write_bulk(p, prefix)
        p = _write_bulk(p, epoch)
        p = _write_bulk(p, trusted_until)
        for item in items:
            user, request, channel = item
            p = _write_bulk(p, user)
            p = _write_bulk(p, request)
            p = _write_bulk(p, channel)
    return out


cdef inline object _as_int(object value):
    """int(value) for an int, or a str of at most 18 ASCII digits parsed in place."""
    if type(value) is int:
        return value
    cdef Py_ssize_t n, i
    cdef const char* digits
    cdef long long x = 0
    if type(value) is str:
        digits = PyUnicode_AsUTF8AndSize(value, &n)
        if 0 < n <= 18:
            for i in range(n):
                if digits[i] < 48 or digits[i] > 57:
                    return int(value)
                x = x * 10 + (digits[i] - 48)
            return x
    return int(value)


cdef extern from "Python.h":
    object PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t n)  # a new reference, owned here
    void PyTuple_SET_ITEM(object p, Py_ssize_t pos, object o)  # steals a reference to o
    list PyList_New(Py_ssize_t n)  # n empty places, each filled once by PyList_SET_ITEM
    void PyList_SET_ITEM(object p, Py_ssize_t pos, object o)  # steals a reference to o


cdef inline object _result(PyTypeObject* result_type, object code, object voucher, object at):
    """tuple.__new__(result_type, (code, voucher, at)), as CPython's tuple_subtype_new makes it (the
    type's tp_alloc, then the items), without building the argument tuple or calling into Python."""
    cdef object item = PyType_GenericAlloc(result_type, 3)
    Py_INCREF(code)
    PyTuple_SET_ITEM(item, 0, code)
    Py_INCREF(voucher)
    PyTuple_SET_ITEM(item, 1, voucher)
    Py_INCREF(at)
    PyTuple_SET_ITEM(item, 2, at)
    return item


def unpack_claim_reply(list reply, type result_type):
    # Made as tuple.__new__ makes a tuple subclass: only for one laid out as a bare tuple (a NamedTuple).
    if not (issubclass(result_type, tuple) and result_type.__basicsize__ == tuple.__basicsize__
            and result_type.__dictoffset__ == 0):
        raise TypeError(f"{result_type.__name__} is not laid out as a bare tuple")
    cdef Py_ssize_t i, j
    cdef Py_ssize_t n = len(reply)
    if n % 3 != 1:
        raise ValueError(f"a claim.lua reply holds 1 + 3n values, not {n}")
    cdef list out = PyList_New((n - 1) // 3)
    cdef PyTypeObject* t = <PyTypeObject*>result_type
    for j in range((n - 1) // 3):
        i = 1 + 3 * j
        item = _result(t, _as_int(reply[i]), reply[i + 1], _as_int(reply[i + 2]))
        Py_INCREF(item)
        PyList_SET_ITEM(out, j, item)
    return _as_int(reply[0]), out
