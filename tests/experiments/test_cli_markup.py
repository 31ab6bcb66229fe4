"""Values with square brackets (``defense.pre=[clip]``) print as typed: Rich must not read them as markup."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpoison.cli import main

GRID = """\
name: brackets
base: {rounds: 1, clients: {num: 6}, dataset: {limit: 200}}
axes:
  defense.pre: [[clip], []]
"""


def test_grid_lines_keep_bracketed_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "brackets.yaml"
    grid.write_text(GRID)
    assert main(["grid", str(grid), "--dry-run"]) == 0
    assert "defense.pre=[clip]" in capsys.readouterr().out
    assert main(["grid", str(grid), "--workers", "0", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "done   [1/2] defense.pre=[clip]" in out and "defense.pre=[]" in out


def test_error_messages_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "defense.pre=[not_a_pre]"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: defense.pre[0]: unknown pre-aggregator 'not_a_pre'" in err
