"""`claimcore serve` without --redis: its embedded redis-server's data folder survives a restart.

Real `claimcore serve` child processes (LocalNode) on real redis-servers: a campaign and a grant
made before a SIGTERM are there after a restart on the same --data-dir (or the default folder,
$XDG_DATA_HOME/claimcore); --ephemeral keeps nothing and leaves no folder; two nodes on one folder
are refused, even when the first node was killed and left its redis-server running; --workers
share one server and a Ctrl-C drains them before it stops; a SIGTERM while starting stops the server
too; a folder that cannot be made or loaded, and the flags that do not go together, are one line.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from claimcore.harness.embedded_redis import LOCK_FILE
from claimcore.harness.local_node import PACKAGE_ROOT
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign

START_LINE = re.compile(r"claimcore: embedded redis-server at (\S+) \(appendfsync \w+\), (.*)")


def start_line(node: LocalNode) -> str:
    """What the node said about its embedded redis-server (after the URL)."""
    lines = [m.group(2) for m in map(START_LINE.search, node.log_tail().splitlines()) if m]
    assert len(lines) == 1, node.log_tail()
    return lines[0]


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`claimcore serve ARGS` that is expected to stop by itself."""
    return subprocess.run([sys.executable, "-m", "claimcore", "serve", "--plaintext", "--no-auth",
                           "--port", "0", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": PACKAGE_ROOT, **(env or {})})


def figures(node: LocalNode, cid: str) -> tuple[int, int]:
    with grpc.insecure_channel(node.address) as ch:
        info = pb_grpc.AdminServiceStub(ch).GetCampaign(pb.GetCampaignRequest(campaign_id=cid),
                                                        timeout=10).campaign
    return info.granted, info.remaining


def claim(node: LocalNode, cid: str, user: str, request: str) -> pb.ClaimResponse:
    with grpc.insecure_channel(node.address) as ch:
        return pb_grpc.ClaimServiceStub(ch).Claim(
            pb.ClaimRequest(campaign_id=cid, user_id=user, request_id=request), timeout=10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().rpartition(")")[2].split()[0] != "Z"


def test_a_restart_keeps_every_campaign_and_grant(tmp_path: Path) -> None:
    # The first run finds its folder by default ($XDG_DATA_HOME/claimcore), the second is given it.
    data = tmp_path / "xdg" / "claimcore"
    first = LocalNode("", env={"XDG_DATA_HOME": str(tmp_path / "xdg")}).start()
    try:
        assert start_line(first) == f"data in {data} (kept: new folder, or empty)"
        with grpc.insecure_channel(first.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=5, shards=1).campaign.campaign_id
        granted = claim(first, cid, "u1", "r1")
        assert granted.outcome == pb.OUTCOME_GRANTED
        assert figures(first, cid) == (1, 4)
    finally:
        assert first.stop() == 0
    assert (data / "appendonlydir").is_dir()

    second = LocalNode("", "--data-dir", str(data)).start()
    try:
        line = start_line(second)
        assert re.fullmatch(rf"data in {re.escape(str(data))} \(kept: \d+ keys loaded\)", line), line
        assert figures(second, cid) == (1, 4)
        replay = claim(second, cid, "u1", "r1")
        assert (replay.outcome, replay.voucher) == (pb.OUTCOME_GRANTED, granted.voucher)
        assert figures(second, cid) == (1, 4)  # the replay took no stock
        other = claim(second, cid, "u2", "r2")  # the shard's sequence goes on: no voucher id reissued
        assert other.outcome == pb.OUTCOME_GRANTED and other.voucher.voucher_id != granted.voucher.voucher_id
        assert figures(second, cid) == (2, 3)
    finally:
        assert second.stop() == 0


def test_ephemeral_keeps_nothing_and_leaves_no_folder(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    node = LocalNode("", "--ephemeral", env=env).start()
    try:
        line = start_line(node)
        match = re.fullmatch(r"ephemeral: data is lost on stop \(temporary folder (\S+)\)", line)
        assert match, line
        folder = Path(match.group(1))
        assert (folder / "appendonlydir").is_dir()
        with grpc.insecure_channel(node.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=2).campaign.campaign_id
    finally:
        assert node.stop() == 0
    assert not folder.exists()
    assert not (tmp_path / "xdg").exists()  # nor the default data folder

    again = LocalNode("", "--ephemeral", env=env).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            figures(again, cid)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("flags, line", [
    (["--data-dir", "{d}", "--ephemeral"],
     "claimcore serve: USAGE: argument --ephemeral: not allowed with argument --data-dir "
     "(see claimcore serve --help)"),
    (["--data-dir", "{d}", "--redis", "redis://127.0.0.1:1/0"],
     "claimcore serve: USAGE: --data-dir is for the embedded redis-server, not with --redis "
     "(see claimcore serve --help)"),
    (["--ephemeral", "--redis", "redis://127.0.0.1:1/0"],
     "claimcore serve: USAGE: --ephemeral is for the embedded redis-server, not with --redis "
     "(see claimcore serve --help)"),
    (["--ephemeral", "--redis-cluster", "127.0.0.1:1"],
     "claimcore serve: USAGE: --ephemeral is for the embedded redis-server, not with --redis-cluster "
     "(see claimcore serve --help)"),
])
def test_flags_that_do_not_go_together_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   flags: list[str], line: str) -> None:
    from claimcore.ops.cli import main

    data = tmp_path / "data"
    try:
        code = main(["serve", "--plaintext", "--no-auth", *(f.format(d=data) for f in flags)])
    except SystemExit as stop:
        code = stop.code  # type: ignore[assignment]
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not data.exists()


def test_two_nodes_on_one_data_folder_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = LocalNode("", "--data-dir", str(data)).start()
    orphan = 0
    try:
        with grpc.insecure_channel(first.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=3).campaign.campaign_id
        starter, orphan, port = (int(x) for x in (data / LOCK_FILE).read_text().split())
        assert first.proc is not None and starter == first.proc.pid
        refused = serve("--data-dir", str(data))
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"claimcore serve: data folder {data} is in use by redis-server pid {orphan} on port {port}, "
            f"started by pid {starter}: stop that node first, or give another --data-dir"]
        assert figures(first, cid) == (0, 3)  # the first node is untouched

        # A node killed outright leaves its redis-server running on the folder: still refused.
        first.stop(signal.SIGKILL)
        assert alive(orphan)
        again = serve("--data-dir", str(data))
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            f"claimcore serve: data folder {data} is in use by redis-server pid {orphan} on port {port}, "
            f"left running by pid {starter}, which is gone: stop that redis-server (kill {orphan}) first, "
            "or give another --data-dir"]
        os.kill(orphan, signal.SIGTERM)  # what the line asks the operator to do
        deadline = time.monotonic() + 10
        while alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(orphan)
        orphan = 0

        third = LocalNode("", "--data-dir", str(data)).start()
        try:
            assert figures(third, cid) == (0, 3)
        finally:
            assert third.stop() == 0
    finally:
        first.stop()
        if orphan and alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_workers_share_one_embedded_server_and_a_ctrl_c_drains_before_it_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = LocalNode("", "--workers", "2", "--data-dir", str(data)).start()
    try:
        deadline = time.monotonic() + 20  # SERVING is the first worker; the parent says when all listen
        while "claimcore: 2 workers, pids" not in node.log_tail():
            assert time.monotonic() < deadline, node.log_tail()
            time.sleep(0.05)
        assert start_line(node).startswith(f"data in {data} (kept: ")  # one server, started by the parent
        with grpc.insecure_channel(node.address) as ch:
            cid = create_campaign(pb_grpc.AdminServiceStub(ch), inventory=3).campaign.campaign_id
        assert claim(node, cid, "u1", "r1").outcome == pb.OUTCOME_GRANTED
        assert node.proc is not None
        parent = node.proc.pid
        _, server, _ = (int(x) for x in (data / LOCK_FILE).read_text().split())
        # The terminal's Ctrl-C goes to the node's process group: the parent, not its redis-server,
        # which the parent stops once the workers have drained.
        assert os.getpgid(parent) == parent and os.getpgid(server) != parent
        os.killpg(parent, signal.SIGINT)
        assert node.proc.wait(timeout=30) == 0
        assert not alive(server)
    finally:
        node.stop()
    aof = b"".join(f.read_bytes() for f in (data / "appendonlydir").iterdir())
    assert cid.encode() in aof and b"u1" in aof


def test_a_data_folder_redis_cannot_load_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "appendonlydir" / "appendonly.aof.manifest").write_text("not a manifest\n")
    done = serve("--data-dir", str(data))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("claimcore serve: redis-server exited at start: "), lines
    assert f"(its log: {data / 'redis.log'})" in lines[0]
    with open(data / LOCK_FILE, "rb") as lock:  # released: nothing runs on the folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_default_data_folder_follows_xdg_then_home(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from claimcore.ops.serve_cmd import default_data_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "claimcore"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # the XDG spec: a relative path is ignored
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "claimcore"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "claimcore"


def test_a_data_folder_that_cannot_be_made_is_one_line(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from claimcore.ops.cli import main

    taken = tmp_path / "a-file"
    taken.write_text("")
    assert main(["serve", "--plaintext", "--no-auth", "--data-dir", str(taken)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"claimcore serve: cannot use {taken} as the data folder: File exists "
        "(give --data-dir PATH, or --ephemeral to keep nothing)"]


def test_a_sigterm_while_starting_stops_the_embedded_server_too(tmp_path: Path) -> None:
    # Sent as soon as the start line is out: the node may not have its own handlers yet.
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "claimcore", "serve", "--plaintext", "--no-auth",
                             "--port", "0", "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": PACKAGE_ROOT})
    server = 0
    try:
        assert proc.stdout is not None and "embedded redis-server at" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _, server, _ = (int(x) for x in (data / LOCK_FILE).read_text().split())
        assert not alive(server)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server and alive(server):
            os.kill(server, signal.SIGKILL)
