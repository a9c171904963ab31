"""A real `claimcore loadgen` run's HTML page (docs/load-reports.md), opened in a real headless Chromium.

The run: a launch-shaped load on a real front node and redis-server (the `node` fixture), with a
reshard while it runs. The page must show every section in launch order, each chart drawn (its SVG
laid out with a size, its lines present: the planned line among them), the reshard in its table and
on every time chart. A full-page screenshot is kept in the test's tmp_path and copied to
artifacts/loadgen/report.png for a person to look at. Chromium and ChromeDriver are Debian's, as for
the dashboard's test (tests/ops/test_dashboard.py); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from claimcore.loadtest import loadgen
from claimcore.ops import cli

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "loadgen"
PAGE_WIDTH = 1280
SECTIONS = ("verdict", "arrivals", "outcomes", "stock", "latency", "reshards", "distribution", "checks")
CHARTS = ("arrivals-chart", "outcomes-chart", "stock-chart", "latency-chart", "distribution")

# What the page shows, read in the page: each section's place and each chart's size and parts.
READ_PAGE = """
const box = e => { const r = e.getBoundingClientRect(); return [r.top + window.scrollY, r.width, r.height]; };
const out = {sections: {}, charts: {}};
for (const id of arguments[0]) {
  const e = document.getElementById(id); out.sections[id] = e ? box(e) : null; }
for (const id of arguments[1]) {
  const svg = document.getElementById(id);
  if (!svg) { out.charts[id] = null; continue; }
  const lines = [...svg.querySelectorAll('polyline')].map(p => ({
    length: p.getTotalLength(), dashed: p.getAttribute('stroke-dasharray') || '',
    height: p.getBBox().height}));
  out.charts[id] = {box: box(svg), lines: lines, areas: svg.querySelectorAll('polygon').length,
                    markers: [...svg.querySelectorAll('line.marker')].length,
                    texts: [...svg.querySelectorAll('text')].map(t => t.textContent)};
}
out.reshardRows = [...document.querySelectorAll('#reshard-table tr')].map(r => r.innerText);
out.height = document.documentElement.scrollHeight;
return out;
"""


def browser(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("Chromium and ChromeDriver are missing: run `make setup` (scripts/install-chromium.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={PAGE_WIDTH},1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    return driver


@pytest.mark.timeout(180)
def test_a_real_runs_page_shows_the_whole_launch_in_chromium(node, tmp_path, capsys):
    out_json, out_html = tmp_path / "run.json", tmp_path / "run.html"
    code = cli.main(
        ["loadgen", "--target", node.address, "--create-campaign", "--inventory", "1500", "--shards", "4",
         "--users", "4000", "--arrival", "launch", "--duration", "2", "--launch-window", "0.6",
         "--reshard", "8@1", "--processes", "2", "--concurrency", "32", "--verify-sample", "100",
         "--seed", "16", "--no-progress", "--json", str(out_json), "--html", str(out_html)])  # fmt: skip
    printed = capsys.readouterr()
    assert code == loadgen.EXIT_OK, printed.out + printed.err
    report = json.loads(out_json.read_text())
    assert report["ok"] is True and report["outcomes"]["SOLD_OUT"] > 0
    assert [(s["from_shards"], s["to_shards"]) for s in report["reshards"]] == [(4, 8)]

    driver = browser(tmp_path / "profile")
    try:
        driver.get(out_html.as_uri())
        page = driver.execute_script(READ_PAGE, list(SECTIONS), list(CHARTS))
        driver.set_window_size(PAGE_WIDTH, page["height"] + 160)  # the whole page in one screenshot
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")

    tops = [page["sections"][name][0] for name in SECTIONS]
    assert None not in page["sections"].values() and tops == sorted(tops)  # in launch order
    for name in CHARTS:
        chart = page["charts"][name]
        assert chart is not None, name
        assert chart["box"][1] > 600 and chart["box"][2] > 150, (name, chart["box"])  # laid out, readable
    arrivals = page["charts"]["arrivals-chart"]
    planned = [line for line in arrivals["lines"] if line["dashed"]]
    assert len(planned) == 1 and planned[0]["length"] > 100 and planned[0]["height"] > 20  # a line, not flat
    assert "planned arrivals (the offered load)" in arrivals["texts"]
    assert all(line["length"] > 100 for line in arrivals["lines"])  # sent and replies drawn too
    assert page["charts"]["outcomes-chart"]["areas"] >= 2  # first grants and SOLD_OUT at least
    for name in CHARTS[:4]:  # every time chart marks the sold-out moment and the reshard
        texts = page["charts"][name]["texts"]
        assert "sold out (server)" in texts and "reshard -> 8" in texts, name
        assert page["charts"][name]["markers"] == 2, name
    assert len(page["charts"]["distribution"]["lines"]) == 2  # response time and call latency
    assert len(page["reshardRows"]) == 2 and "4 -> 8" in page["reshardRows"][1]
