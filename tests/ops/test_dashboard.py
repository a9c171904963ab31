"""`claimcore dashboard` (docs/dashboard.md): the live page in a real headless Chromium, against a real
redis-server and a real front node; its TLS and API key; its Prometheus parser and percentiles.

Chromium and ChromeDriver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver), installed by
`make setup` (scripts/install-chromium.sh); selenium drives them with the driver's path given, so nothing
is downloaded. The page's screenshots at 1920x1080 (the launch open, then sold out) are kept in the test's
tmp_path and copied to artifacts/dashboard/.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from claimcore.harness.embedded_redis import EmbeddedRedis, free_port
from claimcore.harness.local_node import PACKAGE_ROOT, LocalNode
from claimcore.ops.dashboard import prometheus as m
from claimcore.ops.dashboard.collector import Collector
from claimcore.ops.dashboard.web import DASHBOARD, start
from claimcore.security.access import Access
from claimcore.v1 import claims_pb2 as pb
from claimcore.v1 import claims_pb2_grpc as pb_grpc
from conftest import new_campaign_id

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
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
  nodes_text: text('#p-nodes'),
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


def create(admin: pb_grpc.AdminServiceStub, prefix: str, name: str, inventory: int, shards: int,
           **fields: Any) -> str:
    cid = new_campaign_id(prefix)
    admin.CreateCampaign(pb.CreateCampaignRequest(campaign=pb.Campaign(
        campaign_id=cid, name=name, inventory=inventory, shards=shards, **fields)), timeout=10)
    return cid


def first_grant_ms(admin: pb_grpc.AdminServiceStub, campaign_id: str) -> int:
    """The earliest grant in the campaign's whole ledger, read page by page."""
    cursor, firsts = "", []
    while True:
        page = admin.ExportEvents(pb.ExportEventsRequest(campaign_id=campaign_id, cursor=cursor,
                                                         limit=10_000), timeout=30)
        firsts += [e.at_ms for e in page.events if e.kind == "grant"]
        cursor = page.next_cursor
        if not page.more:
            return min(firsts)


def exported_names(text: str) -> set[str]:
    """The sample names a node's /metrics has or declares (a labelled counter not yet counted has its
    HELP and TYPE lines, no sample)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in {"counter": ("_total",), "histogram": ("_bucket",)}.get(
            family.type, ())}
        names.add(family.name)
    return names


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A 1920x1080 PNG of the page, in tmp_path and copied to artifacts/dashboard/ for a person."""
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1920, 1080)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot


# Where each card is on the screen, and what the header and panels say (read in the page).
READ_LAYOUT = """
const box = e => { const r = e.getBoundingClientRect();
                   return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
const lat = document.querySelector('#p-latency');
const table = lat.querySelector('table');
return {
  viewport: [window.innerWidth, window.innerHeight],
  scrolls: document.documentElement.scrollHeight > window.innerHeight,
  cards: Array.from(document.querySelectorAll('#campaigns [data-campaign]')).map(
    c => [c.getAttribute('data-campaign'), box(c)]),
  scope: document.querySelector('#scope').textContent,
  rate_labels: Array.from(document.querySelectorAll('header .kpi .label')).map(e => e.textContent),
  outcome_heads: Array.from(document.querySelectorAll('#p-outcomes th')).map(e => e.textContent),
  latency_where: (document.querySelector('#latency-where') || {}).textContent || '',
  latency_heads: Array.from(lat.querySelectorAll('th')).map(e => [e.textContent, box(e)]),
  latency_panel: box(lat),
  latency_table_fits: table ? table.scrollWidth <= table.parentNode.clientWidth : null,
};
"""


def inside(box: dict[str, float], width: float, height: float) -> bool:
    return box["left"] >= 0 and box["top"] >= 0 and box["right"] <= width and box["bottom"] <= height


