"""How the claimcore CLI speaks: exit codes, one-line errors, tables, key/value blocks, progress.

Exit codes (docs/cli.md), the same for every command that calls a node:

    0  done
    1  the node refused (a gRPC status other than UNAVAILABLE), or a check failed
       (reconcile found a difference)
    2  bad usage or input: a bad flag, a bad CSV or config file, an unreadable file
    3  no node reachable: nothing answered at the target within --connect-timeout,
       or a call ended UNAVAILABLE (the node went away, or cannot serve now)

An error is one line on standard error: `claimcore <command>: <CODE>: <details>`,
CODE being a gRPC status name (NOT_FOUND, UNAVAILABLE, ...) or one of USAGE,
BAD_INPUT, FILE, CONFIG, DIFFERENCES.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import IO, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from claimcore.security import access
from claimcore.v1 import short_name

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line and an exit code."""

    def __init__(self, code: str, details: str, exit_code: int) -> None:
        super().__init__(details)
        self.code, self.details, self.exit_code = code, details, exit_code


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def report(command: str, code: str, details: str, exit_code: int, stream: IO[str] | None = None) -> int:
    """Print `claimcore <command>: <CODE>: <details>` on standard error; return exit_code."""
    print(f"claimcore {command}: {code}: {one_line(details)}", file=stream or sys.stderr, flush=True)
    return exit_code


def rpc_exit_code(err: grpc.RpcError) -> int:
    code = err.code()  # type: ignore[attr-defined]
    return EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED


def from_rpc(err: grpc.RpcError, suffix: str = "") -> CliError:
    details = err.details() or ""  # type: ignore[attr-defined]
    return CliError(err.code().name, details + suffix, rpc_exit_code(err))  # type: ignore[attr-defined]


def connect(dial: Callable[[str], grpc.Channel], target: str, timeout: float,
            source: str = "", tls_ca: str = "") -> grpc.Channel:
    """A channel to target once a node has answered on it; CliError (exit 3) naming why if none does.

    The probe is a health check without wait_for_ready: a refused connection, a name that does not
    resolve or a failed TLS handshake fails it at once, not after `timeout` (which only bounds a node
    that does not answer at all). Any answer, even an error status, means a node is there."""
    channel = dial(target)
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            channel.close()
            where = f" (target from {source})" if source and source != "flag" else ""
            raise CliError("UNAVAILABLE", unreachable(target + where, timeout, tls_ca, code,
                                                      err.details() or ""),  # type: ignore[attr-defined]
                           EXIT_UNREACHABLE) from None
    return channel


def unreachable(target: str, timeout: float, tls_ca: str, code: grpc.StatusCode, details: str) -> str:
    """Why no node answered at target, in words, from the status gRPC's connection attempt ended with."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"no node answers at {target} within {timeout:g} s (nothing came back: a firewall, "
                "or a host that is down?)")
    if "Connection refused" in details:
        return f"nothing listens at {target}: connection refused (is the node running, on this port?)"
    if "resolv" in details or "Domain name not found" in details or "DNS" in details:
        return f"cannot resolve the host name of {target}"
    if "WRONG_VERSION_NUMBER" in details or "record" in details.lower() and "ssl" in details.lower():
        return (f"TLS mismatch: the node at {target} does not speak TLS, but a CA is given (--tls-ca "
                f"{tls_ca}): drop it, or serve with --tls-cert")
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (f"TLS: the certificate of the node at {target} is not signed by the CA in {tls_ca} "
                "(wrong --tls-ca?)")
    if "Peer name" in details or "peer certificate" in details:
        return f"TLS: the certificate of the node at {target} does not name that host"
    if "andshake" in details:
        reason = details.rsplit("SSL_ERROR_SSL:", 1)[-1].strip().removesuffix(": OK")
        return f"TLS handshake with the node at {target} failed: {reason}"
    if not tls_ca and ("Socket closed" in details or "Connection reset" in details):
        return (f"the node at {target} closed the connection: does it serve TLS? (give --tls-ca, or "
                "CLAIMCORE_TLS_CA)")
    if "Socket closed" in details or "Connection reset" in details:
        return (f"the node at {target} closed the TLS connection: does it want a client certificate "
                "(--tls-cert and --tls-key)?")
    return f"cannot reach a node at {target}: {details}"


def reach(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --target on which a node has answered (exit 3 saying why if none did)."""
    return connect(access.dial, args.target, args.connect_timeout,
                   getattr(args, "sources", {}).get("target", ""), getattr(args, "tls_ca", "") or "")


