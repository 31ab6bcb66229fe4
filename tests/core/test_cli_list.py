"""``fedpoison list`` and ``--help``: complete, machine-readable, uncut, and without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedpoison import catalog
from fedpoison.cli import main
from fedpoison.output import escape, plain_lines


def test_catalog_file_matches_the_live_registries() -> None:
    stored = catalog.stored_rows()
    assert stored is not None, "src/fedpoison/catalog.json is missing: run python -m fedpoison.catalog --write"
    assert stored == catalog.live_rows(), (
        "src/fedpoison/catalog.json is stale (a plug-in was added or changed): "
        "run `python -m fedpoison.catalog --write` and commit the file")


def test_list_json_has_every_registered_attack_with_its_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from fedpoison.attacks import ATTACKS

    assert main(["list", "attacks", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ATTACKS.names()
    assert {"name", "description", "params", "kind", "knowledge", "reference"} <= set(rows[0])
    by_name = {r["name"]: r for r in rows}
    assert by_name["backdoor"]["kind"] == "data"
    assert by_name["alie"]["reference"] == ATTACKS.get("alie").reference
    assert "scale=1.0" in by_name["sign_flip"]["params"]


def test_list_plain_is_tab_separated_with_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    from fedpoison.defenses import RULES

    assert main(["list", "defenses", "--format", "plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["name", "description"] and "requires" in header and "reference" in header
    assert [line.split("\t")[0] for line in lines[1:]] == RULES.names()
    assert all(line.count("\t") == len(header) - 1 for line in lines)


def test_columns_leave_out_only_what_no_row_fills() -> None:
    rows = [{"name": "a", "params": "", "tags": "x"}, {"name": "b", "params": "", "tags": ""}]
    assert catalog.columns(rows) == ["name", "tags"]
    assert catalog.columns([]) == ["name"]


PLUGIN = """
from pydantic import BaseModel, ConfigDict

from fedpoison.attacks.base import Attack, AttackKind, Knowledge
from fedpoison.attacks.registry import register_attack


class ZeroParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register_attack("zero_update_for_listing", description="Sends zeros.", params=ZeroParams, reference="none")
class ZeroUpdate(Attack):
    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL

    def craft(self, ctx):
        return ctx.own_updates * 0
"""


def test_list_with_a_plugin_reads_the_live_registries(tmp_path: Path) -> None:
    plugin = tmp_path / "zero_plugin.py"
    plugin.write_text(PLUGIN)
    cmd = [sys.executable, "-m", "fedpoison", "list", "attacks", "--format", "plain", "--plugin", str(plugin)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    names = [line.split("\t")[0] for line in out.splitlines()[1:]]
    assert "zero_update_for_listing" in names and "sign_flip" in names


def test_catalog_constants_match_the_plugins_package() -> None:
    from fedpoison.plugins import FAMILY_NAMES
    from fedpoison.plugins.loading import ENTRY_POINT_GROUP

    assert catalog.FAMILIES == FAMILY_NAMES and catalog.ENTRY_POINT_GROUP == ENTRY_POINT_GROUP


def test_plain_lines_flatten_tabs_and_newlines() -> None:
    lines = plain_lines([{"a": "x\ty", "b": "1\n2"}], ["a", "b"])
    assert lines == ["a\tb", "x y\t1 2"]


def test_piped_table_cuts_no_name_and_no_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "attacks"]) == 0  # capsys is not a terminal, as in `fedpoison list attacks | less`
    out = capsys.readouterr().out
    assert "model_replacement " in out and "…" not in out
    for row in catalog.rows("attacks"):
        assert row["reference"] in out and row["name"] in out


def test_rich_escape_keeps_square_brackets() -> None:
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(f"defense.pre={escape('[clip]')} and {escape('[bold]x[/bold]')}")
    assert console.export_text().strip() == "defense.pre=[clip] and [bold]x[/bold]"


@pytest.mark.parametrize("argv", [["--help"], ["list", "attacks", "--format", "plain"], ["grid", "--help"]])
def test_quick_commands_do_not_import_torch(argv: list[str]) -> None:
    code = (f"import sys\nfrom fedpoison.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_config_redirected_to_a_file_is_valid_yaml_with_long_values(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from fedpoison import load_config

    path = "/data/" + "x" * 150
    overrides = ["dataset.name=mnist", f"dataset.path={path}"]
    assert main(["config", *(a for o in overrides for a in ("--set", o))]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["dataset"]["path"] == path
    assert text == load_config(overrides=overrides).to_yaml()
