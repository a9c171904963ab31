"""The monitoring files in monitoring/ (docs/metrics.md, "Monitoring files") work with a real node.

- The alert rules pass `promtool check rules`, and their unit tests (alerts_test.yml, one scenario per
  rule, firing and quiet cases) pass `promtool test rules`; every rule has a `for:` and a summary, and
  fires in some test. The example prometheus.yml passes `promtool check config`.
- Every query of the Grafana dashboard parses (promtool checks them as recording rules), and its
  panels stay on the 24-column grid with one data source variable.
- Every metric the dashboard and the rules name is one a real node exports, with the labels the
  queries use: a node with --metrics-port 0 is scraped after a grant, a sell-out, an error, an
  admission drop and a redemption; the per-worker families come from a `serve --workers 2` node.

promtool comes from Debian's prometheus package (scripts/install-promtool.sh, run by the set-up). Without
it these tests fail, saying so: they are the only check that the shipped files load in Prometheus.

The rules file is read without a YAML library (none is installed): a small reader of the layout
alerts.yml keeps (`- alert:` items with `expr:` on one line or as a `|` block, `for:`, `summary:`), whose
count of rules must equal promtool's. Metric names are taken from PromQL by `promql_names`: strings,
`[...]` ranges and grouping clauses removed, an identifier followed by `(` is a function or an
aggregation, the few keywords are skipped, every other identifier is a metric. `up` is Prometheus's
own series for each scrape target, so it is never a node's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import LocalNode, create_campaign
from support import metrics_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
RULES_TEST = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"

# Series Prometheus makes itself for each scrape target, and labels it adds to every series.
SCRAPE_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Grafana's variables, given values that keep a query valid PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "claimcore", "$instance": ".*", "$campaign": ".*"}


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is not installed: run scripts/install-promtool.sh (Debian's prometheus "
                    "package brings it), as `make setup` does", pytrace=False)
    return found


def run_promtool(*args: str | Path, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------ reading the files


def rules() -> list[dict[str, str]]:
    """alerts.yml's rules: alert, expr, for and summary of each (the file's own layout, see above)."""
    found: list[dict[str, str]] = []
    lines = RULES.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            found.append({"alert": stripped.split(":", 1)[1].strip()})
        elif found and stripped.startswith(("expr:", "for:", "summary:")):
            key, _, value = stripped.partition(":")
            value = value.strip()
            if key == "expr" and value == "|":  # a block: the lines indented deeper than "expr:"
                indent = len(line) - len(line.lstrip())
                block = []
                while i + 1 < len(lines) and (not lines[i + 1].strip()
                                              or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent):
                    i += 1
                    block.append(lines[i].strip())
                value = " ".join(b for b in block if b)
            found[-1][key] = value.strip('"')
        i += 1
    return found


def dashboard() -> dict:  # type: ignore[type-arg]
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:  # type: ignore[type-arg]
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def dashboard_queries(board: dict) -> list[str]:  # type: ignore[type-arg]
    """The PromQL of every panel target and of every label_values() variable, Grafana variables filled."""
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, f"variable {variable['name']}: not a label_values(query, label): {query}"
            queries.append(inner.group(1))
    for i, query in enumerate(queries):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"an unknown Grafana variable in {query}"
        queries[i] = query
    return queries


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")


def promql_names(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(metric name -> label names its matchers use, label names of grouping clauses) in one query."""
    bare = STRING.sub('""', expr)
    metrics: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(bare):
        labels = {m.split("=")[0].split("!")[0].strip() for m in matchers.split(",") if m.strip()}
        metrics.setdefault(name, set()).update(labels)
    grouped = {label.strip() for _, labels in GROUPING.findall(bare) for label in labels.split(",")
               if label.strip()}
    bare = GROUPING.sub(" ", re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare))
    for name, call in IDENTIFIER.findall(bare):
        if not call and name not in KEYWORDS:
            metrics.setdefault(name, set())
    return metrics, grouped


# ------------------------------------------------------------------ the rules


