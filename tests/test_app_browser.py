"""End to end: ``poisonbench app RUN_DIR`` on 127.0.0.1, loaded in a real headless Chromium.

The window is 1400 px wide (a laptop). Besides "every element is there and nothing throws",
it checks what a reader sees: every class labelled, horizontally, on both axes of the
confusion matrices; the recovery curve on demand; the report rendered with a collapsible config
and its images loaded; pill filters that drop a value in one click. Screenshots of both pages
are written to ``$POISONBENCH_SCREENSHOTS`` (a temporary directory when unset).

Uses Debian's ``/usr/bin/chromium`` through Playwright's Python package (no browser download).
Skipped locally when Chromium is missing; under CI=true a missing Chromium fails the test
(``.ci/run`` installs it), so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import IN_CI, require

from bench.interfaces.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: the lab trains two mnist-5k models on first load; the machine is shared
LOAD_TIMEOUT_MS = 240_000
#: a laptop window
WIDTH = 1400
#: each axis of each Vega chart in an element: its aria label and its tick labels (text, opacity
#: (Vega hides a thinned-out label with opacity 0), transform (rotation))
AXES_JS = """el => [...el.querySelectorAll('g.role-axis')].map(a => ({
    title: a.getAttribute('aria-label') || '',
    labels: [...a.querySelectorAll('g.role-axis-label text')].map(t => ({
        text: t.textContent,
        visible: t.getAttribute('opacity') !== '0',
        transform: t.getAttribute('transform') || ''}))}))"""
#: images on the page that failed to load
BROKEN_IMAGES_JS = (
    "[...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"
)

RUN = """
name: browser
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks: [{name: label_flip, mode: targeted, source: 1, target: 2}]
rates: [0, 0.3]
defenses: [none, iforest]
seeds: 2
recovery: {fractions: [0, 0.2]}
"""

LAB_HEADINGS = (
    "Live label-flip lab",
    "Summary",
    "Clean vs poisoned model",
    "Predictions on test images",
    "Flipped training samples",
    "Confusion matrices",
    "Prediction distribution",
    "Per-label precision, recall and F1",
    "Recovery: extra clean data needed",
)
EXPLORER_HEADINGS = (
    "Results explorer",
    "Summary table: accuracy",
    "Accuracy vs poison rate",
    "Extra clean data needed (× n_train): iris / logreg",
    "Attack success rate (targeted flips): iris / logreg",
    "Recovery: accuracy vs extra clean data",
    "Filtered rows",
)


def _chromium() -> Path:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is required in CI (.ci/run installs it) but is missing")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``poisonbench app RUN_DIR --port PORT`` running in its own process group: (port, run)."""
    require("streamlit")
    root = tmp_path_factory.mktemp("browser")
    (root / "c.yaml").write_text(RUN)
    run_dir = root / "run"
    assert main(["run", str(root / "c.yaml"), "--out", str(run_dir), "--quiet"]) == 0
    port = _free_port()
    log = open(root / "app.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.interfaces.cli", "app", str(run_dir), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: the Streamlit child stops with it
    )
    try:
        _wait_healthy(port, proc)
        yield port, run_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _not_bound_elsewhere(port: int) -> bool:
    """True when nothing answers on the machine's other addresses (the app binds 127.0.0.1)."""
    host = socket.gethostbyname(socket.gethostname())
    if host.startswith("127."):
        return True
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


def _screenshot(page, path: Path) -> None:
    """Screenshot of the whole page: Streamlit scrolls an inner container, so a full-page
    shot shows one viewport only; a tall viewport shows everything."""
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('section, div')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": WIDTH, "height": min(int(height) + 100, 12000)})
    page.wait_for_timeout(1500)  # charts re-render at the new size
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": 1000})


def _confusion_axes(page) -> list[list[dict]]:
    """The axes of the lab's confusion matrices (the charts with a "true label" axis)."""
    found = []
    charts = page.locator("[data-testid='stVegaLiteChart']")
    for i in range(charts.count()):
        axes = charts.nth(i).evaluate(AXES_JS)
        if any("titled 'true label'" in a["title"] for a in axes):
            found.append(axes)
    return found