def test_the_page_puts_the_launch_on_screen_live_to_sold_out(launch_node, tmp_path):  # type: ignore[no-untyped-def]
    """Four campaigns (two rehearsals sold out earlier, one for tomorrow, today's launch) on a 1920x1080
    screen: the launch's card is first and fully visible, its figures move through the burst, the header
    covers the live campaigns only, and the time to sold out counts from its first claim."""
    node, metrics_url = launch_node
    inventory, first_wave, second_wave, crowd = 1200, 500, 300, 1500
    before_crowd = first_wave + second_wave
    channel = grpc.insecure_channel(node.address)
    admin, claims = pb_grpc.AdminServiceStub(channel), pb_grpc.ClaimServiceStub(channel)
    # Today's launch first and named to sort last: neither creation nor the alphabet puts it first.
    cid = create(admin, "zz-launch", "Spring appliance subsidy", inventory, 4)
    launch_created_ms = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid),
                                          timeout=10).campaign.created_at_ms
    rehearsals = [create(admin, "a-rehearsal", f"Rehearsal {n}", 100 * n, 2) for n in (1, 2)]
    for n, rid in enumerate(rehearsals, 1):  # sold out before the dashboard starts
        assert claim_users(claims, rid, range(100 * n + 20)).count(pb.OUTCOME_SOLD_OUT) == 20
    tomorrow = create(admin, "b-tomorrow", "Tomorrow's dining vouchers", 5000, 2,
                      starts_at_ms=int(time.time() * 1000) + 2 * 3600 * 1000)

    dead = f"127.0.0.1:{free_port()}"  # a node that does not answer: shown as such, figures still come
    args = ["--target", f"{dead},{node.address}", "--every-s", "0.25"]
    dead_metrics = f"http://127.0.0.1:{free_port()}/metrics"  # an endpoint that does not answer either
    if metrics_url:
        args += ["--metrics", f"{metrics_url},{dead_metrics}"]
    dash = Dashboard(*args)
    driver = None
    try:
        driver = browser(tmp_path / "profile")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # a 1080p screen, whatever the window
                               {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})

        # The launch starts (its first claim is well after its creation: the clock starts there).
        time.sleep(0.3)
        assert claim_users(claims, cid, range(first_wave)) == [pb.OUTCOME_GRANTED] * first_wave
        wait_for("the first wave in the dashboard", lambda: [
            c for c in dash.snapshot()["campaigns"] if c["id"] == cid and c["granted"] == first_wave])

        # A page opened mid-burst shows figures at once: with the event stream blocked, the snapshot the
        # page came with is on screen, and the page says LIVE (never a blank CONNECTING frame).
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/events"]})
        driver.get(dash.url)
        card = driver.execute_script(READ_CARD, cid)
        assert card is not None and card["granted"]["value"] == str(first_wave)
        assert card["remaining"]["text"] == f"{inventory - first_wave:,}"
        page = driver.execute_script(READ_PAGE)
        assert page["updates"] == 1 and page["live"] == "LIVE"
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        driver.get(dash.url)
        wait_for("updates over the event stream",
                 lambda: driver.execute_script("return window.__dash.updates") >= 3)

        # Launch order, all four cards on the screen, the launch's fully visible.
        layout = driver.execute_script(READ_LAYOUT)
        assert layout["viewport"] == [1920, 1080]
        order = [c for c, _ in layout["cards"]]
        assert order == [cid, tomorrow, rehearsals[1], rehearsals[0]]  # live by start; then latest first
        for campaign_id, box in layout["cards"]:
            assert inside(box, 1920, 1080), (campaign_id, box)
        assert not layout["scrolls"]
        # The header covers the open campaign: not the rehearsals' 300 grants, not tomorrow's 5,000 vouchers.
        page = driver.execute_script(READ_PAGE)
        assert page["kpi_granted"] == str(first_wave)
        assert page["kpi_remaining"] == str(inventory - first_wave)
        assert layout["scope"] == "header and outcomes: Spring appliance subsidy"
        assert [t.lower() for t in layout["rate_labels"]].count("granted / s") == 1  # one granted-per-second
        assert "node-side" in layout["latency_where"] and "claimcore_claim_seconds" in layout["latency_where"]
        card = driver.execute_script(READ_CARD, cid)
        assert card["status"]["value"] == "OPEN"
        assert card["name"]["text"] == "Spring appliance subsidy"
        assert sorted(s for s, _ in card["shards"]) == [0, 1, 2, 3]
        assert sum(r for _, r in card["shards"]) == inventory - first_wave
        assert dict(page["nodes"]) == {node.address: "SERVING", dead: "UNREACHABLE"}
        assert "up" in page["redis"]
        if metrics_url:
            assert f"metrics {metrics_url}: ok" in page["nodes_text"]
            assert f"metrics {dead_metrics}: down (ClientConnectorError" in page["nodes_text"]

        driver.execute_script("window.__marker = 'same page';")  # gone if the page reloads
        driver.execute_script(RECORD, cid)
        updates_before = page["updates"]

        # The burst goes on: the card's figures move on the page, without a reload.
        assert claim_users(claims, cid, range(first_wave, before_crowd)) == [pb.OUTCOME_GRANTED] * second_wave

        def after_second_wave() -> Any:
            c = driver.execute_script(READ_CARD, cid)
            return c if (c["granted"]["value"] == str(before_crowd)
                         and c["remaining"]["value"] == str(inventory - before_crowd)) else None

        card = wait_for("the second wave on the page", after_second_wave)
        assert card["granted"]["text"] == "800" and card["remaining"]["text"] == "400"
        wait_for("grants per second above 0", lambda: any(
            v and float(v) > 0 for v in driver.execute_script("return window.__seen.rate")))
        page = driver.execute_script(READ_PAGE)
        assert page["kpi_granted"] == str(before_crowd)
        screenshot(driver, tmp_path, "launch-mid-burst.png")

        # The crowd: more users than vouchers left, from 4 threads at once, until sold out.
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def wave(part: int) -> None:
            try:
                results.append(claim_users(claims, cid, range(before_crowd + part, before_crowd + crowd, 4)))
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=wave, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        flat = [o for r in results for o in r]
        assert flat.count(pb.OUTCOME_GRANTED) == inventory - before_crowd
        assert flat.count(pb.OUTCOME_SOLD_OUT) == crowd - (inventory - before_crowd)

        info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
        assert info.remaining == 0 and info.granted == inventory and info.sold_out_at_ms > 0
        first_claim = first_grant_ms(admin, cid)
        assert first_claim >= launch_created_ms + 300
        expected_ttso = (info.sold_out_at_ms - first_claim) / 1000

        card = card_once(driver, cid, "SOLD_OUT")
        assert card["status"]["text"] == "SOLD OUT"
        assert card["remaining"]["value"] == "0" and card["granted"]["value"] == str(inventory)
        assert card["granted"]["text"] == "1,200"
        assert all(r == 0 for _, r in card["shards"])
        # From the first claim, not from the creation (which is at least 0.3 s earlier).
        assert math.isclose(float(card["time_to_sold_out"]["value"]), expected_ttso, abs_tol=1e-6)
        assert re.fullmatch(r"\d+\.\d+ s|\d+ min \d+ s|\d+ h \d+ min \d+ s", card["time_to_sold_out"]["text"])
        assert card["sold_out_at"]["value"] == str(info.sold_out_at_ms)
        seen = driver.execute_script("return window.__seen")  # the card's figures moved during the burst
        assert str(before_crowd) in seen["granted"] and str(inventory) in seen["granted"]

        # Sold out while on screen: still first, still in the header.
        layout = driver.execute_script(READ_LAYOUT)
        assert [c for c, _ in layout["cards"]][0] == cid and inside(layout["cards"][0][1], 1920, 1080)
        page = driver.execute_script(READ_PAGE)
        assert page["marker"] == "same page"  # all of the above came over the event stream: no reload
        assert page["updates"] > updates_before
        assert page["kpi_granted"] == str(inventory) and page["kpi_remaining"] == "0"

        # /snapshot says the same as the node.
        snap = dash.snapshot()
        (mine,) = [c for c in snap["campaigns"] if c["id"] == cid]
        assert (mine["inventory"], mine["granted"], mine["remaining"]) == (inventory, inventory, 0)
        assert mine["sold_out_at_ms"] == info.sold_out_at_ms and mine["first_claim_at_ms"] == first_claim
        assert sorted((s["shard"], s["remaining"], s["granted"]) for s in mine["shards"]) == sorted(
            (s.shard, s.remaining, s.granted) for s in info.shards)
        assert mine["peak_claims_per_s"] > 0
        assert snap["totals"]["campaigns"] == [cid]

        if metrics_url:  # the node serves Prometheus figures: the panels that need them show them
            with urllib.request.urlopen(metrics_url, timeout=10) as resp:  # the names read are the node's
                exported = exported_names(resp.read().decode())
            assert set(m.READ) <= exported, set(m.READ) - exported
            sold_out = crowd - (inventory - before_crowd)

            def counted() -> Any:  # the node's counters and the dashboard's scrape may lag a tick
                mx = dash.snapshot()["metrics"]
                by_outcome = {o["outcome"]: o["total"] for o in mx.get("outcomes") or ()}
                return mx if by_outcome.get("sold_out") == sold_out else None

            mx = wait_for("every outcome of the live campaigns in the nodes' metrics", counted)
            by_outcome = {o["outcome"]: o["total"] for o in mx["outcomes"]}
            # The launch's claims only: the rehearsals' 30 sold-out answers are not in the focus's mix.
            assert by_outcome["granted"] == inventory and by_outcome["already_claimed"] == 0
            assert {r["reason"]: r["total"] for r in mx["rejections"]}["sold_out"] == sold_out
            latency = {row["method"]: row for row in mx["latency"]}
            rehearsal_batches = sum(math.ceil((100 * n + 20) / 100) for n in (1, 2))
            waves = math.ceil(first_wave / 100) + math.ceil(second_wave / 100)
            batches = waves + 4 * math.ceil(crowd / 4 / 100) + rehearsal_batches  # one per call
            assert latency["ClaimBatch"]["count"] == batches
            assert 0 < latency["ClaimBatch"]["total"]["p50"] <= latency["ClaimBatch"]["total"]["p99"]
            assert mine["first_redemption"] == {"state": "none_yet"}
            page = wait_for("the metrics panels", lambda: (lambda p: p if "sold out" in p["outcomes"]
                                                           else None)(driver.execute_script(READ_PAGE)))
            assert re.search(r"p99\.9ClaimBatch( \*)?([\d.]+ (ms|µs)){4}", page["latency"]), page["latency"]
            assert "sold out" in page["rejections"]
            layout = driver.execute_script(READ_LAYOUT)
            assert layout["outcome_heads"] == ["", "claims", "share"]  # no second granted-per-second
            assert layout["latency_table_fits"] is True  # the p99.9 column is not cut off
            heads = dict(layout["latency_heads"])
            assert heads["p99.9"]["right"] <= layout["latency_panel"]["right"]
            screenshot(driver, tmp_path, "launch-sold-out.png")

            # A click on a rehearsal's card: the header and the outcome mix are that campaign's alone.
            driver.execute_script(f"document.querySelector('[data-campaign=\"{rehearsals[0]}\"]').click()")
            page = wait_for("the chosen campaign in the header", lambda: (
                lambda p: p if p["kpi_granted"] == "100" else None)(driver.execute_script(READ_PAGE)))
            assert f"campaign={rehearsals[0]}" in driver.current_url
            assert "Rehearsal 1 (chosen)" in driver.execute_script(READ_LAYOUT)["scope"]
            assert re.search(r"granted100.*sold out20", page["outcomes"]), page["outcomes"]

            # The same launch on a dashboard without --metrics: the figures, and "—" where metrics are needed.
            bare = Dashboard("--target", node.address, "--every-s", "0.25")
            try:
                driver.get(bare.url)
                card = card_once(driver, cid, "SOLD_OUT")
                assert card["remaining"]["value"] == "0" and card["time_to_sold_out"]["value"]
                assert card["first_redemption"]["text"] == "— needs --metrics"
                page = driver.execute_script(READ_PAGE)
                for panel in ("latency", "outcomes", "rejections"):
                    assert "— needs the nodes' metrics" in page[panel]
                assert bare.snapshot()["metrics"]["available"] is False
            finally:
                assert bare.stop() == 0
        else:
            screenshot(driver, tmp_path, "launch-sold-out.png")

        # ?campaign=ID chooses on arrival.
        driver.get(dash.url + f"?campaign={tomorrow}")
        page = wait_for("tomorrow's campaign in the header", lambda: (
            lambda p: p if p["kpi_remaining"] == "5000" and p["kpi_granted"] == "0" else None)(
            driver.execute_script(READ_PAGE)))
        card = driver.execute_script(READ_CARD, tomorrow)
        assert card["status"]["value"] == "NOT_STARTED" and card["time_to_sold_out"]["text"].endswith(" s")
    finally:
        if driver is not None:
            driver.quit()
        code = dash.stop()
        channel.close()
    assert code == 0, dash.stderr()  # SIGTERM stops it cleanly


