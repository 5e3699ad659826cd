"""The demo's HTML report in a real headless browser (Debian's chromium): two runs of the demo
(week 1, then week 2's snapshot), the report screenshotted at a phone and a wide width, and
its DOM, as the browser built it, checked section by section.

chromium is required in CI (``.ci/run`` installs it when missing); elsewhere the test is
skipped without it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = (390, 1400)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("chromium is not installed (CI installs it: .ci/run)", allow_module_level=True)


def _browser(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is required in CI: apt-get install -y chromium"
    # as root, chromium runs only without its sandbox
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--force-device-scale-factor=1", *args],
                          capture_output=True, text=True, timeout=120, check=True)


class Dom(HTMLParser):
    """Elements by id (tag, attributes, text inside) from the browser's serialized DOM."""

    def __init__(self, html: str):
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.ids: dict[str, list[str]] = {}
        self.tags: dict[str, str] = {}
        self.classes: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class"):
            self.classes.append(a["class"])
        if a.get("id"):
            self.ids[a["id"]] = []
            self.tags[a["id"]] = tag
        if tag not in VOID:
            self.stack.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self.stack:
            if i:
                self.ids[i].append(data)

    def text(self, id_: str) -> str:
        return " ".join(" ".join(self.ids[id_]).split())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from crmsync.cli import app

    tmp = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "mappings", tmp / "mappings")
    mapping = tmp / "mappings" / "demo.yaml"
    runner = CliRunner()
    week1 = runner.invoke(app, ["run", "-c", str(mapping), "--as-of", "2026-11-01T00:00:00Z"],
                          env={"DEMO_SNAPSHOT": None})
    assert week1.exit_code == 0, week1.output
    week2 = runner.invoke(app, ["run", "-c", str(mapping), "--as-of", "2026-11-08T00:00:00Z"],
                          env={"DEMO_SNAPSHOT": "contacts-2"})
    assert week2.exit_code == 0, week2.output
    out = tmp / "report.html"
    res = runner.invoke(app, ["report", "-c", str(mapping), "-o", str(out),
                              "--outcome", "last_order_date"])
    assert res.exit_code == 0, res.output
    return out


def test_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html
    # nothing fetched: no external stylesheet, font, image or script
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshots_at_phone_and_wide_widths(report: Path, width: int, tmp_path: Path) -> None:
    png = tmp_path / f"report-{width}.png"
    _browser(f"--screenshot={png}", f"--window-size={width},2400", report.as_uri())
    img = Image.open(png).convert("RGB")
    assert img.size == (width, 2400)
    small = img.resize((width // 4, 600))
    colours = small.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, charts, shades: not a blank page
    background = max(colours)[0] / (small.width * small.height)
    assert background < 0.97, "the page is almost all one colour"


def test_dom_has_every_section_with_its_content(report: Path) -> None:
    dom = Dom(_browser("--dump-dom", report.as_uri()).stdout)
    for section in ("sizes", "overlap", "migrations", "transitions", "destinations", "value",
                    "lift"):
        assert section in dom.ids, section
    sizes = dom.text("sizes")
    # a chart per segment with dated ticks on its x axis: the two runs' weeks
    assert "Nov 1" in sizes and "Nov 8" in sizes
    assert dom.tags["size-champions"] == "div" and "matched" in sizes and "sent" in sizes
    assert sum("chart" in c.split() for c in dom.classes) >= 10 + 7  # segments + destinations
    # migrations of the lifecycle group between the two runs: counts, stays on the diagonal
    life = dom.text("group-lifecycle")
    assert "Last two runs" in life and "(joined)" in life and "(left)" in life
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\b\d[\d,]*\b", life)]
    assert max(numbers) > 1000 and sum(1 for n in numbers if 0 < n < 1000) >= 3
    assert "group-rfm_stage" in dom.ids
    dests = dom.text("destinations")
    for name in ("champions-ads", "at-risk-winback", "lifecycle-stage"):
        assert f"dest-{name}" in dom.ids
    assert "all 2 run(s)" in dests and "not reported" in dests  # csv reports no size
    assert "+443" in dom.text("dest-lifecycle-stage")
    value = dom.text("value")
    assert "CLV" in value and "Lift" in value
    # the win-back: at_risk sent vs held out, on orders placed after the window's start
    lift = dom.text("lift")
    assert "at_risk last_order_date" in lift and "95% CI" in lift
    assert re.search(r"champions last_order_date \d+ \d+ too few to judge", lift)
    assert re.search(r"at_risk last_order_date 3\d\d 9\d 0\.1\d+ 0\.0\d+ 0\.1\d+ \+\d+", lift)