def test_both_pages_render_in_headless_chromium(app, tmp_path):
    chromium = _chromium()
    require("playwright")
    from playwright.sync_api import sync_playwright

    port, run_dir = app
    assert _not_bound_elsewhere(port)
    shots = Path(os.environ.get("POISONBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Live label-flip lab").wait_for(
                timeout=LOAD_TIMEOUT_MS
            )
            # the metrics appear once both models are trained
            page.get_by_text("Attack success rate", exact=True).wait_for(timeout=LOAD_TIMEOUT_MS)
            # the recovery button is the page's last element: once it is there, all of it is
            page.get_by_role("button", name="Run recovery curve").wait_for(timeout=LOAD_TIMEOUT_MS)
            for name in LAB_HEADINGS:
                assert page.get_by_role("heading", name=name, exact=True).count() == 1, name
            assert page.get_by_role("button", name="Train").count() == 1  # the sidebar's form
            # mnist-5k images: test predictions and the flipped gallery are real <img> elements
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stImage'] img").count() >= 16
            # the default draw mixes in source-class images (★)
            assert page.get_by_text("★", exact=False).count() >= 4
            page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # the charts draw their axes
            matrices = _confusion_axes(page)
            assert len(matrices) == 3  # clean, poisoned, difference
            classes = [str(i) for i in range(10)]
            for axes in matrices:
                assert len(axes) == 2
                for axis in axes:
                    shown = [lab["text"] for lab in axis["labels"] if lab["visible"]]
                    assert shown == classes, axis["title"]  # every class, none hidden
                    turned = [lab for lab in axis["labels"] if "rotate(" in lab["transform"]]
                    assert all("rotate(0)" in lab["transform"] for lab in turned), axis["title"]
            assert page.locator("[data-testid='stException']").count() == 0
            page.get_by_role("button", name="Run recovery curve").click()
            page.get_by_text("Extra clean data needed", exact=True).wait_for(
                timeout=LOAD_TIMEOUT_MS
            )
            page.get_by_text("clean model: ", exact=False).first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0
            _screenshot(page, shots / "lab.png")

            page.goto(f"http://127.0.0.1:{port}/explorer", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Results explorer").wait_for(timeout=LOAD_TIMEOUT_MS)
            # the download button is the page's last element: once it is there, all of it is
            download = page.get_by_text("Download the filtered table (CSV)")
            download.wait_for(timeout=LOAD_TIMEOUT_MS)
            for name in EXPLORER_HEADINGS:
                assert page.get_by_role("heading", name=name, exact=True).count() == 1, name
            assert page.get_by_test_id("stTextInputRootElement").locator("input").input_value() == (
                str(run_dir.resolve())
            )
            assert download.count() == 1
            assert page.get_by_text("0.79× [0.15–2+]", exact=False).count() >= 1
            # the report, as GitHub shows it: a collapsible config, its images loaded
            page.get_by_text("Report (report.md)").click()
            page.get_by_text("Config", exact=True).click()
            page.get_by_text("recovery:", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)  # the images load
            body = page.inner_text("body")
            assert "<details>" not in body and "</details>" not in body
            assert "<summary>" not in body and "![" not in body
            assert page.evaluate(BROKEN_IMAGES_JS) == []
            linked = (run_dir / "report.md").read_text().count("![")
            loaded = page.evaluate(
                "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
            )
            assert loaded >= linked + len(list(run_dir.glob("*.png")))  # report + plots
            assert page.locator("[data-testid='stException']").count() == 0
            _screenshot(page, shots / "explorer.png")
            # a filter value goes in one click
            table = pd.read_parquet(run_dir / "results.parquet")
            groups = page.get_by_test_id("stButtonGroup")
            assert groups.count() == 3  # attack, poison rate, defense (one dataset, one model)
            groups.nth(2).get_by_role("button", name="none", exact=True).click()
            kept = int((table["defense"] != "none").sum())
            page.get_by_text(f"{kept} of {len(table)} rows match").wait_for(timeout=60_000)
            assert not errors, errors
        finally:
            browser.close()
    for name in ("lab.png", "explorer.png"):
        assert (shots / name).stat().st_size > 20_000  # a real rendering, not a blank page
