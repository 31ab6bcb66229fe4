"""Every command in the README and in docs/*.md runs, in the order the page gives them.

Each page's fenced ``bash`` blocks (and its complete ``python`` blocks) run in a fresh
folder that holds links to ``scenarios/`` and ``examples/``, one page per test, so a
command can use what an earlier one on the same page wrote (``fedpoison results
runs/impact`` after ``fedpoison grid ... --out runs/impact``).

``fedpoison`` commands run in this process, as ``fedpoison.cli.main(argv)`` (in a fresh
process when they load plug-ins, which stay registered for the life of a process), at a
small size, by appending options a user could type too:

* ``run``: ``--set rounds=2 --quiet``;
* ``grid`` (not ``--dry-run``): ``--set seed=0 --set rounds=2 --quiet`` (one seed; same axes);
* ``demo``: ``--rounds 2 --seeds 1 --quiet``;
* ``reproduce``: ``--scale smoke --quiet`` (the last ``--scale`` wins).

Everything else runs as written. Complete Python blocks (no ``...`` placeholder, no name they do
not define) run as written; they are small already.
Commands that install software, start clusters or run the test suite itself are listed
in :data:`NOT_RUN` with the reason and where they are exercised instead; a test checks
that every entry there still matches a documented command, and that nothing else is left out.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Commands not run here (regex on the command) -> why, and where they are exercised.
NOT_RUN: dict[str, str] = {
    r"^make (demo|test)\b": "creates .venv and installs into it; CI (.ci/run) runs `make test`, and `fedpoison demo` "
                            "runs below",
    r"^source \.venv/bin/activate$": "activates the environment this suite already runs in",
    r"^pip install ": "installs packages",
    r"^ray start ": "starts a Ray cluster node; tests/experiments/test_ray_executor.py runs a local Ray instance",
    r"--address HEAD_IP": "needs a running Ray cluster",
    r"^(cd examples/flower|export FLWR_\w+=\S+|flwr run .*)$": "runs the Flower example app; "
                                                               "tests/integrations/test_flower.py runs it",
    r"^python -m pytest ": "runs this test suite",
    r"^fedpoison reproduce .*--executor ray": "needs a Ray cluster (--address auto); every reproduction's smoke "
                                              "scale runs in tests/reproductions",
    r"(examples/defenses2021/backdoor_.*--out runs/d21|^fedpoison report runs/d21$)":
        "Fashion-MNIST grids with CRFL's 1,000-copy certification (an hour on 2 cores); "
        "tests/experiments/test_defenses2021_grids.py expands and validates them, and "
        "tests/experiments/test_grid_auditors.py reports such a grid on digits",
}

#: Options appended to ``fedpoison <command>`` so that it runs at a small size.
SMALL: dict[str, list[str]] = {
    "run": ["--set", "rounds=2", "--quiet"],
    "grid": ["--set", "seed=0", "--set", "rounds=2", "--quiet"],
    "demo": ["--rounds", "2", "--seeds", "1", "--quiet"],
    "reproduce": ["--scale", "smoke", "--quiet"],
}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    lang: str
    code: str
    line: int


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, in order, with their language and first line number."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        out.append(Block(page, m.group(1), m.group(2), text[: m.start()].count("\n") + 1))
    return out


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens:
            commands.append(shlex.join(tokens))
    return commands


def not_run_reason(command: str) -> str | None:
    """Why ``command`` is not run here, or None when it is."""
    for pattern, reason in NOT_RUN.items():
        if re.search(pattern, command):
            return reason
    return None


def free_names(code: str) -> set[str]:
    """Names ``code`` reads but never binds (imports, assignments, definitions, arguments), builtins aside."""
    tree = ast.parse(code)
    loaded, bound = set(), set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


def python_block_runs(block: Block) -> bool:
    """A Python block runs when it is complete: no ``...`` placeholder and no name it does not define.

    Fragments (a Flower app's body, a class that refers to the plug-in file above it) are
    illustrations, not programs.
    """
    tree = ast.parse(block.code)
    placeholder = any(isinstance(n, ast.Constant) and n.value is Ellipsis for n in ast.walk(tree))
    return not placeholder and not free_names(block.code)


def run_fedpoison(command: str) -> None:
    """Run one documented ``fedpoison ...`` command in this process, at a small size."""
    from fedpoison.cli import main

    tokens = shlex.split(command)
    redirect = None
    if ">" in tokens:
        at = tokens.index(">")
        tokens, redirect = tokens[:at], tokens[at + 1]
    argv = tokens[1:]
    if argv and argv[0] in SMALL and "--dry-run" not in argv:
        argv += SMALL[argv[0]]
    if loads_plugins(command):  # plug-ins register for the life of a process: keep them out of this one
        proc = subprocess.run([sys.executable, "-m", "fedpoison", *argv], capture_output=True, text=True)
        code, text = proc.returncode, proc.stdout + proc.stderr
    else:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv)
        text = out.getvalue()
    assert code == 0, f"`{command}` exited with {code}:\n{text[-2000:]}"
    if redirect is not None:
        Path(redirect).write_text(text)


def loads_plugins(code: str) -> bool:
    """Whether a command or block loads plug-ins of its own (``--plugin``, a grid or config with ``plugins:``)."""
    return "plugin" in code


def test_every_documented_command_is_run_or_has_a_reason() -> None:
    commands = [c for page in PAGES for b in blocks(page) if b.lang in {"bash", "sh", "shell"}
                for c in shell_commands(b.code)]
    assert len(commands) >= 20
    unused = [p for p in NOT_RUN if not any(re.search(p, c) for c in commands)]
    assert not unused, f"NOT_RUN entries that match no documented command any more: {unused}"
    others = [c for c in commands if not_run_reason(c) is None and not c.startswith("fedpoison ")]
    assert not others, f"documented commands this test cannot run: {others} (add a reason to NOT_RUN)"
    for page in PAGES:  # blocks without a language that hold commands would escape the test
        for b in blocks(page):
            if b.lang == "":
                assert not re.search(r"^fedpoison \w", b.code, re.M) or page.name == "ARCHITECTURE.md", (
                    f"{page.name}:{b.line}: a block of commands needs the `bash` language to be tested")


def runnable_blocks(page: Path) -> list[Block]:
    """The page's blocks this test runs: shell blocks with a command to run, and complete Python blocks."""
    return [b for b in blocks(page)
            if (b.lang in {"bash", "sh", "shell"} and any(not_run_reason(c) is None for c in shell_commands(b.code)))
            or (b.lang == "python" and python_block_runs(b))]


RUN_PAGES = [p for p in PAGES if runnable_blocks(p)]


@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_page_commands_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runnable = runnable_blocks(page)
    for name in ("scenarios", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    for block in runnable:
        where = f"{page.name}:{block.line}"
        if block.lang == "python" and loads_plugins(block.code):
            proc = subprocess.run([sys.executable, "-c", block.code], capture_output=True, text=True)
            assert proc.returncode == 0, f"{where}:\n{proc.stderr[-2000:]}"
            continue
        if block.lang == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(block.code, where, "exec"), {"__name__": "__main__"})
            continue
        for command in shell_commands(block.code):
            if not_run_reason(command) is None:
                run_fedpoison(command)
    assert os.getcwd() == str(tmp_path)


def test_free_names_finds_what_a_fragment_leaves_undefined() -> None:
    assert free_names("import x\nfrom a.b import c as d\ny = x(d)\nprint(y)") == set()
    assert free_names("def f(event):\n    return event.kind\n[v for v in range(3)]") == set()
    assert free_names("check_rule(NormTrimmedMean)") == {"check_rule", "NormTrimmedMean"}
