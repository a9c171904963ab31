"""`claimcore dashboard` (docs/dashboard.md): the live page in a real headless Chromium, against a real
redis-server and a real front node; its TLS and API key; its Prometheus parser and percentiles.

Chromium and ChromeDriver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver), installed by
`make setup` (scripts/install-chromium.sh); selenium drives them with the driver's path given, so nothing
is downloaded. The page's screenshot at the end of the launch is kept in artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.local_node import PACKAGE_ROOT, LocalNode
from claimcore.ops.dashboard import prometheus as m
from claimcore.security.access import Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import new_campaign_id

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
WAIT_S = 60.0  # generous: what is checked is what the page shows, never how fast


# ---------------------------------------------------------------- helpers


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMCORE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Dashboard:
    """`python -m claimcore.ops.dashboard --port 0 ...` as a child process; `url` from its first line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile(prefix="claimcore-dashboard-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "claimcore.ops.dashboard", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, env=env or child_env())
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if not found:
            self.stop()
            raise AssertionError(f"the dashboard did not say where it serves: {line!r}\n{self.stderr()}")
        self.url = found.group(1)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def snapshot(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "snapshot", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            return json.load(resp)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def claim_users(claims: pb_grpc.ClaimServiceStub, campaign_id: str, users: range) -> list[int]:
    """One ClaimBatch per 100 distinct users; the outcomes, in order."""
    outcomes: list[int] = []
    ids = list(users)
    for i in range(0, len(ids), 100):
        reply = claims.ClaimBatch(pb.ClaimBatchRequest(claims=[
            pb.ClaimRequest(campaign_id=campaign_id, user_id=f"user-{u}", request_id=f"req-{u}")
            for u in ids[i:i + 100]]), timeout=30)
        outcomes += [r.outcome for r in reply.replies]
    return outcomes


def serve_supports_metrics_port() -> bool:
    """Whether `claimcore serve` has --metrics-port yet (the nodes' Prometheus endpoint)."""
    out = subprocess.run([sys.executable, "-m", "claimcore", "serve", "--help"], capture_output=True,
                         text=True, env=child_env(), timeout=60)
    return "--metrics-port" in out.stdout


def browser(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("Chromium and ChromeDriver are missing: run `make setup` (scripts/install-chromium.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1920,1080", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


# What the page shows, read in the page (no element handles: the page updates under our feet).
READ_CARD = """
const card = document.querySelector('[data-campaign="' + arguments[0] + '"]');
if (!card) return null;
const out = {};
card.querySelectorAll('[data-field]').forEach(e => {
  out[e.getAttribute('data-field')] = {text: e.textContent, value: e.getAttribute('data-value')};
});
out.shards = Array.from(card.querySelectorAll('[data-shard]')).map(
  b => [Number(b.getAttribute('data-shard')), Number(b.getAttribute('data-remaining'))]);
return out;
"""
READ_PAGE = """
const text = sel => (document.querySelector(sel) || {}).textContent || '';
return {
  updates: window.__dash ? window.__dash.updates : 0,
  marker: window.__marker || null,
  live: text('#live'),
  latency: text('#p-latency'), outcomes: text('#p-outcomes'), rejections: text('#p-rejections'),
  nodes: Array.from(document.querySelectorAll('#p-nodes [data-target]')).map(
    e => [e.getAttribute('data-target'), e.getAttribute('data-status')]),
  redis: Array.from(document.querySelectorAll('#p-nodes [data-redis]')).map(
    e => e.getAttribute('data-redis')),
  kpi_granted: document.querySelector('#k-granted').getAttribute('data-value'),
  kpi_remaining: document.querySelector('#k-remaining').getAttribute('data-value'),
};
"""
# Every granted figure and grants/s figure the card shows, as it changes (kept in the page).
RECORD = """
const card = document.querySelector('[data-campaign="' + arguments[0] + '"]');
window.__seen = {granted: [], rate: []};
const g = card.querySelector('[data-field="granted"]'), r = card.querySelector('[data-field="claims_per_s"]');
new MutationObserver(() => {
  window.__seen.granted.push(g.getAttribute('data-value'));
  window.__seen.rate.push(r.getAttribute('data-value'));
}).observe(card, {subtree: true, attributes: true, childList: true, characterData: true});
"""


def card_once(driver: Any, campaign_id: str, status: str) -> dict[str, Any]:
    """The campaign's card as the page shows it, once it shows `status`."""

    def probe() -> Any:
        card = driver.execute_script(READ_CARD, campaign_id)
        return card if card and card["status"]["value"] == status else None

    return wait_for(f"{status} on the page", probe)


# ---------------------------------------------------------------- the page, in Chromium


@pytest.fixture(scope="module")
def launch_node() -> Iterator[tuple[LocalNode, str | None]]:
    """A redis-server and a node of this module's own (so "every campaign" is this module's only);
    with its Prometheus endpoint if `claimcore serve` has --metrics-port."""
    with EmbeddedRedis() as redis_server:
        metrics_url = None
        extra: list[str] = []
        if serve_supports_metrics_port():
            port = free_port()
            extra = ["--metrics-port", str(port)]
            metrics_url = f"http://127.0.0.1:{port}/metrics"
        node = LocalNode(redis_server.url, *extra).start()
        try:
            yield node, metrics_url
        finally:
            node.stop()


def test_the_page_follows_a_launch_live_to_sold_out(launch_node, tmp_path):  # type: ignore[no-untyped-def]
    node, metrics_url = launch_node
    inventory, first_wave, crowd = 1200, 500, 1500
    channel = grpc.insecure_channel(node.address)
    admin, claims = pb_grpc.AdminServiceStub(channel), pb_grpc.ClaimServiceStub(channel)
    cid = new_campaign_id("dash")
    admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
        campaign_id=cid, name="Spring appliance subsidy", inventory=inventory, shards=4)), timeout=10)

    dead = f"127.0.0.1:{free_port()}"  # a node that does not answer: shown as such, figures still come
    args = ["--target", f"{dead},{node.address}", "--every-s", "0.25"]
    if metrics_url:
        args += ["--metrics", metrics_url]
    dash = Dashboard(*args)
    driver = None
    try:
        driver = browser(tmp_path / "profile")
        driver.get(dash.url)

        # The first snapshot: the campaign as created, every voucher left, stock spread over 4 shards.
        card = wait_for("the campaign's card", lambda: driver.execute_script(READ_CARD, cid))
        assert card["name"]["text"] == "Spring appliance subsidy"
        assert card["inventory"]["value"] == str(inventory) and card["inventory"]["text"] == "1,200"
        assert card["remaining"]["value"] == str(inventory) and card["remaining"]["text"] == "1,200"
        assert card["granted"]["value"] == "0"
        assert card["status"]["value"] == "OPEN"
        assert card["time_to_sold_out"]["value"] == ""  # not sold out: no time to sold out yet
        assert sorted(s for s, _ in card["shards"]) == [0, 1, 2, 3]
        assert sum(r for _, r in card["shards"]) == inventory
        page = driver.execute_script(READ_PAGE)
        assert page["updates"] >= 1 and page["live"] == "LIVE"
        assert dict(page["nodes"]) == {node.address: "SERVING", dead: "UNREACHABLE"}
        assert "up" in page["redis"]
        if metrics_url is None:  # without the nodes' metrics, the panels that need them say so
            for panel in ("latency", "outcomes", "rejections"):
                assert "needs the nodes' metrics" in page[panel]
            assert "needs --metrics" in card["first_redemption"]["text"]

        driver.execute_script("window.__marker = 'same page';")  # gone if the page reloads
        driver.execute_script(RECORD, cid)
        updates_before = page["updates"]

        # A first wave: the figures move on the page without a reload, and grants/s shows them.
        outcomes = claim_users(claims, cid, range(first_wave))
        assert outcomes == [pb.GRANTED] * first_wave

        def after_first_wave() -> Any:
            c = driver.execute_script(READ_CARD, cid)
            return c if (c["granted"]["value"] == str(first_wave)
                         and c["remaining"]["value"] == str(inventory - first_wave)) else None

        card = wait_for("the first wave on the page", after_first_wave)
        assert card["granted"]["text"] == "500" and card["remaining"]["text"] == "700"
        assert sum(r for _, r in card["shards"]) == inventory - first_wave
        wait_for("grants per second above 0", lambda: any(
            v and float(v) > 0 for v in driver.execute_script("return window.__seen.rate")))

        # The crowd: more users than vouchers left, from 4 threads at once, until sold out.
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def wave(part: int) -> None:
            try:
                results.append(claim_users(claims, cid, range(first_wave + part, first_wave + crowd, 4)))
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=wave, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        flat = [o for r in results for o in r]
        assert flat.count(pb.GRANTED) == inventory - first_wave
        assert flat.count(pb.SOLD_OUT) == crowd - (inventory - first_wave)

        info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10)
        assert info.remaining == 0 and info.granted == inventory and info.sold_out_at_ms > 0
        expected_ttso = (info.sold_out_at_ms - max(info.created_at_ms, info.campaign.starts_at_ms)) / 1000

        card = card_once(driver, cid, "SOLD_OUT")
        assert card["status"]["text"] == "SOLD OUT"
        assert card["remaining"]["value"] == "0" and card["granted"]["value"] == str(inventory)
        assert card["granted"]["text"] == "1,200"
        assert all(r == 0 for _, r in card["shards"])
        assert math.isclose(float(card["time_to_sold_out"]["value"]), expected_ttso, abs_tol=1e-6)
        assert re.fullmatch(r"\d+\.\d+ s|\d+ min \d+ s|\d+ h \d+ min \d+ s", card["time_to_sold_out"]["text"])
        assert card["sold_out_at"]["value"] == str(info.sold_out_at_ms)
        seen = driver.execute_script("return window.__seen")
        assert str(first_wave) in seen["granted"] and str(inventory) in seen["granted"]

        page = driver.execute_script(READ_PAGE)
        assert page["marker"] == "same page"  # all of the above came over the event stream: no reload
        assert page["updates"] > updates_before
        assert page["kpi_granted"] == str(inventory) and page["kpi_remaining"] == "0"

        # /snapshot says the same as the node.
        snap = dash.snapshot()
        (mine,) = [c for c in snap["campaigns"] if c["id"] == cid]
        assert (mine["inventory"], mine["granted"], mine["remaining"]) == (inventory, inventory, 0)
        assert mine["sold_out_at_ms"] == info.sold_out_at_ms
        assert sorted((s["shard"], s["remaining"], s["granted"]) for s in mine["shards"]) == sorted(
            (s.shard, s.remaining, s.granted) for s in info.shards)
        assert mine["peak_claims_per_s"] > 0

        if metrics_url:  # the node serves Prometheus figures: the panels that need them show them
            sold_out = crowd - (inventory - first_wave)

            def counted() -> Any:  # the node's counters and the dashboard's scrape may lag a tick
                mx = dash.snapshot()["metrics"]
                by_outcome = {o["outcome"]: o["total"] for o in mx.get("outcomes") or ()}
                return mx if by_outcome.get("sold_out") == sold_out else None

            mx = wait_for("every outcome in the nodes' metrics", counted)
            by_outcome = {o["outcome"]: o["total"] for o in mx["outcomes"]}
            assert by_outcome["granted"] == inventory and by_outcome["already_claimed"] == 0
            assert {r["reason"]: r["total"] for r in mx["rejections"]}["sold_out"] == sold_out
            latency = {row["method"]: row for row in mx["latency"]}
            batches = math.ceil(first_wave / 100) + 4 * math.ceil(crowd / 4 / 100)  # one per call
            assert latency["ClaimBatch"]["count"] == batches
            assert 0 < latency["ClaimBatch"]["total"]["p50"] <= latency["ClaimBatch"]["total"]["p99"]
            assert mine["first_redemption"] == {"state": "none_yet"}
            page = wait_for("the metrics panels", lambda: (lambda p: p if "sold out" in p["outcomes"]
                                                           else None)(driver.execute_script(READ_PAGE)))
            assert re.search(r"p99\.9ClaimBatch( \*)?([\d.]+ (ms|µs)){4}", page["latency"]), page["latency"]
            assert "sold out" in page["rejections"]

            # The same launch on a dashboard without --metrics: the figures, and "—" where metrics are needed.
            bare = Dashboard("--target", node.address, "--every-s", "0.25")
            try:
                main_tab = driver.current_window_handle
                driver.switch_to.new_window("tab")
                driver.get(bare.url)
                card = card_once(driver, cid, "SOLD_OUT")
                assert card["remaining"]["value"] == "0" and card["time_to_sold_out"]["value"]
                assert card["first_redemption"]["text"] == "— needs --metrics"
                page = driver.execute_script(READ_PAGE)
                for panel in ("latency", "outcomes", "rejections"):
                    assert "— needs the nodes' metrics" in page[panel]
                assert bare.snapshot()["metrics"]["available"] is False
                driver.close()
                driver.switch_to.window(main_tab)
            finally:
                assert bare.stop() == 0

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # a 1080p screen, whatever the window
                               {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
        n = driver.execute_script("return window.__dash.updates")
        wait_for("a redraw", lambda: driver.execute_script("return window.__dash.updates") >= n + 2)
        assert driver.save_screenshot(str(shot))
        png = shot.read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert (width, height) == (1920, 1080)
    finally:
        if driver is not None:
            driver.quit()
        code = dash.stop()
        channel.close()
    assert code == 0, dash.stderr()  # SIGTERM stops it cleanly


# ---------------------------------------------------------------- a secured node: TLS and the admin key


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def keygen_admin() -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "claimcore", "keygen", "--admin"], check=True,
                         capture_output=True, text=True, env=child_env()).stdout.splitlines()
    return out[1], out[3]  # the key, its digest line for the credentials file


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_secured_node_is_read_over_tls_with_the_admin_key(tmp_path: Path) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=dashboard CA", cwd=tmp_path)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server", cwd=tmp_path)
    (tmp_path / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=tmp_path)
    key, digest = keygen_admin()
    (tmp_path / "credentials.toml").write_text(f"[admin]\n{digest}\n")
    ca = str(tmp_path / "ca.pem")
    reach = Access(api_key=key, ca=ca)
    with EmbeddedRedis() as redis_server:
        node = LocalNode(redis_server.url, "--tls-cert", str(tmp_path / "server.pem"),
                         "--tls-key", str(tmp_path / "server.key"),
                         "--credentials", str(tmp_path / "credentials.toml"), reach=reach).start()
        try:
            cid = new_campaign_id("dash")
            with reach.channel(node.address) as ch:
                pb_grpc.AdminServiceStub(ch).CreateCampaign(pb.CreateCampaignRequest(
                    campaign=pb.Campaign(campaign_id=cid, inventory=77, shards=2)), timeout=10)
            common = ["--target", node.address, "--campaign", cid, "--every-s", "0.2", "--tls-ca", ca]

            # The admin key from the environment, as on launch day: the figures come.
            dash = Dashboard(*common, env=child_env(CLAIMCORE_API_KEY=key))
            try:
                snap = wait_for("the figures", lambda: (lambda s: s if s["campaigns"][0].get("inventory")
                                                        else None)(dash.snapshot()), 30)
                (c,) = snap["campaigns"]
                assert (c["id"], c["inventory"], c["remaining"], c["error"]) == (cid, 77, 77, None)
                assert snap["nodes"][0]["status"] == "SERVING"
            finally:
                assert dash.stop() == 0

            # No key: the node refuses, and the page says what is missing instead of showing figures.
            dash = Dashboard(*common)
            try:
                snap = dash.snapshot()
                (c,) = snap["campaigns"]
                assert "inventory" not in c and "UNAUTHENTICATED" in c["error"] and "--api-key" in c["error"]
                assert any("UNAUTHENTICATED" in e for e in snap["errors"])
            finally:
                assert dash.stop() == 0
        finally:
            node.stop()


