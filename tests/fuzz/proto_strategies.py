"""Hypothesis strategies for protobuf messages, built by walking a message DESCRIPTOR.

hypothesis-protobuf cannot be installed here (docs/research/reliability.md section 4), so this is
the project's own. It knows nothing of claimcore: give it any message descriptor.

- `messages(descriptor)`: whole messages, every field either missing or hostile: empty, huge (up to
  10,000 characters), control characters, NUL, non-ASCII, the characters that would break a Redis
  key or a stored record ('{', '}', '|', ',', ':', spaces), negative numbers, zero, the type's
  minimum and maximum, NaN and infinities for floats, unknown enum numbers, repeated fields just at
  and just above the limits given in `limits`, and nested messages recursively.
- `one_hostile_field(base)`: a valid base message with exactly one field (anywhere in it, also
  inside nested or repeated messages) replaced by a hostile value or cleared. Whole-hostile
  messages are mostly stopped by the first field check; these reach the deep ones.

Lone surrogates cannot travel in a protobuf string (the Python runtime refuses to encode them), so
invalid UTF-8 is tested at the wire level instead (test_fuzz_wire.py, `invalid_utf8_in_string`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}

#: Numbers at the edges of the limits a service is likely to have (counts, money, times, ...).
EDGE_INTS = [
    0, 1, -1, 2, 63, 64, 65, 99, 100, 101, 127, 128, 129, 199, 200, 201, 999, 1000, 1001, 1023,
    1024, 1025, 9_999, 10_000, 10_001, 100_000_000, 100_000_001, 10_000_000, 10_000_001,
    10**12, 10**12 + 1, 2**31 - 1, 2**31, 2**32, 2**53, 2**53 + 1, 2**62, -(2**31), -(2**53),
]

#: Characters that break ids, keys ('{', '}') or stored records ('|', ','), and friends.
BAD_CHARS = ["{", "}", "|", ",", ":", " ", "\t", "\n", "\r", "\x00", "\x01", "\x1b", "\x7f", "\\", "/",
             "\"", "'", "%", "*", "?", "#", "é", "ü", "用", "🎟", "\u202e", "\ufeff", "\u2028", "\u00a0"]
ID_ALPHABET = "abcXYZ019._-:@+="

SPECIAL_STRINGS = [
    "", " ", ".", "-", "_", "..", "a b", "a{b}", "{a}", "a|b", "a,b", "a:b", "a\x00b", "\x00", "\n",
    "\r\n", "\x1b[31m", "é", "用户", "🎟", "\u202e", "\ufeff", "null", "None", "-1", "0", "%s%n",
    "*", "cc:{x}:campaign", "a" * 63, "a" * 64, "a" * 65, "a" * 100, "a" * 101, "a" * 127, "a" * 128,
    "a" * 129, "a" * 200, "a" * 201, "x" * 10_000, "{" * 10_000, "\x00" * 1000, "用" * 3000,
    "1.2.3.4", "::1", "999.1.1.1", "1.2.3", "v1.", "v1.e30", "v1.W10",
]


@st.composite
def _near_valid_id(draw: st.DrawFn) -> str:
    """A plausible id with one bad character somewhere: gets past length checks, not alphabet ones."""
    body = draw(st.text(alphabet=ID_ALPHABET, min_size=1, max_size=40))
    at = draw(st.integers(0, len(body)))
    return body[:at] + draw(st.sampled_from(BAD_CHARS)) + body[at:]


_HOSTILE_STRINGS = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    _near_valid_id(),
    st.text(alphabet=ID_ALPHABET, max_size=140),                    # valid-looking, any length
    st.text(st.characters(codec="utf-8"), max_size=60),             # any character, no surrogates
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "{", "|", "é", "\x00"]),
              st.integers(0, 10_000)),                              # huge
)


def hostile_strings() -> st.SearchStrategy[str]:
    return _HOSTILE_STRINGS


def hostile_ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({x for x in [*EDGE_INTS, low, high, low + 1, high - 1] if low <= x <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def hostile_floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324]),
                     st.floats(allow_nan=True, allow_infinity=True, width=32))


def hostile_enums(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    unknown = [-1, max(known) + 1, 99, 2**31 - 1, -(2**31)]
    if field.enum_type.is_closed:  # proto2 closed enums refuse unknown numbers on the Python side
        return st.sampled_from(known)
    return st.sampled_from(known + unknown)


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """A hostile value for one (non-repeated) element of a scalar field."""
    t = field.type
    if t == F.TYPE_STRING:
        return hostile_strings()
    if t == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\xff\xfe", b"\x00" * 10_000]))
    if t in INT_RANGES:
        return hostile_ints(*INT_RANGES[t])
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return hostile_floats()
    if t == F.TYPE_ENUM:
        return hostile_enums(field)
    raise TypeError(f"no strategy for {field.full_name} (type {t})")


def _cheap_many(field: FieldDescriptor, n: int) -> list[Any]:
    """n distinct, individually harmless elements: an oversized list that is cheap to make."""
    if field.type == F.TYPE_MESSAGE:
        cls = GetMessageClass(field.message_type)
        out = []
        for i in range(n):
            m = cls()
            for f in field.message_type.fields:  # give each a distinct valid-looking first string
                if f.type == F.TYPE_STRING and not f.is_repeated:
                    setattr(m, f.name, f"x{i}")
                    break
            out.append(m)
        return out
    if field.type == F.TYPE_STRING:
        return [f"x{i}" for i in range(n)]
    if field.type == F.TYPE_BYTES:
        return [b"x%d" % i for i in range(n)]
    if field.type == F.TYPE_BOOL:
        return [bool(i % 2) for i in range(n)]
    if field.type == F.TYPE_ENUM:
        return [field.enum_type.values[0].number] * n
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return [float(i) for i in range(n)]
    return [i + 1 for i in range(n)]


_CACHE: dict[tuple[str, tuple[tuple[str, int], ...], int], st.SearchStrategy[Any]] = {}


def field_values(field: FieldDescriptor, limits: Mapping[str, int], depth: int) -> st.SearchStrategy[Any]:
    """A hostile value for a whole field: a list for repeated fields, a message for message fields."""
    key = ("field:" + field.full_name, tuple(sorted(limits.items())), depth)
    if key not in _CACHE:
        _CACHE[key] = _field_values(field, limits, depth)
    return _CACHE[key]


def _field_values(field: FieldDescriptor, limits: Mapping[str, int], depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        element: st.SearchStrategy[Any] = messages(field.message_type, limits, depth - 1)
    else:
        element = scalar(field)
    if not field.is_repeated:
        return element
    limit = limits.get(field.full_name, limits.get(field.name, 100))
    sizes = sorted({limit, limit + 1, 2 * limit + 1})
    return st.one_of(
        st.lists(element, max_size=4),
        st.sampled_from(sizes).map(lambda n: _cheap_many(field, n)),       # at and above the limit
        st.tuples(element, st.sampled_from(sizes)).map(_repeated),  # one element, repeated
    )


REPEATED_BYTES = 2_000_000  # past the node's 1 MiB limit already; more only costs the test's memory


def _repeated(pair: tuple[Any, int]) -> list[Any]:
    """One (possibly hostile) element n times, at most REPEATED_BYTES in all. Without the cap a nested
    message repeated 20,001 times, each holding lists of 10,000-character strings, once took the test
    process past 24 GB: protobuf copies every element. Oversized counts stay covered by _cheap_many."""
    element, n = pair
    size = (element.ByteSize() if isinstance(element, Message)
            else len(element) if isinstance(element, (str, bytes)) else 8)
    return [element] * min(n, max(1, REPEATED_BYTES // max(1, size)))


def set_field(msg: Message, field: FieldDescriptor, value: Any) -> None:
    """Set (or, for value None, clear) one field of msg."""
    if value is None:
        msg.ClearField(field.name)
        return
    if field.is_repeated:
        msg.ClearField(field.name)
        target = getattr(msg, field.name)
        if field.type == F.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def messages(descriptor: Descriptor, limits: Mapping[str, int] | None = None,
             depth: int = 3) -> st.SearchStrategy[Message]:
    """Whole messages of `descriptor`: each field missing or hostile, nested ones to `depth`.

    `limits` maps a repeated field's full name (or bare name) to its documented maximum count, so
    lists just at and just above it are tried; 100 when not given.
    """
    limits = limits or {}
    key = ("message:" + descriptor.full_name, tuple(sorted(limits.items())), depth)
    if key not in _CACHE:
        _CACHE[key] = _messages(descriptor, limits, depth)
    return _CACHE[key]


def _messages(descriptor: Descriptor, limits: Mapping[str, int], depth: int) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    if depth <= 0:
        return st.just(cls())
    fields = list(descriptor.fields)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for field in fields:
            if draw(st.booleans()):  # missing: the default value, absent on the wire
                continue
            set_field(msg, field, draw(field_values(field, limits, depth)))
        return msg

    return build()


def field_paths(msg: Message, depth: int = 3) -> list[tuple[tuple[str, int | None], ...]]:
    """Every field of msg as a path: (field name, index into a repeated message field or None)...

    Nested messages are entered where they are present, so a path always leads to a real parent.
    """
    paths: list[tuple[tuple[str, int | None], ...]] = []
    for field in msg.DESCRIPTOR.fields:
        paths.append(((field.name, None),))
        if depth <= 1 or field.type != F.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            for i, item in enumerate(getattr(msg, field.name)[:3]):
                paths += [((field.name, i), *sub) for sub in field_paths(item, depth - 1)]
        elif msg.HasField(field.name):
            paths += [((field.name, None), *sub) for sub in field_paths(getattr(msg, field.name), depth - 1)]
    return paths


def one_hostile_field(base: st.SearchStrategy[Message], limits: Mapping[str, int] | None = None
                      ) -> st.SearchStrategy[Message]:
    """A message from `base` (valid) with one field, at any depth, made hostile or cleared."""
    limits = limits or {}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = draw(base)
        out = type(msg)()
        out.CopyFrom(msg)
        path = draw(st.sampled_from(field_paths(out)))
        parent = out
        for name, index in path[:-1]:
            parent = getattr(parent, name)[index] if index is not None else getattr(parent, name)
        field = parent.DESCRIPTOR.fields_by_name[path[-1][0]]
        value = draw(st.one_of(st.none(), field_values(field, limits, depth=2)))
        set_field(parent, field, value)
        return out

    return build()
