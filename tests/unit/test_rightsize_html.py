"""The HTML cost report opens in headless Chromium without errors and shows its charts."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from agent.config import Settings
from agent.rightsize.report import slack_blocks, to_markdown
from agent.rightsize.report_html import to_html
from agent.rightsize.service import analyse
from deploy.sandbox.fleet import Fleet
from tests.rightsize_synth import fleet_history
from tools.rightsize.catalog import PriceCatalog

START = 1_780_012_800.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run():  # type: ignore[no-untyped-def]
    settings = Settings()
    fleet = Fleet.load()
    hist = fleet_history(fleet, start=START, days=7,
                         overrides={"completion": {"replicas": lambda t: 6, "traffic": 0.05}})
    return analyse(hist, PriceCatalog.load(settings.rightsize.price_catalog), settings, window="7d")


def test_markdown_and_slack_carry_the_savings(run) -> None:  # type: ignore[no-untyped-def]
    md = to_markdown(run)
    assert "code/completion" in md and "reconciliation error" in md
    blocks = slack_blocks(run, top=3)
    buttons = [b["accessory"] for b in blocks if "accessory" in b]
    assert buttons and all(b["action_id"] == "rightsize_create_change" for b in buttons)
    assert any('"name":"completion"' in b["value"] for b in buttons)
    assert len([b for b in blocks if b["type"] == "section"]) <= 1 + 3


def test_html_report_renders_its_charts_in_chromium(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A missing browser fails rather than skips: set-up installs it, so its absence is a set-up defect.
    assert CHROMIUM, "chromium is not installed: `make setup` (deploy/setup.sh) installs Debian's chromium"
    page = to_html(run)
    images = re.findall(r'<img id="(chart-[a-z]+)"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [i for i, _ in images] == ["chart-spend", "chart-utilization", "chart-recommendations"]
    assert re.search(r"<tr><td>code/completion</td><td>prometheus", page), "each workload's cost says its source"
    for _, data in images:
        w, h = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert w > 300 and h > 150
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,3000",
                           f"--screenshot={shot}", html_file.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 3000)
    # matplotlib's first two colours (tab:blue, tab:orange) fill the charts' areas and bars.
    pixels = list(img.get_flattened_data())
    blue = sum(1 for p in pixels if abs(p[0] - 31) < 40 and abs(p[1] - 119) < 40 and abs(p[2] - 180) < 40)
    orange = sum(1 for p in pixels if p[0] > 200 and 90 < p[1] < 170 and p[2] < 80)
    assert blue > 5000 and orange > 2000, (blue, orange)
