"""The README teaches the tool: its set-up commands, its config reference and its tour must work.

Run ``python tests/test_readme.py`` to regenerate the config reference block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

# The tour's commands with small sizes, so the test takes seconds: (pattern, replacement).
SMALL = [
    (r"mpirun -n \d+", "mpirun -n 2"),
    (r"--set mesh\.h=[0-9.]+", "--set mesh.h=0.15"),
    (r"--steps \d+", "--steps 30"),
    (r"--n \d+", "--n 200"),
]
SMALL_TOML = [
    (r"^h = [0-9.]+", "h = 0.15"),
    (r"^n = \d+", "n = 8"),
    (r"linspace = \[([^,]+), ([^,]+), \d+\]", r"linspace = [\1, \2, 3]"),
]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """Commands of a bash block, continuation lines joined, comments dropped."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def generated_block() -> str:
    from beckmann.config import markdown_reference

    return f"{START}\n{markdown_reference().strip()}\n\n{END}"


def test_first_two_commands_unchanged():
    first = blocks("bash")[0]
    assert commands(first) == ["bash scripts/dev.sh solve", "bash scripts/dev.sh test"]


def test_ci_runs_exactly_the_readme_test_command():
    readme_test = commands(blocks("bash")[0])[1]
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert readme_test in ci, f".ci/run must run {readme_test!r}"


def test_config_reference_is_generated():
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == generated_block(), (
        "README config reference is stale: python tests/test_readme.py"
    )


def test_figures_exist_and_are_small():
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text()):
        path = ROOT / ref
        assert path.is_file(), ref
        assert 1000 < path.stat().st_size < 200_000, ref


def tour_commands() -> list[str]:
    """The tour's and the MPI section's commands (not set-up, ParaView or Docker)."""
    cmds = []
    for block in blocks("bash")[1:]:
        for cmd in commands(block):
            if cmd.startswith(".venv/bin/"):
                for pat, rep in SMALL:
                    cmd = re.sub(pat, rep, cmd)
                cmds.append(cmd)
    return cmds


def test_tour_lists_every_command():
    """Every subcommand of `beckmann --help` appears in the tour, and nothing invented."""
    from beckmann.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    available = set(sub.choices)
    used = {m.group(1) for c in tour_commands() for m in [re.search(r"beckmann (\w+)", c)] if m}
    assert used <= available, f"README uses missing commands: {used - available}"
    assert available - {"config"} <= used, f"README tour lacks {available - used}"


@pytest.mark.serial
def test_readme_commands_run(tmp_path):
    os.symlink(ROOT / ".venv", tmp_path / ".venv")
    for block in blocks("toml"):
        name = block.splitlines()[0].lstrip("# ").strip()
        if name.endswith(".toml"):
            for pat, rep in SMALL_TOML:
                block = re.sub(pat, rep, block, flags=re.M)
            (tmp_path / name).write_text(block)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BECKMANN_NO_PROGRESS": "1"}
    cmds = tour_commands()
    assert any(" solve " in c for c in cmds) and any(" probe " in c for c in cmds)
    for cmd in cmds:
        if " fit " in cmd:
            pytest.importorskip("jax", reason="beckmann fit needs the nn extra (JAX)")
        proc = subprocess.run(
            cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    # what the tour promises is there
    assert (tmp_path / "runs/a/summary.json").is_file()
    assert (tmp_path / "values.json").is_file()
    assert (tmp_path / "runs/a/figures/flux.png").is_file()


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.serial
@pytest.mark.parametrize("doc", ["README.md", "docs/holder.md"])
def test_python_examples_run(doc, tmp_path):
    """Every Python example of the README and of docs/holder.md runs as printed; a block that
    defines ``test_*`` functions (the user pytest of docs/holder.md) has them called."""
    found = python_blocks(ROOT / doc)
    assert found, f"{doc} has no Python example"
    for k, block in enumerate(found):
        script = block + (
            "\nfor _name, _f in list(globals().items()):\n"
            "    if _name.startswith('test_') and callable(_f):\n"
            "        _f()\n"
        )
        (tmp_path / f"example{k}.py").write_text(script)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "BECKMANN_NO_PROGRESS": "1"}
        proc = subprocess.run(
            [sys.executable, f"example{k}.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{doc} block {k}:\n{block}\n{proc.stderr[-3000:]}"


def regenerate() -> None:
    text = README.read_text()
    i, j = text.index(START), text.index(END) + len(END)
    README.write_text(text[:i] + generated_block() + text[j:])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    regenerate()
