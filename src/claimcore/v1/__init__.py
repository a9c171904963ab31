"""The claimcore.v1 API: the generated stubs (claims_pb2, claims_pb2_grpc; `make proto`) and the short
names of its enum values.

The proto prefixes every enum value with its enum's name (buf's ENUM_VALUE_PREFIX: OUTCOME_GRANTED,
REDEEM_OUTCOME_REDEEMED), as protobuf enum values share their package's scope. People read them without
it: reports, JSON, logs, CLI output and metric labels show "GRANTED" (or "granted"), through these
helpers and nowhere else.

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
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"


@cache
def short_names(enum: Any) -> dict[str, int]:
    """Every value of an enum by its short name, in declaration order."""
    cut = len(prefix_of(enum))
    return {name[cut:]: number for name, number in enum.items()}


@cache
def _by_number(enum: Any) -> dict[int, str]:
    return {number: name for name, number in short_names(enum).items()}


def short_name(enum: Any, number: int) -> str:
    """A value's name without its enum's prefix; ValueError for a number the enum lacks, as enum.Name."""
    try:
        return _by_number(enum)[number]
    except (KeyError, TypeError):
        raise ValueError(f"enum {enum.DESCRIPTOR.name} has no value {number!r}") from None


def value_of(enum: Any, name: str) -> int:
    """The number of a value given by its short name ("GRANTED") or its full one; ValueError if unknown."""
    names = short_names(enum)
    if name in names:
        return names[name]
    return int(enum.Value(name))
