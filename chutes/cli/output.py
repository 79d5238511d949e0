"""What `chutes` commands show on the terminal: confirmation prompts, JSON and plain-text tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask only on a terminal: a script piping into `chutes` gets the action without a prompt."""
    if assume_yes or not sys.stdin.isatty():
        return True
    return input(f"{question} (y/n) ").strip().lower() == "y"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; a cell may hold several lines."""
    split_rows = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in split_rows:
        for index, lines in enumerate(row):
            widths[index] = max(widths[index], *(len(line) for line in lines))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * width for width in widths])]
    for row in split_rows:
        for number in range(max(len(lines) for lines in row)):
            out.append(line([lines[number] if number < len(lines) else "" for lines in row]))
    return "\n".join(out)
