"""docs/figures.py: the README's generated blocks are checked against their commands, a changed
figure fails the check with a diff naming its block, and bad input is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _figures(*args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, str(ROOT / "docs" / "figures.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch):
    """docs/figures.py imported as the script imports itself (docs/ on the path)."""
    monkeypatch.syspath_prepend(str(ROOT / "docs"))
    import figures

    return figures


def _planning_block(text: str) -> str:
    start = text.index("<!-- figures:planning_example -->")
    return text[start : text.index("<!-- /figures:planning_example -->", start)]


def test_check_fails_on_a_changed_number_and_write_restores_it(tmp_path: Path) -> None:
    """One figure of a README copy edited: --check exits 1 naming the block and showing the README's
    number against the one the command prints; --write puts the printed one back."""
    original = README.read_text(encoding="utf-8")
    block = _planning_block(original)
    edited_block = block.replace(" MWh", "1 MWh", 1)  # 7.18 MWh -> 7.181 MWh
    assert edited_block != block
    copy = tmp_path / "README.md"
    copy.write_text(original.replace(block, edited_block), encoding="utf-8")

    check = _figures("--check", "--readme", str(copy), "--only", "planning_example")
    assert check.returncode == 1, check.stderr
    assert "block 'planning_example' differs from what its command prints" in check.stdout
    changed = [line for line in check.stdout.splitlines() if "MWh" in line and line[:1] in "+-"]
    assert len(changed) == 2 and changed[0][1:] != changed[1][1:], check.stdout
    assert "1 of 1 blocks are stale" in check.stderr

    write = _figures("--write", "--readme", str(copy), "--only", "planning_example")
    assert write.returncode == 0, write.stderr
    assert copy.read_text(encoding="utf-8") == original


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--only", "nosuch"),
            "figures: error: no generator for block 'nosuch'; known: power_cap, clock_controller, clock_sweep, "
            "half_clock, windows_accuracy, threshold_fronts, validation,",
        ),
        (("--readme", "missing.md"), "figures: error: [Errno 2] No such file or directory: 'missing.md'"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    result = _figures("--check", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)


def test_a_readme_without_a_block_is_refused_by_name(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8").replace("<!-- figures:router_story -->\n", "")
    copy = tmp_path / "README.md"
    copy.write_text(text, encoding="utf-8")
    result = _figures("--check", "--readme", str(copy), "--only", "router_story")
    assert result.returncode == 2
    assert "the README has no <!-- figures:router_story -->" in result.stderr


def test_blocks_replace_and_reflow(figures) -> None:
    """Blocks parse by name; replace changes only the named body; reflow fills prose to 100 columns
    without breaking a code span and keeps tables and code as they are."""
    text = "a\n<!-- figures:x -->\nold\n<!-- /figures:x -->\nb\n<!-- figures:y -->\nkeep\n<!-- /figures:y -->\n"
    assert figures.blocks(text) == {"x": "old\n", "y": "keep\n"}
    assert figures.replace(text, {"x": "new\n"}) == text.replace("old", "new")
    prose = "word " * 15 + "`python -m sim capacity.enabled=true trace.rate_scale=20 policy=adaptive_gen` end"
    filled = figures.reflow(f"{prose}\n\n| a | b |\n|---|---|\n\n- item {prose}")
    lines = filled.splitlines()
    assert all(len(line) <= 100 for line in lines if "`" not in line)
    assert any(line.startswith("`python -m sim capacity.enabled=true") for line in lines)
    assert "| a | b |\n|---|---|" in filled
    assert [line for line in lines if line.startswith("  ")], "list items continue indented"


@pytest.mark.slow
def test_readme_figures_match_their_commands() -> None:
    """Every generated block of README.md is what its command prints today (about a minute)."""
    result = _figures("--check")
    assert result.returncode == 0, result.stdout + result.stderr
