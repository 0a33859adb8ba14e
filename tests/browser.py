"""Headless Chromium for the report tests: does a page render, and did every image on it load?"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Injected before </body>: after the load event, record on <body> how many images decoded.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + "/" + imgs.length;
});
</script>"""

_CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_browser() -> str:
    """Chromium's path; skips the test (fails it under LRTRANSFER_REQUIRE_BROWSER=1) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("LRTRANSFER_REQUIRE_BROWSER") == "1":
        pytest.fail("LRTRANSFER_REQUIRE_BROWSER=1 but no chromium/chromium-browser on PATH "
                    "(apt-get install -y --no-install-recommends chromium fonts-dejavu-core)")
    pytest.skip("no chromium/chromium-browser on PATH")


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def images_loaded(browser: str, profile: Path, page: Path) -> tuple[int, int]:
    """(loaded, total) images of `page` as seen by Chromium after the load event."""
    probe = page.with_name(page.stem + ".probe.html")  # same folder, so relative srcs resolve the same way
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "\n</body>"), encoding="utf-8")
    dom = chromium(browser, profile, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    m = re.search(r'<body[^>]*\bdata-images="(\d+)/(\d+)"', dom)
    assert m, f"load handler never ran on {page}; DOM starts: {dom[:500]!r}"
    return int(m[1]), int(m[2])
