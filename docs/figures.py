"""Regenerate, or check, every simulation figure in README.md from the commands the README shows.

    python docs/figures.py --check [--readme README.md] [--only NAME ...]   # exit 1 naming each stale block
    python docs/figures.py --write [--readme README.md] [--only NAME ...]   # rewrite the blocks in place

The README holds each generated block between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->`
(HTML comments: invisible once rendered). Each NAME has a generator in `docs/readme_blocks.py` that
runs the documented command(s) and renders the Markdown. Only seeded, deterministic figures are
generated (energies, latencies, SLO attainment, capacity answers, offline estimates, planning
figures, validation errors); speed and memory figures depend on the machine and stay as measured,
each beside the command and machine that produced it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path

from readme_blocks import BLOCKS, Commands, FigureError

from sim.console.notices import show_warnings_once

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"`[^`]*`")
BLOCK = re.compile(r"<!-- figures:(?P<name>\w+) -->\n(?P<body>.*?)<!-- /figures:(?P=name) -->\n", re.S)


def blocks(text: str) -> dict[str, str]:
    """The generated blocks of a README: name → text between its markers."""
    found: dict[str, str] = {}
    for m in BLOCK.finditer(text):
        if m["name"] in found:
            raise FigureError(f"block {m['name']!r} appears twice")
        found[m["name"]] = m["body"]
    return found


def replace(text: str, new: dict[str, str]) -> str:
    """`text` with the blocks named in `new` given their new bodies."""
    return BLOCK.sub(lambda m: _block(m["name"], new.get(m["name"], m["body"])), text)


def _block(name: str, body: str) -> str:
    return f"<!-- figures:{name} -->\n{body}<!-- /figures:{name} -->\n"


def generate(names: Iterable[str]) -> dict[str, str]:
    """Run the generators of `names` (sharing one scratch folder for the commands' outputs)."""
    with tempfile.TemporaryDirectory(prefix="readme-figures-") as scratch:
        commands = Commands(Path(scratch), ROOT)
        out = {}
        for name in names:
            print(f"generating {name} …", file=sys.stderr, flush=True)
            out[name] = reflow(BLOCKS[name](commands))
        return out


def reflow(markdown: str, width: int = 100) -> str:
    """Prose paragraphs and list items filled to `width` columns; code, tables and headings kept as
    they are (so a changed figure moves no line but its own paragraph's)."""
    out = []
    for para in markdown.strip("\n").split("\n\n"):
        if para.startswith(("```", "|", "#")):
            out.append(para)
            continue
        items = para.replace("\n- ", "\0- ").split("\0")
        out.append("\n".join(_fill(item, width) for item in items))
    return "\n\n".join(out) + "\n"


def _fill(text: str, width: int) -> str:
    """One paragraph or list item filled to `width`, never breaking a `code span`."""
    indent = "  " if text.startswith("- ") else ""
    words = CODE.sub(lambda m: m[0].replace(" ", "\0"), " ".join(text.split()))
    filled = textwrap.fill(words, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
    return filled.replace("\0", " ")


def stale(readme: str, generated: dict[str, str]) -> list[str]:
    """A unified diff per block whose README text differs from what its command prints now."""
    current = blocks(readme)
    diffs = []
    for name, body in generated.items():
        if current[name] != body:
            lines = difflib.unified_diff(
                current[name].splitlines(keepends=True), body.splitlines(keepends=True),
                f"README: {name}", f"generated: {name}",
            )  # fmt: skip
            diffs.append(f"block {name!r} differs from what its command prints:\n{''.join(lines)}")
    return diffs


def selected(readme: str, only: list[str] | None) -> list[str]:
    """The blocks to generate: `only`, or all; each must have a generator and markers in the README."""
    names = only or list(BLOCKS)
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        raise FigureError(f"no generator for block {unknown[0]!r}; known: {', '.join(BLOCKS)}")
    present = blocks(readme)
    missing = [n for n in names if n not in present]
    if missing:
        raise FigureError(f"the README has no <!-- figures:{missing[0]} --> … <!-- /figures:{missing[0]} --> block")
    orphans = sorted(set(present) - set(BLOCKS))
    if orphans:
        raise FigureError(f"the README's block {orphans[0]!r} has no generator; known: {', '.join(BLOCKS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 when every selected block is current (or was written), 1 when one is
    stale, 2 on bad input or a failed command (one line saying which)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 and show a diff for each stale block")
    mode.add_argument("--write", action="store_true", help="rewrite the blocks in place")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="the README to check or write")
    parser.add_argument("--only", action="append", metavar="NAME", help="only this block (repeatable)")
    args = parser.parse_args(argv)
    show_warnings_once()
    try:
        text = args.readme.read_text(encoding="utf-8")
        generated = generate(selected(text, args.only))
    except (OSError, FigureError) as e:
        print(f"figures: error: {e}", file=sys.stderr)
        return 2
    if args.write:
        args.readme.write_text(replace(text, generated), encoding="utf-8")
        print(f"wrote {len(generated)} blocks to {args.readme}")
        return 0
    diffs = stale(text, generated)
    for diff in diffs:
        print(diff)
    if diffs:
        print(f"{len(diffs)} of {len(generated)} blocks are stale: python docs/figures.py --write", file=sys.stderr)
        return 1
    print(f"all {len(generated)} blocks match their commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
