"""The claimcore.v1 API: the generated stubs (claims_pb2, claims_pb2_grpc; `make proto`) and the short
names of its enum values.

The proto prefixes every enum value with its enum's name (buf's ENUM_VALUE_PREFIX: OUTCOME_GRANTED,
REDEEM_OUTCOME_REDEEMED), as protobuf enum values share their package's scope. People read them without
it: reports, JSON, logs, CLI output and metric labels show "GRANTED" (or "granted"), through these
helpers and nowhere else.

Each takes the enum (pb.Outcome) or its descriptor (a field's enum_type).

    short_name(pb.Outcome, pb.OUTCOME_GRANTED) == "GRANTED"
    short_names(pb.Outcome) == {"UNSPECIFIED": 0, "GRANTED": 1, ...}
    value_of(pb.Outcome, "GRANTED") == pb.OUTCOME_GRANTED
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

__all__ = ["prefix_of", "short_name", "short_names", "value_of"]


@cache
def prefix_of(enum: Any) -> str:
    """The prefix of an enum's values: its name in UPPER_SNAKE_CASE and "_" (Outcome -> "OUTCOME_")."""
    name = getattr(enum, "DESCRIPTOR", enum).name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


@cache
def short_names(enum: Any) -> dict[str, int]:
    """Every value of an enum by its short name, in declaration order."""
    prefix = prefix_of(enum)
    return {v.name.removeprefix(prefix): v.number for v in getattr(enum, "DESCRIPTOR", enum).values}


@cache
def _by_number(enum: Any) -> dict[int, str]:
    return {number: name for name, number in short_names(enum).items()}


def short_name(enum: Any, number: int) -> str:
    """A value's name without its enum's prefix; ValueError for a number the enum lacks, as enum.Name."""
    try:
        return _by_number(enum)[number]
    except (KeyError, TypeError):
        name = getattr(enum, "DESCRIPTOR", enum).name
        raise ValueError(f"enum {name} has no value {number!r}") from None


def value_of(enum: Any, name: str) -> int:
    """The number of a value given by its short name ("GRANTED") or its full one; ValueError if unknown."""
    names = short_names(enum)
    if name in names:
        return names[name]
    full = getattr(enum, "DESCRIPTOR", enum).values_by_name.get(name)
    if full is None:
        raise ValueError(f"enum {getattr(enum, 'DESCRIPTOR', enum).name} has no value {name!r}")
    return int(full.number)
