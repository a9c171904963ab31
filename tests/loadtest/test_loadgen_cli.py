"""Tests of `claimcore loadgen` flags: every mistake exits 2 with a message naming the flag."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from claimcore.harness.embedded_redis import free_port
from claimcore.loadtest import loadgen
from claimcore.loadtest.arrivals import ArrivalShape, plan_claims
from claimcore.loadtest.node_cpu import parse_metrics_urls
from claimcore.loadtest.recording import HEADER, read_recording, write_trace
from claimcore.ops import cli
from claimcore.v1 import claims_pb2


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="claimcore loadgen")
    loadgen.add_arguments(parser)
    return parser.parse_args(argv)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(["loadgen", *argv])
    return code, capsys.readouterr().err


def test_defaults():
    args = parse(["--target", "h:1", "--campaign", "c"])
    assert args.processes == (os.cpu_count() or 1) and args.concurrency == 128
    assert (args.mode, args.deadline, args.max_attempts) == ("unary", 5.0, 5)
    assert loadgen.shape_of(args) == ArrivalShape("launch", 10.0, 10_000.0, 0.3, 1.0)
    assert loadgen.check_arguments(args) == []
    poisson = parse(["--target", "h:1", "--campaign", "c", "--arrival", "poisson", "--users", "500",
                     "--duration", "5"])  # fmt: skip
    assert loadgen.shape_of(poisson).rate == 100.0  # users / duration unless --rate


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --target is required
        ["--target", "h:1", "--campaign", "c", "--mode", "stream"],
        ["--target", "h:1", "--campaign", "c", "--arrival", "wave"],
        ["--target", "h:1", "--campaign", "c", "--record", "a", "--replay", "b"],
        ["--target", "h:1", "--campaign", "c", "--users", "many"],
    ],
)
def test_malformed_flags_exit_2_from_argparse(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["loadgen", *argv])
    assert exc.value.code == 2
    assert "claimcore loadgen: USAGE: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--target", "h:1"], "--campaign ID is required"),
        (["--target", "h:1", "--campaign", "bad id"], "--campaign 'bad id' must match"),
        (["--target", "h:1", "--campaign", "c", "--inventory", "5"], "--inventory only applies"),
        (["--target", "h:1", "--create-campaign"], "--create-campaign needs --inventory"),
        (["--target", "h:1", "--create-campaign", "--inventory", "4", "--shards", "8"],
         "--shards must not exceed"),
        (["--target", "h:1", "--campaign", "c", "--users", "0"], "--users must be >= 1"),
        (["--target", "h:1", "--campaign", "c", "--retry-share", "1.5"], "--retry-share must be within"),
        (["--target", "h:1", "--campaign", "c", "--arrival", "ramp", "--duration", "0"], "ramp needs"),
        (["--target", "h:1", "--campaign", "c", "--arrival", "launch", "--duration", "1"],
         "--duration > --launch-window"),
        (["--target", "h:1", "--campaign", "c", "--batch-size", "10"], "--batch-size needs --mode batch"),
        (["--target", "h:1", "--campaign", "c", "--mode", "batch", "--batch-size", "1001"],
         "--batch-size must be within"),
        (["--target", "h:1", "--campaign", "c", "--replay", "t.csv", "--users", "10"],
         "--replay takes users and timing from the trace; drop --users"),
        (["--target", "h:1", "--campaign", "c", "--processes", "0"], "--processes must be >= 1"),
        (["--target", "h:1", "--campaign", "c", "--deadline", "0"], "--deadline must be > 0"),
        (["--target", "h:1", "--campaign", "c", "--reshard", "16"], "--reshard takes SHARDS@SECONDS"),
        (["--target", "h:1", "--campaign", "c", "--reshard", "0@1"], "shards must be 1..1024"),
        (["--target", "nohost", "--campaign", "c"], "'nohost' is not HOST:PORT"),
        (["--target", "h:1,h:99999", "--campaign", "c"], "'h:99999' is not HOST:PORT"),
        (["--target", "h:1", "--campaign", "c", "--node-metrics", "nohost"],
         "--node-metrics 'nohost' is not HOST:PORT"),
        (["--target", "h:1", "--campaign", "c", "--node-metrics", "ftp://h:1/m"],
         "--node-metrics 'ftp://h:1/m' is not HOST:PORT"),
        (["--target", "h:1", "--campaign", "c", "--node-metrics", ","], "--node-metrics needs at least one"),
        (["--target", "h:1", "--campaign", "c", "--connections", "0"], "--connections must be within 1..64"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_naming_the_flag(argv, message, capsys):
    code, err = run_cli(argv, capsys)
    assert code == loadgen.EXIT_ERROR
    assert message in err


def test_client_auto_is_the_mode_auto_and_node_metrics_become_urls():
    args = parse(["--target", "h:1", "--campaign", "c", "--client", "auto",
                  "--node-metrics", "h:9100,https://m.example:443/x"])  # fmt: skip
    assert args.mode == "auto" and loadgen.check_arguments(args) == []
    assert parse_metrics_urls(args.node_metrics) == ["http://h:9100/metrics", "https://m.example:443/x"]


def test_unreachable_target_exits_2(capsys):
    target = f"127.0.0.1:{free_port()}"
    code, err = run_cli(["--target", target, "--campaign", "c", "--connect-timeout", "0.3"], capsys)
    assert code == loadgen.EXIT_ERROR
    assert f"cannot reach front node {target}" in err


def test_unknown_campaign_exits_2(node, capsys):
    code, err = run_cli(["--target", node.address, "--campaign", "no-such-campaign"], capsys)
    assert code == loadgen.EXIT_ERROR
    assert "NOT_FOUND" in err


def test_bad_trace_exits_2(node, tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "\n1,u,r,replay\n")
    code, err = run_cli(
        ["--target", node.address, "--create-campaign", "--inventory", "5", "--shards", "1",
         "--replay", str(trace)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_ERROR
    assert "before its first claim" in err


# ------------------------------------------------------------ a trace carries its campaign

SMALL_RUN = ["--users", "1500", "--arrival", "burst", "--duration", "0.3", "--processes", "2",
             "--concurrency", "32", "--verify-sample", "50", "--no-progress"]  # fmt: skip


def campaign_ids(admin) -> set[str]:
    return set(admin.ListCampaigns(claims_pb2.ListCampaignsRequest(include_archived=True)).campaign_ids)


@pytest.mark.timeout(90)
def test_replay_with_nothing_else_recreates_the_recorded_campaign(node, admin, tmp_path, capsys):
    trace, first_json, replay_json = tmp_path / "t.csv", tmp_path / "first.json", tmp_path / "replay.json"
    code, err = run_cli(
        ["--target", node.address, "--create-campaign", "--inventory", "300", "--shards", "3",
         "--admission-rate", "1000000", *SMALL_RUN, "--seed", "11", "--record", str(trace),
         "--json", str(first_json)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, err
    first = json.loads(first_json.read_text())
    recording = read_recording(trace)
    # the campaign as the node reported it (it fills in defaults such as max_vouchers_per_order)
    expected = {"inventory": 300, "shards": 3, "per_user_limit": 1, "admission_rate": 1_000_000}
    assert recording.campaign is not None and recording.campaign.items() >= expected.items()
    assert recording.spec["seed"] == 11
    assert recording.spec["arrival"]["shape"] == "burst" and recording.spec["arrival"]["users"] == 1500

    code, err = run_cli(["--target", node.address, "--replay", str(trace), "--json", str(replay_json)],
                        capsys)
    assert code == loadgen.EXIT_OK, err
    replayed = json.loads(replay_json.read_text())
    assert replayed["campaign"] != first["campaign"]
    info = admin.GetCampaign(claims_pb2.GetCampaignRequest(campaign_id=replayed["campaign"])).campaign
    c = info.campaign
    assert (c.inventory, c.shards, c.per_user_limit, c.admission_rate) == (300, 3, 1, 1_000_000)
    assert info.granted == 300 and replayed["granted"] == 300
    assert replayed["run"]["seed"] == 11  # the trace's seed
    assert replayed["run"]["recorded_arrival"]["users"] == 1500
    assert replayed["run"]["planned_claims"] == first["run"]["planned_claims"]


@pytest.mark.timeout(90)
def test_flags_on_the_command_line_override_the_trace(node, admin, tmp_path, capsys):
    trace, replay_json = tmp_path / "t.csv", tmp_path / "replay.json"
    write_trace(
        plan_claims(users=400, shape=ArrivalShape("burst", 0.2), seed=3, retry_share=0.0,
                    double_tap_share=0.0, follow_up_within_s=0.1, run_tag="override"),
        trace,
        spec={"campaign": {"inventory": 100, "shards": 4, "per_user_limit": 1, "admission_rate": 0,
                           "category": "3c"}, "seed": 5},
    )  # fmt: skip
    code, err = run_cli(
        ["--target", node.address, "--replay", str(trace), "--inventory", "50", "--shards", "2",
         "--seed", "9", "--processes", "1", "--verify-sample", "10", "--no-progress",
         "--json", str(replay_json)],
        capsys,
    )  # fmt: skip
    assert code == loadgen.EXIT_OK, err
    replayed = json.loads(replay_json.read_text())
    c = admin.GetCampaign(claims_pb2.GetCampaignRequest(campaign_id=replayed["campaign"])).campaign.campaign
    assert (c.inventory, c.shards, c.category) == (50, 2, "3c")  # flags win, the rest from the trace
    assert replayed["run"]["seed"] == 9


def test_an_old_trace_alone_is_refused_naming_the_flags(node, admin, tmp_path, capsys):
    trace = tmp_path / "old.csv"
    trace.write_text(HEADER + "\n0.000,u1,r1,first\n1.000,u2,r2,first\n")
    before = campaign_ids(admin)
    code, err = run_cli(["--target", node.address, "--replay", str(trace)], capsys)
    assert code == loadgen.EXIT_ERROR
    assert err.count("\n") == 1 and err.startswith("loadgen: error: ")
    assert "carries no campaign spec" in err and "--campaign ID, or --create-campaign --inventory N" in err
    assert campaign_ids(admin) == before  # nothing created
    # with the flags given, the same trace runs
    code, err = run_cli(["--target", node.address, "--replay", str(trace), "--create-campaign",
                         "--inventory", "1", "--shards", "1", "--processes", "1", "--no-progress"],
                        capsys)  # fmt: skip
    assert code == loadgen.EXIT_OK, err


def test_a_trace_whose_shards_exceed_the_inventory_given_is_refused(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("# campaign.inventory=100\n# campaign.shards=8\n" + HEADER + "\n0.000,u1,r1,first\n")
    code, err = run_cli(["--target", "h:1", "--replay", str(trace), "--inventory", "4"], capsys)
    assert code == loadgen.EXIT_ERROR
    assert "--shards 8 (from the trace) must not exceed --inventory 4 (from the command line)" in err
