"""The node's log lines: text for people, or one JSON object per line for a log pipeline.

`configure("json")` makes every line an object with `ts` (UTC, ISO 8601),
`level`, `logger` and `msg`, plus whatever the call gave with `extra=`
(claimcore uses `campaign`, `request_id`, `code`, `event`), and `exc` (the
traceback) when there is one. In text, the same extra fields follow the
message as key=value.

The node logs one line per problem, never one per claim, and never a user id
or a key (API key, Redis password): only campaign ids, request ids and codes.
`claimcore serve` reads CLAIMCORE_LOG_FORMAT (text or json).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ENV = "CLAIMCORE_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                             "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = extra_fields(record)
        if not extra:
            return text
        head, sep, tail = text.partition("\n")  # fields on the message's line, before a traceback
        return head + "".join(f" {k}={v}" for k, v in extra.items()) + sep + tail


def configure(fmt: str = "text", level: int = logging.WARNING) -> None:
    """Send the root logger's lines to stderr in `fmt` ("text" or "json") from `level` up.

    Replaces the root's handlers (logging.basicConfig's included), so calling it
    again switches the format rather than doubling every line.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format is one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
