"""Tests of `loadgen --baseline`: the comparison over two reports, its table, and two real runs."""

from __future__ import annotations

import copy
import json
import math

import pytest

from claimcore.loadtest import loadgen
from claimcore.loadtest.baseline import (
    CHECK_NAME,
    METRICS,
    BaselineError,
    add_regression_check,
    change_pct,
    compare,
    format_comparison,
    load_baseline,
)
from claimcore.ops import cli


def report(**over) -> dict:
    """The parts of a loadgen --json report the comparison reads."""
    base = {
        "campaign": "c1",
        "users": 3000,
        "inventory": 500,
        "shards": 4,
        "processes": 2,
        "concurrency": 32,
        "run": {"mode": "unary", "batch_size": 1, "arrival": {"shape": "burst", "duration_s": 0.5},
                "planned_claims": 3300},
        "claims_per_s": 10_000.0,
        "claims_per_s_before_sold_out": 12_000.0,
        "latency_ms": {"count": 3300, "p50": 2.0, "p90": 4.0, "p99": 10.0, "p99.9": 20.0, "max": 30.0},
        "response_ms": {"count": 3300, "p50": 3.0, "p90": 5.0, "p99": 12.0, "p99.9": 25.0, "max": 40.0},
        "time_to_sold_out_server_s": 0.25,
        "front_cpu": {"measured": True, "cpu_s": 1.2, "per_million_claims": 400.0},
        "checks": [],
        "failed": [],
        "ok": True,
    }  # fmt: skip
    for path, value in over.items():
        node = base
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return base


def row(comparison: dict, key: str) -> dict:
    return next(r for r in comparison["rows"] if r["key"] == key)


# ------------------------------------------------------------ the comparison


def test_the_same_run_has_no_change_and_no_regression():
    c = compare(report(), report(), 10.0, source="base.json")
    assert [r["key"] for r in c["rows"]] == [m.key for m in METRICS]
    assert {r["key"] for r in c["rows"]} >= {
        "claims_per_s", "latency_ms.p50", "latency_ms.p99.9", "response_ms.p99",
        "time_to_sold_out_server_s", "front_cpu.per_million_claims",
    }  # fmt: skip
    assert all(r["change_pct"] == 0.0 and not r["regression"] for r in c["rows"])
    assert c["regressions"] == [] and c["setup_differences"] == [] and c["file"] == "base.json"


def test_worse_beyond_the_margin_is_a_regression_in_the_metrics_direction():
    now = report(claims_per_s=8_000.0, latency_ms__p99=11.5, response_ms__p50=2.0,
                 time_to_sold_out_server_s=0.3, front_cpu__per_million_claims=420.0)  # fmt: skip
    c = compare(report(), now, 10.0)
    throughput = row(c, "claims_per_s")
    assert (throughput["baseline"], throughput["current"]) == (10_000.0, 8_000.0)
    assert throughput["better"] == "higher"
    assert throughput["change_pct"] == pytest.approx(-20.0) and throughput["regression"]
    p99 = row(c, "latency_ms.p99")
    assert p99["change_pct"] == pytest.approx(15.0) and p99["regression"] and p99["better"] == "lower"
    assert not row(c, "response_ms.p50")["regression"]  # faster: an improvement
    assert row(c, "time_to_sold_out_server_s")["regression"]  # +20 %, lower is better
    assert not row(c, "front_cpu.per_million_claims")["regression"]  # +5 %: within the margin
    assert c["regressions"] == [
        "claims/s", "latency p99, ms", "time to sold out, s",
    ]  # fmt: skip
    # a higher throughput is never a regression, however much higher
    assert not row(compare(report(), report(claims_per_s=1e9)), "claims_per_s")["regression"]


def test_the_margin_is_strict_and_adjustable():
    now = report(latency_ms__p50=2.2)  # +10 %
    assert not row(compare(report(), now, 10.0), "latency_ms.p50")["regression"]
    assert row(compare(report(), now, 9.9), "latency_ms.p50")["regression"]
    assert row(compare(report(), report(latency_ms__p50=2.0001), 0.0), "latency_ms.p50")["regression"]
    with pytest.raises(ValueError):
        compare(report(), report(), -1.0)