def test_the_rules_pass_promtool_check_and_have_a_for_and_a_summary():
    done = run_promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    counted = re.search(r"SUCCESS: (\d+) rules found", done.stdout)
    assert counted, done.stdout
    found = rules()
    assert len(found) == int(counted.group(1)), f"the reader found {[r['alert'] for r in found]}"
    assert {r["alert"] for r in found} == {"ClaimcoreNodeDown", "ClaimcoreRedisDown", "ClaimcoreShedding",
                                          "ClaimcoreErrorRatio", "ClaimcoreStockRunningOut"}
    for rule in found:
        assert rule.get("expr"), rule
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{rule['alert']}: no for:"
        assert rule.get("summary"), f"{rule['alert']}: no summary annotation"


def test_the_rules_unit_tests_pass_and_cover_every_rule():
    done = run_promtool("test", "rules", RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    text = RULES_TEST.read_text()
    for rule in rules():
        name = rule["alert"]
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels:", text), \
            f"{name} never fires in {RULES_TEST.name}"
        assert re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", text), \
            f"{name} is never shown quiet in {RULES_TEST.name}"


def test_the_rules_unit_tests_can_fail(tmp_path):
    """A rule that no longer fires when it should fails promtool test rules."""
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("claimcore_redis_up == 0",
                                                                 "claimcore_redis_up == 2"))
    done = run_promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "ClaimcoreRedisDown" in done.stdout + done.stderr


