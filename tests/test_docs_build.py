"""The documentation site, with its API reference, builds with ``mkdocs build --strict``.

The second test shows what strict buys: a docstring that documents a parameter its
function does not have fails the build. Both need the ``docs`` extra (CI installs it;
``make docs`` builds the site); without it they skip.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs and mkdocstrings are not installed (pip install '.[docs]')")


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=300)


def test_docs_build_strict(tmp_path: Path) -> None:
    proc = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("fedpoison.experiments.runner.run_grid", "fedpoison.simulation.loop.run",
                 "fedpoison.defenses.krum.Krum", "fedpoison.results.export.to_latex"):
        assert name in api


BROKEN = '''"""A module with a broken docstring."""


def scale(x: float) -> float:
    """Scale ``x``.

    Parameters
    ----------
    factor:
        Documented, but not a parameter of this function.
    """
    return 2 * x
'''


def test_a_broken_docstring_fails_the_strict_build(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken_mod.py").write_text(BROKEN)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Broken\n\n::: broken_mod\n")
    config.pop("nav")
    config["docs_dir"] = str(tmp_path / "docs")
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(tmp_path / "src")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "Parameter 'factor' does not appear in the function signature" in proc.stderr