def test_missing_figures_are_not_regressions():
    # JSON null (a baseline file), NaN (this run, in memory), absent, and a zero baseline
    before = report(time_to_sold_out_server_s=None, front_cpu={"measured": False, "per_million_claims": None})
    now = report(latency_ms__p99=math.nan, claims_per_s_before_sold_out=5.0)
    del now["response_ms"]["p90"]
    before["claims_per_s_before_sold_out"] = 0.0
    c = compare(before, now, 10.0)
    for key in ("time_to_sold_out_server_s", "front_cpu.per_million_claims", "latency_ms.p99",
                "response_ms.p90", "claims_per_s_before_sold_out"):  # fmt: skip
        assert row(c, key)["change_pct"] is None and not row(c, key)["regression"], key
    assert row(c, "latency_ms.p99")["current"] is None
    assert row(c, "time_to_sold_out_server_s")["baseline"] is None
    assert change_pct(None, 1.0) is None and change_pct(4.0, 5.0) == 25.0


def test_setup_differences_are_listed():
    now = report(users=6000, run__mode="batch")
    c = compare(report(), now)
    assert {"setting": "users", "baseline": 3000, "current": 6000} in c["setup_differences"]
    assert {"setting": "run.mode", "baseline": "unary", "current": "batch"} in c["setup_differences"]
    text = format_comparison(c, 200)
    assert "note: the runs differ in setup: users 3000 -> 6000; run.mode unary -> batch" in text


def test_the_regression_check_fails_the_report_only_on_a_regression():
    clean = report()
    add_regression_check(clean, compare(report(), report()))
    assert clean["ok"] and clean["checks"][-1]["name"] == CHECK_NAME and clean["checks"][-1]["ok"]
    worse = report(claims_per_s=1.0)
    add_regression_check(worse, compare(report(), worse, 10.0))
    assert worse["ok"] is False and worse["failed"] == [CHECK_NAME]
    assert "claims/s" in worse["checks"][-1]["detail"]


# ------------------------------------------------------------ the table


@pytest.mark.parametrize("width", [60, 69, 70, 132])
def test_the_table_fits_the_width_and_flags_the_worse_rows(width):
    c = compare(report(), report(claims_per_s=5_000.0, response_ms__p99=50.0), 10.0, source="base.json")
    text = format_comparison(c, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert lines[0] == " compared with baseline base.json (campaign c1)"
    assert "more than 10 % (lower claims/s; higher latency" in " ".join(" ".join(lines[1:4]).split())
    assert " ".join(text.split()).count("metric baseline this run change") == 1
    flagged = [n for n, line in enumerate(lines) if line.endswith("REGRESSION")]
    assert len(flagged) == 2
    one_line = width >= 70  # narrower: each metric's name on a line of its own, above its figures
    expected = ((flagged[0], "claims/s", ["10,000", "5,000", "-50.0", "%"]),
                (flagged[1], "response p99, ms", ["12.00", "50.00", "+316.7", "%"]))  # fmt: skip
    for n, name, figures in expected:
        label_line = lines[n] if one_line else lines[n - 1]
        assert label_line.lstrip().startswith(name)
        assert lines[n].split()[-5:] == [*figures, "REGRESSION"]
    assert lines[-1] == " 2 regressions: claims/s; response p99, ms"


def test_the_table_width_follows_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "64")  # what shutil.get_terminal_size reads first
    text = format_comparison(compare(report(), report()))
    assert max(len(line) for line in text.splitlines()) <= 64
    assert "n/a" not in text and " 0 regressions" in text


# ------------------------------------------------------------ the baseline file


