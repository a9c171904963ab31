"""The node's log lines (claimcore.node.logs): JSON objects with ts, level, logger, msg and the
problem's fields, one line per problem, never a user id."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import grpc
import pytest

from claimcore.harness.embedded_redis import EmbeddedRedis
from claimcore.harness.local_node import PACKAGE_ROOT
from claimcore.node import logs
from claimcore.node.errors import log_unexpected
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_extra_fields(restore_logging, capsys):
    logs.configure("json", logging.INFO)
    log = logging.getLogger("claimcore.test")
    log.warning("refresh of %s failed", "camp-1", extra={"campaign": "camp-1", "request_id": "r-9",
                                                         "code": "UNAVAILABLE"})
    log.debug("not shown below INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("with a traceback")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # one object per line, the traceback inside it
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "claimcore.test"
    assert first["msg"] == "refresh of camp-1 failed"
    assert (first["campaign"], first["request_id"], first["code"]) == ("camp-1", "r-9", "UNAVAILABLE")
    assert first["ts"].endswith("Z") and first["ts"][:4].isdigit()
    assert "RuntimeError: boom" in second["exc"] and "campaign" not in second


def test_text_lines_carry_the_fields_as_key_value(restore_logging, capsys):
    logs.configure("text", logging.WARNING)
    logging.getLogger("claimcore.test").warning("stuck", extra={"campaign": "camp-2"})
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING claimcore.test: stuck campaign=camp-2")
    with pytest.raises(ValueError):
        logs.configure("xml")


def test_an_unexpected_error_is_logged_once_per_kind_and_window(restore_logging, capsys):
    logs.configure("json")
    kind = type("FreshError", (Exception,), {})  # a kind of error no other test has logged
    for n in range(3):
        log_unexpected(kind(f"failure {n}"), "camp-3", f"req-{n}")
    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0]["campaign"] == "camp-3" and lines[0]["request_id"] == "req-0"
    assert lines[0]["code"] == "INTERNAL" and lines[0]["level"] == "ERROR"
    assert "failure 0" in str(lines[0]["exc"])


def test_a_node_logs_redis_unreachable_as_one_json_line(monkeypatch):
    """CLAIMCORE_LOG_FORMAT=json: the node's problem lines are JSON; Redis stopping under it is one
    WARNING line (not one per claim), which names no user."""
    monkeypatch.setenv(logs.ENV, "json")
    redis_server = EmbeddedRedis().start()
    node = LocalNode(redis_server.url).start()
    try:
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            cid = create_campaign(admin, inventory=5, shards=1).campaign.campaign_id
            for n in range(3):
                claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"secret-user-{n}", request_id="r"),
                             timeout=5)
            redis_server.kill()
            for n in range(10):  # claims while Redis is away fail; none of them may log a line
                with pytest.raises(grpc.RpcError):
                    claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"secret-user-x{n}",
                                                 request_id="r"), timeout=5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    line.get("event") == "redis_down" for line in json_lines(node.log_tail())):
                time.sleep(0.1)
            time.sleep(0.5)  # anything logged for the failed claims has landed too
        lines = json_lines(node.log_tail(1 << 20))
        down = [line for line in lines if line.get("event") == "redis_down"]
        assert len(down) == 1, node.log_tail()
        assert down[0]["level"] == "WARNING" and down[0]["logger"] == "claimcore.node.server"
        assert "unreachable" in str(down[0]["msg"])
        assert {"ts", "level", "logger", "msg"} <= set(down[0])
        assert len(lines) < 10  # not one line per failed claim
        assert "secret-user" not in node.log_tail(1 << 20)
    finally:
        node.stop()
        redis_server.cleanup()


def test_serve_refuses_an_unknown_log_format():
    env = {**os.environ, logs.ENV: "xml", "PYTHONPATH": PACKAGE_ROOT}
    done = subprocess.run([sys.executable, "-m", "claimcore", "serve", "--plaintext", "--no-auth",
                           "--redis", "redis://127.0.0.1:1"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"xml" in done.stderr