# ---------------------------------------------------------------- JSON


def message_json(message: Message) -> dict[str, Any]:
    """A reply as the --json output shows it: every field by its proto name (snake_case), zero, false and
    empty ones included, numbers as JSON numbers (int64 too: protobuf's own JSON writes those as strings),
    enums by name without their enum's prefix (claimcore.v1.short_name), bytes as base64."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _field_json(value_field, v) for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_field_json(field, item) for item in value]
        else:
            out[field.name] = _field_json(field, value)
    return out


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # newer protobuf; `label` is the older spelling
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _field_json(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:  # by its short name: "GRANTED", not "OUTCOME_GRANTED"
        try:
            return short_name(field.enum_type, value)
        except ValueError:
            return value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value  # int (any width), float, bool, str: JSON has each


def print_json(value: Any) -> None:
    """The --json output: one JSON document on standard output."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------- text


def number(value: int) -> str:
    return f"{value:,}"


# ---------------------------------------------------------------- times

# The zone times are shown in: --tz, else the config file's tz (cli.py sets it), else None: the local zone.
_zone: tzinfo | None = None
SECONDS_LOOK_LIKE = 100_000_000_000  # unix ms below this are before March 1973: seconds given by mistake
TIME_FORMATS = ("an ISO 8601 time with its zone (2026-12-12T10:00:00+08:00, 2026-12-12T02:00:00Z) "
                "or unix milliseconds")


def zone(name: str) -> tzinfo:
    """An IANA zone by name (Asia/Shanghai, UTC); ValueError naming it if there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"no time zone {name!r}: an IANA name such as Asia/Shanghai, Europe/Berlin "
                         "or UTC") from None


def set_zone(name: str) -> None:
    """Show times in this IANA zone from now on ("" = the local zone)."""
    global _zone
    _zone = zone(name) if name else None


def parse_time(text: str) -> int:
    """A time the CLI is given, as unix ms: digits are unix ms already; else ISO 8601, which must carry
    its zone (a time without one means a different moment on every machine). argparse type."""
    text = text.strip()
    if text.isdigit():
        ms = int(text)
        if 0 < ms < SECONDS_LOOK_LIKE:
            raise argparse.ArgumentTypeError(f"{text} looks like seconds (it would be {when(ms)}): give unix "
                                             f"milliseconds ({text}000) or an ISO 8601 time with its zone")
        return ms
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}; give {TIME_FORMATS}") from None
    if moment.tzinfo is None:
        full = text if ("T" in text or " " in text) else f"{text}T00:00:00"  # a date alone: its midnight
        raise argparse.ArgumentTypeError(
            f"{text!r} has no zone: add one, e.g. {full}+08:00 or {full}Z (UTC), or give unix ms")
    return round(moment.timestamp() * 1000)


def when(ms: int, zero: str = "-") -> str:
    """Unix milliseconds as a time in the chosen zone with its offset, e.g. 2026-12-12 10:00:03.412+08:00
    (Z for UTC); `zero` for 0."""
    if not ms:
        return zero
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(_zone)
    offset = moment.strftime("%z")
    offset = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}{offset}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell; columns whose index is in `right` are right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if c in ("", None) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligned = set(right)
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in aligned else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                             strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def block(pairs: Iterable[tuple[str, Any]]) -> str:
    """key  value lines, the values lined up."""
    items = [(k, "-" if v in ("", None) else str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in items)


# ---------------------------------------------------------------- progress


class Progress:
    """One line on standard error, redrawn in place, only when it is a terminal (nothing otherwise)."""

    def __init__(self, stream: IO[str] | None = None, every_s: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.on = bool(isatty and isatty())
        self.every_s = every_s
        self.last = 0.0
        self.shown = False

    def update(self, text: str, force: bool = False) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, future: grpc.Future, label: str) -> Any:
        """The result of a gRPC future, with `label… N s` on the line while it runs."""
        if not self.on:
            return future.result()
        started = time.monotonic()
        while True:
            try:
                return future.result(timeout=0.2)
            except grpc.FutureTimeoutError:
                self.update(f"{label}… {time.monotonic() - started:.1f} s", force=True)