def test_a_baseline_file_that_cannot_be_used_is_one_line(tmp_path):
    with pytest.raises(BaselineError, match=r"--baseline .*absent.json: cannot read it: No such file"):
        load_baseline(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BaselineError, match="not JSON"):
        load_baseline(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(BaselineError, match="not a loadgen --json report"):
        load_baseline(bad)
    bad.write_text('{"claims_per_s": 5}')
    with pytest.raises(BaselineError, match=r"no latency_ms, response_ms"):
        load_baseline(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report()))
    assert load_baseline(good) == report()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["loadgen", *argv])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--baseline", "{dir}/absent.json"], "cannot read it"),
        (["--baseline", "{dir}/bad.json"], "not JSON"),
        (["--baseline-margin", "5"], "--baseline-margin needs --baseline REPORT.json"),
        (["--fail-on-regression"], "--fail-on-regression needs --baseline REPORT.json"),
        (["--baseline", "{dir}/good.json", "--baseline-margin", "-1"], "--baseline-margin must be >= 0"),
    ],
)
def test_bad_baseline_flags_exit_2_before_anything_runs(tmp_path, capsys, extra, message):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "good.json").write_text(json.dumps(report()))
    argv = ["--target", "127.0.0.1:1", "--campaign", "c", *[a.format(dir=tmp_path) for a in extra]]
    code, out, err = run_cli(argv, capsys)
    assert code == loadgen.EXIT_ERROR
    assert err.startswith("loadgen: error: ") and err.count("\n") == 1 and message in err
    assert "cannot reach" not in err and out == ""  # it stopped before trying the target


# ------------------------------------------------------------ against a real node

SMALL = ["--create-campaign", "--inventory", "300", "--shards", "2", "--users", "1500",
         "--arrival", "burst", "--duration", "0.3", "--processes", "2", "--concurrency", "32",
         "--verify-sample", "50", "--no-progress", "--seed", "5"]  # fmt: skip


@pytest.mark.timeout(120)
def test_a_run_side_by_side_with_an_earlier_one(node, tmp_path, capsys):
    base_json, doctored_json = tmp_path / "base.json", tmp_path / "doctored.json"
    code, out, err = run_cli(["--target", node.address, *SMALL, "--json", str(base_json)], capsys)
    assert code == loadgen.EXIT_OK, out + err
    base = json.loads(base_json.read_text())

    # A baseline doctored to be much faster: this run is flagged, but does not fail without the flag.
    doctored = copy.deepcopy(base)
    doctored["claims_per_s"] = base["claims_per_s"] * 10
    doctored["response_ms"]["p99"] = base["response_ms"]["p99"] / 10
    doctored_json.write_text(json.dumps(doctored))
    second_json = tmp_path / "second.json"
    code, out, err = run_cli(["--target", node.address, *SMALL, "--baseline", str(doctored_json),
                              "--json", str(second_json)], capsys)  # fmt: skip
    assert code == loadgen.EXIT_OK, out + err
    assert f"compared with baseline {doctored_json}" in out
    flagged = [line for line in out.splitlines() if line.endswith("REGRESSION")]
    assert any(line.lstrip().startswith("claims/s ") for line in flagged)
    assert any(line.lstrip().startswith("response p99, ms ") for line in flagged)
    second = json.loads(second_json.read_text())
    section = second["baseline"]
    assert section["file"] == str(doctored_json) and section["margin_pct"] == 10.0
    throughput = next(r for r in section["rows"] if r["key"] == "claims_per_s")
    assert throughput["baseline"] == pytest.approx(doctored["claims_per_s"])
    assert throughput["current"] == pytest.approx(second["claims_per_s"])
    assert throughput["regression"] is True and throughput["better"] == "higher"
    p50 = next(r for r in section["rows"] if r["key"] == "latency_ms.p50")
    assert p50["baseline"] == base["latency_ms"]["p50"] and p50["current"] == second["latency_ms"]["p50"]
    cpu = next(r for r in section["rows"] if r["key"] == "front_cpu.per_million_claims")
    assert cpu["baseline"] is None and cpu["regression"] is False  # not measured (no --node-metrics)
    assert {"claims/s", "response p99, ms"} <= set(section["regressions"])
    assert second["ok"] is True and CHECK_NAME not in {c["name"] for c in second["checks"]}

    # With --fail-on-regression the same comparison fails the run (exit 1).
    third_json = tmp_path / "third.json"
    code, out, err = run_cli(["--target", node.address, *SMALL, "--baseline", str(doctored_json),
                              "--baseline-margin", "50", "--fail-on-regression", "--json", str(third_json)],
                             capsys)  # fmt: skip
    assert code == loadgen.EXIT_CHECK_FAILED, out + err
    assert "RESULT: FAIL (no regression vs baseline)" in out
    third = json.loads(third_json.read_text())
    assert third["baseline"]["margin_pct"] == 50.0 and third["failed"] == [CHECK_NAME]
