"""Laying out and drawing tables: which columns fit a width, wrapping, plain and Rich drawing.

cli/output.py (`emit_table`) turns records into header and cell strings and decides the
width to fit (the terminal's, --max-width, none in a pipe or with --wide); this module
only works on those strings, so it knows nothing of the global options.

Fitting (`fit_columns`): the identifying columns (IDs, names, status: `KEEP_KEYS`) are never
cut or dropped, so that what people copy into the next command stays whole; free-text
columns (`WRAP_KEYS`) are wrapped first, at a word where possible; then the columns of
lowest priority are dropped (output.py names them on stderr). In a pipe a table is plain
aligned text (`plain_table`); on a terminal Rich draws it (`rich_table`), imported only
then. output.py imports this module only when it prints a table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

STATUS_STYLE = {
    "Completed": "green",
    "Failed": "bold red",
    "Running": "yellow",
    "Queued": "cyan",
    "Active": "green",
    "Paused": "yellow",
}
# Never cut nor dropped: what people copy into the next command, and the status.
KEEP_KEYS = frozenset(
    {"id", "short_id", "name", "deployment", "destination", "policy", "backup_id", "status", "state"}
)
# Free text: wrapped before anything is dropped.
WRAP_KEYS = frozenset(
    {
        "error",
        "last_error",
        "reasons",
        "location",
        "recurrence",
        "comment",
        "changes",
        "used_by",
        "shown",
        "path",
    }
)
GAP = 2  # spaces between columns, on a terminal and in a pipe
_MIN_WRAP = 12
_MAX_WORD = 30


def text_width(text: str) -> int:
    return max((len(line) for line in text.split("\n")), default=0)


def fit_columns(
    headers: Sequence[str],
    keys: Sequence[str],
    cells: Sequence[Sequence[str]],
    width: int | None,
    priority: Sequence[str],
) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide: (indexes in table order, widths). Kept columns
    are never narrowed; wrappable ones shrink to _MIN_WRAP; then the least important column
    goes (the last in `priority`, else the rightmost), and so on."""
    natural = [
        max(text_width(h), *(text_width(row[i]) for row in cells)) if cells else text_width(h)
        for i, h in enumerate(headers)
    ]
    shown = list(range(len(headers)))
    if width is None:
        return shown, natural
    # Wrapping stops at the longest word (up to _MAX_WORD): no word is broken when avoidable.
    longest_word = [max((len(w) for row in cells for w in row[i].split()), default=0) for i in shown]
    rank = {k: n for n, k in enumerate(priority)}
    order = sorted(shown, key=lambda i: (rank.get(keys[i], len(rank)), i))  # most important first
    while True:
        widths = {i: natural[i] for i in shown}
        excess = sum(widths.values()) + GAP * (len(shown) - 1) - width
        for i in sorted(shown, key=lambda i: -natural[i]):
            if excess <= 0:
                break
            if keys[i] in WRAP_KEYS and keys[i] not in KEEP_KEYS:
                floor = max(_MIN_WRAP, len(headers[i]), min(longest_word[i], _MAX_WORD))
                cut = min(excess, max(0, widths[i] - floor))
                widths[i] -= cut
                excess -= cut
        droppable = [i for i in order if i in shown and keys[i] not in KEEP_KEYS]
        if excess <= 0 or not droppable:
            return shown, [widths[i] for i in shown]
        shown.remove(droppable[-1])


def wrap_text(text: str, width: int) -> str:
    import textwrap

    out: list[str] = []
    for line in text.split("\n"):
        out.extend(textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""])
    return "\n".join(out)


def plain_table(headers: Sequence[str], cells: Sequence[Sequence[str]], widths: Sequence[int]) -> None:
    cells = [
        [wrap_text(v, w) if text_width(v) > w else v for v, w in zip(row, widths, strict=True)]
        for row in cells
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for values in cells:
        split = [v.split("\n") for v in values]
        for n in range(max((len(s) for s in split), default=1)):
            parts = [(s[n] if n < len(s) else "").ljust(w) for s, w in zip(split, widths, strict=True)]
            lines.append("  ".join(parts).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def rich_table(
    keys: Sequence[str],
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    widths: Sequence[int],
    title: str | None,
    console: Console,
) -> None:
    """Draw the table with Rich on `console` (a terminal): bold headers, coloured status."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    for key, header, w in zip(keys, headers, widths, strict=True):
        wraps = key in WRAP_KEYS and key not in KEEP_KEYS
        table.add_column(header, no_wrap=not wraps, width=w if wraps else None, min_width=w, overflow="fold")
    for values in cells:
        styled = []
        for key, value in zip(keys, values, strict=True):
            style = STATUS_STYLE.get(value) if key in ("status",) else None
            styled.append(Text(value, style=style or ""))
        table.add_row(*styled)
    console.print(table)


def total_width(widths: Sequence[int]) -> int:
    """The width of a table with these column widths, the gaps between them included."""
    return sum(widths) + GAP * (len(widths) - 1)
