"""Tables as text: console tables laid out by `rich` (plain text), and Markdown tables for reports.

The same text goes to the terminal, to a pipe or a log, and into the run's folder (table.txt): no
colour codes, no markup read from the cells (a label such as `x=[1,2]` is printed as is), never
wrapped to the terminal's width. The first column (the row labels) is aligned left, the others right.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

WIDTH = 1000  # characters: wide enough that rich never folds a column


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """`rows` of cells under `header`, aligned, with a rule under the header; no trailing newline."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, name in enumerate(header):
        grid.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=WIDTH, color_system=None, force_terminal=False, markup=False, highlight=False, emoji=False
    )
    console.print(grid)
    return buffer.getvalue().rstrip("\n")


def cell(value: object) -> str:
    """A table cell: a float to 4 significant digits (NaN blank), anything else as text with `|` escaped."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame, cols: Sequence[str] | None = None) -> str:
    """A Markdown table (numbers to 4 significant digits)."""
    cols = list(cols or [c for c in table.columns if c not in ("run_id", "run_name")])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