def test_time_to_sold_out_counts_from_the_start_time(launch_node) -> None:  # type: ignore[no-untyped-def]
    """A campaign with a start time: its clock starts then, not at its creation nor at its first claim."""
    node, _ = launch_node
    channel = grpc.insecure_channel(node.address)
    admin, claims = pb_grpc.AdminServiceStub(channel), pb_grpc.ClaimServiceStub(channel)
    starts_at = int(time.time() * 1000) + 1500
    cid = create(admin, "timed", "Starts soon", 20, 2, starts_at_ms=starts_at)
    dash = Dashboard("--target", node.address, "--campaign", cid, "--every-s", "0.25")
    try:
        (c,) = dash.snapshot()["campaigns"]
        assert c["status"] in ("NOT_STARTED", "OPEN") and c["granted"] == 0
        assert c["clock_from"] == "start" and c["clock_from_ms"] == starts_at
        wait_for("the start time", lambda: time.time() * 1000 > starts_at + 200)
        outcomes = claim_users(claims, cid, range(25))
        assert outcomes.count(pb.OUTCOME_GRANTED) == 20 and outcomes.count(pb.OUTCOME_SOLD_OUT) == 5
        info = admin.GetCampaign(pb.GetCampaignRequest(campaign_id=cid), timeout=10).campaign
        c = wait_for("sold out in the dashboard", lambda: (lambda s: s["campaigns"][0] if (
            s["campaigns"][0]["status"] == "SOLD_OUT") else None)(dash.snapshot()))
        assert first_grant_ms(admin, cid) > starts_at + 200  # the first claim came later: not the clock
        assert math.isclose(c["time_to_sold_out_s"], (info.sold_out_at_ms - starts_at) / 1000, abs_tol=1e-6)
        assert c["focus"]  # seen selling out: still the header's
    finally:
        assert dash.stop() == 0
        channel.close()


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


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "claimcore.ops.dashboard", "--port", str(port),
                              "--target", f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                             env=child_env(), timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"claimcore dashboard: cannot serve on 127.0.0.1:{port}: ")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_the_snapshot_embedded_in_the_page_cannot_end_its_script() -> None:
    """The page carries the latest snapshot inside a <script> element; a campaign name holding
    "</script>" or "<!--" stays JSON text there (the app in-process, its collector on a dead target)."""
    hostile = {"at_ms": 1, "campaigns": [{"id": "x", "name": "</script><script>window.__x=1</script><!--"}]}

    async def run() -> str:
        collector = Collector([f"127.0.0.1:{free_port()}"], [], ["x"], Access(), every_s=60)
        runner, port = await start(collector, "127.0.0.1", 0)
        try:
            dash = runner.app[DASHBOARD]
            await dash.hub.wait_newer(0, 30)  # the collector's first snapshot; the next is a minute away
            await dash.hub.publish(hostile)
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
                return await resp.text()
        finally:
            await runner.cleanup()

    page = asyncio.run(run())
    found = re.search(r'<script id="first-snapshot" type="application/json">(.*?)</script>', page, re.S)
    assert found and "<" not in found.group(1)
    assert json.loads(found.group(1)) == hostile


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
"""


def test_the_text_format_is_parsed() -> None:
    samples = {(name, labels): value for name, labels, value in m.parse_text(EXPOSITION)}
    assert samples[("claimcore_claims_total", (("campaign", "a"), ("outcome", "granted")))] == 90
    assert samples[("claimcore_claim_seconds_bucket", (("le", "+Inf"), ("method", "Claim")))] == 100
    assert samples[("claimcore_redis_up", ())] == 1
    assert samples[("claimcore_info", (("note", 'a "quoted" \\ value'), ("version", "0.1.0")))] == 1
    assert len(samples) == 10  # the comments are skipped


def test_a_scrape_that_is_not_prometheus_text_is_refused_whole() -> None:
    with pytest.raises(ValueError, match="not Prometheus text"):
        m.parse_text(EXPOSITION + "this line is not a sample\n")


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