def test_bad_flags_exit_2() -> None:
    for args in (["--every-s", "0"], ["--metrics", "ftp://x/metrics"], ["--tls-cert", "c.pem"]):
        out = subprocess.run([sys.executable, "-m", "claimcore.ops.dashboard", *args], capture_output=True,
                             text=True, env=child_env(), timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("claimcore dashboard: ")


# ---------------------------------------------------------------- the Prometheus figures


EXPOSITION = """\
# HELP claimcore_claims_total Claims answered, by campaign and outcome.
# TYPE claimcore_claims_total counter
claimcore_claims_total{campaign="a",outcome="granted"} 90
claimcore_claims_total{campaign="a",outcome="sold_out"} 10
claimcore_claims_total{campaign="b",outcome="granted"} 5
claimcore_claim_seconds_bucket{method="Claim",le="0.001"} 50
claimcore_claim_seconds_bucket{method="Claim",le="0.01"} 90
claimcore_claim_seconds_bucket{method="Claim",le="0.1"} 100
claimcore_claim_seconds_bucket{method="Claim",le="+Inf"} 100
claimcore_claim_seconds_count{method="Claim"} 100
claimcore_redis_up 1
claimcore_info{version="0.1.0",note="a \\"quoted\\" \\\\ value"} 1 1700000000000
this line is not a sample
"""


def test_the_text_format_is_parsed() -> None:
    samples = {(name, labels): value for name, labels, value in m.parse_text(EXPOSITION)}
    assert samples[("claimcore_claims_total", (("campaign", "a"), ("outcome", "granted")))] == 90
    assert samples[("claimcore_claim_seconds_bucket", (("le", "+Inf"), ("method", "Claim")))] == 100
    assert samples[("claimcore_redis_up", ())] == 1
    assert samples[("claimcore_info", (("note", 'a "quoted" \\ value'), ("version", "0.1.0")))] == 1
    assert len(samples) == 10  # the comments and the malformed line are skipped


def test_percentiles_follow_prometheus_histogram_quantile() -> None:
    buckets = [(0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (math.inf, 100.0)]
    assert m.quantile(0.5, buckets) == pytest.approx(0.001)
    assert m.quantile(0.7, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert m.quantile(0.95, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert m.quantile(0.999, [(0.1, 10.0), (math.inf, 20.0)]) == 0.1  # in +Inf: the highest finite bound
    assert m.quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert m.quantile(0.5, [(0.1, 3.0)]) is None  # no +Inf bucket: not a histogram


def test_counters_add_up_across_nodes_and_survive_a_restart() -> None:
    state = m.MetricsState()
    state.observe("n1", m.parse_text(EXPOSITION), 100.0)
    state.observe("n2", m.parse_text(EXPOSITION), 100.0)
    later = EXPOSITION.replace('outcome="granted"} 90', 'outcome="granted"} 120')
    state.observe("n1", m.parse_text(later), 101.0)
    restarted = 'claimcore_claims_total{campaign="a",outcome="granted"} 4\n'
    state.observe("n2", m.parse_text(restarted), 101.0)
    where = {"campaign": {"a"}}
    assert m.by_label(state.totals(), m.CLAIMS, "outcome", where) == {"granted": 124.0, "sold_out": 10.0}
    recent, span = state.window(10, 101.0)
    assert m.by_label(recent, m.CLAIMS, "outcome", where) == {"granted": 30.0 + 4.0}
    assert span == 1.0  # from the scrapes before
    hist = m.histograms(state.totals(), m.CLAIM_SECONDS, "method")
    assert hist["Claim"][-1] == (math.inf, 100.0)  # n1 only: the restarted n2 has no buckets now