def test_the_example_prometheus_config_loads_the_rules():
    done = run_promtool("check", "config", PROMETHEUS_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout
    assert 'job_name: claimcore' in PROMETHEUS_CONFIG.read_text()  # the job ClaimcoreNodeDown matches


# ------------------------------------------------------------------ the dashboard


def test_every_dashboard_query_parses(tmp_path):
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 25
    checked = tmp_path / "dashboard_queries.yml"
    checked.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query_{i}\n        expr: {json.dumps(query)}\n"
        for i, query in enumerate(queries)))
    done = run_promtool("check", "rules", checked)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_the_dashboard_is_one_grafana_can_import():
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        place = panel["gridPos"]
        assert panel["title"] and 0 <= place["x"] and place["x"] + place["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            targets = panel["targets"]
            assert targets and all(t["expr"] and t["refId"] for t in targets), panel["title"]
    # What an operator looks for on launch day is there.
    used = {name for q in dashboard_queries(board) for name in promql_names(q)[0]}
    assert {"claimcore_claims_total", "claimcore_stock_remaining_vouchers", "claimcore_granted_vouchers",
            "claimcore_sold_out_seconds", "claimcore_claim_seconds_bucket", "grpc_server_handled_total",
            "claimcore_redis_up", "claimcore_admission_drops_total", "process_cpu_seconds_total",
            "process_resident_memory_bytes", "claimcore_worker_cpu_seconds_total",
            "claimcore_worker_resident_memory_bytes", "up"} <= used


def test_promql_names_finds_metrics_and_not_functions_labels_or_keywords():
    metrics, grouped = promql_names(
        'histogram_quantile(0.99, sum by (le, method) (rate(claimcore_claim_seconds_bucket{job=~"a|b"}[1m])))'
        ' / on (job) group_left sum without (x) (up offset 5m) > bool 1e3 and other_series')
    assert metrics == {"claimcore_claim_seconds_bucket": {"job"}, "up": set(), "other_series": set()}
    assert grouped == {"le", "method", "job", "x"}


# ------------------------------------------------------------------ against a real node


def scrape(port: int) -> dict[str, set[str]]:
    """Every sample name a node's /metrics exports (a family with no sample: its names by its type),
    with the label names seen on it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            exported.setdefault(family.name + suffix, set())
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported




@pytest.fixture(scope="module")
def exported(redis_server):  # type: ignore[no-untyped-def]
    """What a node exports after a grant, a sell-out, an error, an admission drop and a redemption,
    joined with what a `serve --workers 2` node adds."""
    node = LocalNode(redis_server.url, "--metrics-port", "0", "--recycle-every-s", "0").start()
    try:
        port = metrics_port(node)
        token = uuid.uuid4().hex[:8]
        with grpc.insecure_channel(node.address) as ch:
            admin, claims = pb_grpc.AdminServiceStub(ch), pb_grpc.ClaimServiceStub(ch)
            redeem = pb_grpc.RedeemServiceStub(ch)
            cid = create_campaign(admin, inventory=1, shards=1, value_cents=1000).campaign.campaign_id
            outcomes = [claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"u-{token}-{i}",
                                                     request_id="r"), timeout=10) for i in range(2)]
            assert [o.outcome for o in outcomes] == [pb.OUTCOME_GRANTED, pb.OUTCOME_SOLD_OUT]
            with pytest.raises(grpc.RpcError) as err:
                claims.Claim(pb.ClaimRequest(campaign_id=cid, user_id="bad user!", request_id="r"),
                             timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            slow = create_campaign(admin, inventory=100, shards=1, admission_rate=1).campaign.campaign_id
            details = [claims.Claim(pb.ClaimRequest(campaign_id=slow, user_id=f"s-{token}-{i}",
                                                    request_id="r"), timeout=10).detail for i in range(6)]
            assert "admission rate exceeded" in details
            admin.RegisterMerchant(pb.RegisterMerchantRequest(merchant=pb.Merchant(
                campaign_id=cid, merchant_id="m1")), timeout=10)
            redeemed = redeem.Redeem(pb.RedeemRequest(
                campaign_id=cid, user_id=f"u-{token}-0", voucher_ids=[outcomes[0].voucher.voucher_id],
                merchant_id="m1", order_id="o1", order_amount_cents=5000), timeout=10)
            assert redeemed.outcome == pb.REDEEM_OUTCOME_REDEEMED
        # The stock gauges are sampled about once a second: wait for the sell-out to show.
        assert wait_for(lambda: bool(scrape(port).get("claimcore_sold_out_seconds")), 15)
        single = scrape(port)
    finally:
        node.stop()

    workers = LocalNode(redis_server.url, "--workers", "2", "--metrics-port", "0",
                        "--recycle-every-s", "0").start()
    try:
        port = metrics_port(workers)
        with grpc.insecure_channel(workers.address) as ch:
            pb_grpc.ClaimServiceStub(ch).Claim(pb.ClaimRequest(campaign_id=cid, user_id=f"w-{token}",
                                                               request_id="r"), timeout=10)
        merged = scrape(port)
    finally:
        workers.stop()
    return single, merged


def test_every_metric_the_dashboard_and_rules_use_is_exported(exported):
    single, merged = exported
    # serve --workers exports everything a single node does, and its per-worker families.
    assert set(single) <= set(merged), sorted(set(single) - set(merged))
    worker_only = set(merged) - set(single)
    assert worker_only == {"claimcore_worker_claims_total", "claimcore_worker_info",
                           "claimcore_worker_cpu_seconds_total", "claimcore_worker_resident_memory_bytes"}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
            "grpc_server_handling_seconds_sum", "grpc_server_handling_seconds_count"} <= set(single)

    # The labels seen on each name, on either node (the workers node made only one claim).
    seen = {name: single.get(name, set()) | labels for name, labels in merged.items()}
    queries = dashboard_queries(dashboard()) + [rule["expr"] for rule in rules()]
    missing, unlabelled = [], []
    for query in queries:
        metrics, grouped = promql_names(query)
        known_labels = set(TARGET_LABELS)
        for name, labels in metrics.items():
            if name in SCRAPE_SERIES:
                continue
            if name not in seen:
                missing.append((name, query))
                continue
            known_labels |= seen[name]
            unknown = labels - seen[name] - TARGET_LABELS
            if unknown:
                unlabelled.append((name, sorted(unknown), query))
        if grouped - known_labels:
            unlabelled.append(("by/on", sorted(grouped - known_labels), query))
    assert not missing, f"not exported by a node: {missing}"
    assert not unlabelled, f"labels no exported series has: {unlabelled}"
