"""The HTML report in a real browser: headless Chromium (Debian's package, driven by Playwright).

Checks what a reader would notice: every chart and grid image loads from the report's own folder
(also after the folder is moved), nothing is fetched from elsewhere, and prompts that are markup
show as text and run nothing; on a store with intermediate checkpoints, embeddings, training logs,
best_of_n runs and published weights, the charts of those sections load too. CI installs chromium
(.ci/run), and there a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from test_report_extras import build_extras
from test_report_store import XSS, build_store


def _chromium() -> str:
    for name in (os.environ.get("BENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("no chromium on PATH: .ci/run installs Debian's chromium package")
    pytest.skip("no chromium on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("CI"):
        from playwright.sync_api import sync_playwright  # a missing dev extra fails in CI
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    executable = _chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


def _written_and_moved(root: Path, db: Path) -> Path:
    """The HTML report of the store at ``db``, written by the CLI, then moved away from the store."""
    out = root / "reports" / "report.html"
    result = CliRunner().invoke(app, ["report", "--format", "html", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "<html" not in result.output  # the page is written, not printed
    moved = root / "elsewhere"
    shutil.copytree(out.parent, moved)
    shutil.rmtree(out.parent)
    shutil.rmtree(root / "results")  # the report must not need the store or its images
    return moved / "report.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The HTML report of a tiny-world store."""
    root = tmp_path_factory.mktemp("html")
    build_store(root / "results" / "bench.duckdb")
    return _written_and_moved(root, root / "results" / "bench.duckdb")


@pytest.fixture(scope="module")
def extras_site(tmp_path_factory) -> Path:
    """The HTML report of tests/test_report_extras.py's store: curves, diversity, training, frontier, papers."""
    root = tmp_path_factory.mktemp("html_extras")
    build_extras(root / "results" / "bench.duckdb")
    return _written_and_moved(root, root / "results" / "bench.duckdb")


def test_charts_and_grid_images_load_and_markup_prompts_show_as_text(browser, site: Path):
    page = browser.new_page()
    dialogs, requests, errors = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.as_uri(), wait_until="load")
    images = page.evaluate("""[...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                              w: i.naturalWidth, h: i.naturalHeight}))""")
    srcs = [i["src"] for i in images]
    assert any("winrate-" in s for s in srcs) and any("scores-" in s for s in srcs)
    assert sum(s.startswith("report_files/img-") for s in srcs) >= 4 * 4  # 4 fixed grids x 4 runs at least
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, broken
    assert all(u.startswith("file://") for u in requests), requests

    body = page.inner_text("body")
    for prompt in XSS:
        assert prompt in body  # shown literally, as a reader typed it
    assert "<b onmouseover=alert(2)>odd</b>" in body and "<i>odd</i>" in body  # categories too
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('img[src=x], b[onmouseover], i').length") == 0
    page.hover("text=largest win")  # an injected onmouseover would fire on hover
    page.wait_for_timeout(200)
    assert dialogs == [] and errors == []
    page.close()


def test_sections_a_reader_navigates_by(browser, site: Path):
    page = browser.new_page()
    page.goto(site.as_uri(), wait_until="load")
    headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
    assert headings == ["Ranking", "Suite tiny-eval", "Cost", "Statistics", "Provenance"]
    for anchor in page.eval_on_selector_all("nav a", "as => as.map(a => a.getAttribute('href'))"):
        assert page.locator(anchor).count() == 1  # every link of the navigation has its target
    text = page.inner_text("#statistics")
    assert "Holm" in text and "comparisons with base" in text
    assert page.locator("figure.grid").count() >= 4
    page.close()


def test_the_charts_of_curves_frontier_and_training_load(browser, extras_site: Path):
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(extras_site.as_uri(), wait_until="load")
    images = page.evaluate("""[...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                              w: i.naturalWidth, h: i.naturalHeight}))""")
    srcs = [i["src"] for i in images]
    for kind, count in (("curves-", 1), ("frontier-", 2), ("training-", 2)):
        assert sum(s.startswith(f"report_files/{kind}") for s in srcs) == count, (kind, srcs)
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, broken
    assert all(u.startswith("file://") for u in requests) and errors == []
    headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
    assert headings == ["Ranking", "Suite hpdv2", "Suite tiny-eval", "Training curves",
                        "Published results beside ours", "Cost", "Statistics", "Provenance"]
    for anchor in page.eval_on_selector_all("nav a", "as => as.map(a => a.getAttribute('href'))"):
        assert page.locator(anchor).count() == 1
    assert "proxy rises while held-out falls" in page.inner_text("#suite-1")
    assert "within CI" in page.inner_text("#papers")
    page.close()
