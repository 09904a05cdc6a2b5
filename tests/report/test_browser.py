"""report.html in a real browser: headless Chromium renders its figures.

Needs a Chromium binary on PATH (``apt-get install -y chromium`` on Debian/Ubuntu);
skipped with that reason otherwise.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pkpd.report import run_study

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in map(shutil.which, BROWSERS) if b), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium on PATH (install: apt-get update && apt-get install -y chromium)",
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars")  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "out"
    run_study(ROOT / "models" / "bcma_car_nk.toml", None, out, seed=1, subjects=2, fit=False,
              stream=False)  # fmt: skip
    return out / "report.html"


def _chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, *args], capture_output=True, text=True,
                          timeout=timeout, check=True)  # fmt: skip


def test_dom_has_rendered_figures(report):
    dom = _chromium("--dump-dom", report.as_uri()).stdout
    srcs = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    source = report.read_text()
    assert len(srcs) == source.count("<img ") >= 8  # spaghetti per analyte/matrix, KM
    for b64 in srcs:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_screenshot_is_not_blank(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri())
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    # a blank page is a single colour; a rendered report has text, tables and plots
    assert pixels.std() > 0.05
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 50
