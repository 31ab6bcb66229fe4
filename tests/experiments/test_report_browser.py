"""Open the HTML report in headless Chromium: every figure decodes, every table renders, no network.

The report's own Content-Security-Policy (``default-src 'none'; img-src data:;
style-src 'unsafe-inline'``) makes the browser refuse any network request. The
test opens a copy of the report whose policy additionally allows one nonce'd
probe script; the probe records every CSP violation (an attempted request),
the decoded size of every image and the rendered size of every table, then
tries one request on purpose to show that an attempt would be seen.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedpoison.results.report import CSP

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
NONCE = "fedpoison-probe"
CONTROL = "http://127.0.0.1:9/control.png"

_HEAD = f"""<script nonce="{NONCE}">window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.blockedURI + ' ' + e.effectiveDirective));</script>"""
_TAIL = f"""<script nonce="{NONCE}">window.addEventListener('load', () => {{
  const r = {{violations_at_load: window.__violations.slice()}};
  r.images = [...document.images].map(i => ({{complete: i.complete, width: i.naturalWidth,
    height: i.naturalHeight, shown: i.getBoundingClientRect().width, data: i.src.startsWith('data:image/png;base64,')}}));
  r.tables = [...document.querySelectorAll('table')].map(t => ({{rows: t.rows.length,
    cells: t.querySelectorAll('td').length, height: t.getBoundingClientRect().height,
    section: t.closest('section') ? t.closest('section').id : ''}}));
  r.resources = performance.getEntriesByType('resource').map(e => e.name);
  const control = new Image(); control.src = '{CONTROL}';
  setTimeout(() => {{
    r.violations = window.__violations.slice();
    const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(r);
    document.body.appendChild(pre);
  }}, 1000);
}});</script>"""


def _probe(report: Path, tmp_path: Path) -> dict[str, Any]:
    page = report.read_text()
    assert CSP in page
    page = page.replace(CSP, f"{CSP}; script-src 'nonce-{NONCE}'", 1)
    page = page.replace("<title>", _HEAD + "<title>", 1).replace("</body>", _TAIL + "</body>", 1)
    probe = report.with_name("probe.html")
    probe.write_text(page)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
           probe.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the probe did not report (exit {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_offline_in_chromium(small_report: Any, tmp_path: Path) -> None:
    r = _probe(small_report.html, tmp_path)
    # every figure decoded, from an embedded PNG, and is shown
    assert len(r["images"]) == len(small_report.figures) >= 3
    for img in r["images"]:
        assert img["complete"] and img["data"] and img["width"] > 300 and img["height"] > 100 and img["shown"] > 0
    # every table rendered with its rows
    assert [t["section"] for t in r["tables"]] == [f"table-{t.name}" for t in small_report.tables]
    for t, table in zip(r["tables"], small_report.tables, strict=True):
        assert t["rows"] == len(table.frame) + 1 and t["cells"] > 0 and t["height"] > 0
    # no request was made or even attempted, and an attempt would have been seen
    assert r["violations_at_load"] == [] and r["resources"] == []
    assert r["violations"] == [f"{CONTROL} img-src"]
