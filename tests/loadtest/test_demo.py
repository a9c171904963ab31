"""Tests of `claimcore demo`: its arguments, then one real run (redis-server, a node, the burst).

The report maths is tested without a server in test_report.py.
"""

from __future__ import annotations

import argparse
import json
import time

import pytest

from claimcore.loadtest import demo
from claimcore.loadtest.arrivals import user_id

# ------------------------------------------------------------------- helpers


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="claimcore demo")
    demo.add_arguments(parser)
    return parser.parse_args(argv)


# ------------------------------------------------------------- arguments


def test_defaults_match_the_documentation():
    args = parse([])
    assert (args.users, args.inventory, args.shards) == (100_000, 10_000, 8)
    assert (args.processes, args.concurrency) == (3, 128)
    assert (args.retry_share, args.double_tap_share, args.deadline) == (0.1, 0.05, 5.0)
    assert args.redis is None and args.json is None


def test_bad_arguments_exit_2_without_starting_anything(capsys):
    assert demo.run(parse(["--users", "0"])) == demo.EXIT_ERROR
    assert demo.run(parse(["--retry-share", "1.5"])) == demo.EXIT_ERROR
    assert "--users" in capsys.readouterr().err


def test_user_ids_match_the_documented_format():
    assert user_id(0) == "u000000"
    assert user_id(99_999) == "u099999"


# ------------------------------------------------------------ end to end


@pytest.mark.timeout(120)
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "report.json"
    page = tmp_path / "report.html"
    args = parse(
        [
            "--users", "3000",
            "--inventory", "500",
            "--shards", "4",
            "--processes", "2",
            "--concurrency", "32",
            "--verify-sample", "200",
            "--json", str(out),
            "--html", str(page),
        ]
    )  # fmt: skip
    started = time.monotonic()
    code = demo.run(args)
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    report = json.loads(out.read_text())
    assert report["granted"] == 500
    assert report["distinct_vouchers"] == 500
    assert report["duplicates"] == 0
    assert report["oversell"] == 0
    assert report["retry_violations"] == 0
    assert report["exact"] is True and report["ok"] is True
    assert report["outcomes"]["GRANTED"] >= 500
    assert report["outcomes"]["SOLD_OUT"] > 0
    assert "RESULT: PASS" in printed.out
    # Every claim planned at the start (a burst); first grants apart from replays of a grant.
    totals = report["flow_totals"]
    assert totals["planned"] == report["per_slice"][0]["planned"]
    assert totals["planned"] == report["requests_sent"] - totals["resent"]
    assert totals["granted_first"] == 500 and report["per_slice"][-1]["stock_remaining"] == 0
    assert totals["granted_first"] + totals["granted_replays"] == report["outcomes"]["GRANTED"]
    assert f"500 first grants (+{totals['granted_replays']} replays of a grant" in printed.out
    assert page.read_text().count("<svg") == 5
    assert time.monotonic() - started < 60
