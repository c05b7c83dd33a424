"""Rendering results: Rich tables on a terminal, plain columns in pipes, JSON or YAML.

Commands hand plain dicts/lists to these functions and never format by themselves.
JSON goes to stdout as exactly one document per command; messages and progress go
to stderr so that stdout stays parseable.

Rich is imported only inside the functions that draw with it: importing this module must
stay cheap, because every command (and `--help`, `--version`, shell completion) loads it
(tests/test_startup.py checks the import graph).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backupctl.timefmt import parse_iso

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Options:
    output: str = "table"  # table | json | yaml
    quiet: bool = False
    color: bool = True
    verbose: bool = False
    config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


OPTS = Options()


def stdout_console() -> Console:
    from rich.console import Console

    no_color = not OPTS.color or "NO_COLOR" in os.environ
    return Console(file=sys.stdout, no_color=no_color, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    from rich.console import Console

    no_color = not OPTS.color or "NO_COLOR" in os.environ
    return Console(file=sys.stderr, no_color=no_color, highlight=False, soft_wrap=True)


def is_tty() -> bool:
    return sys.stdout.isatty()


# ---- value formatting -------------------------------------------------------------


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def human_time(value: str | None) -> str:
    """An ISO UTC timestamp shown in local time, minute precision."""
    if not value:
        return ""
    try:
        t = parse_iso(value)
    except ValueError:
        return value
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {
    "Completed": "green",
    "Failed": "bold red",
    "Running": "yellow",
    "Queued": "cyan",
    "Active": "green",
    "Paused": "yellow",
}


# ---- documents ----------------------------------------------------------------------


def emit_document(doc: Any) -> None:
    """Print one JSON or YAML document to stdout."""
    if OPTS.output == "yaml":
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        buf = io.StringIO()
        yaml.dump(json.loads(json.dumps(doc, default=str)), buf)
        sys.stdout.write(buf.getvalue())
    else:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def structured() -> bool:
    return OPTS.output in ("json", "yaml")


Column = tuple[str, str, Callable[[Any], str] | None]  # (header, key, formatter)


def emit_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, title: str | None = None
) -> None:
    """A Rich table on a terminal; in a pipe, plain aligned columns with an upper-case header."""
    cells = [
        [(fmt(row.get(key)) if fmt else _plain(row.get(key))) for _, key, fmt in columns] for row in rows
    ]
    if is_tty():
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, show_edge=False, header_style="bold")
        for header, _, _ in columns:
            table.add_column(header)
        for values in cells:
            styled = []
            for (_, key, _), value in zip(columns, values, strict=True):
                style = STATUS_STYLE.get(value) if key in ("status",) else None
                styled.append(Text(value, style=style or ""))
            table.add_row(*styled)
        stdout_console().print(table)
        return
    headers = [h.upper().replace(" ", "_") for h, _, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for values in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def emit_fields(pairs: Sequence[tuple[str, str]]) -> None:
    """Key/value details (`show` commands)."""
    width = max((len(k) for k, _ in pairs), default=0)
    if is_tty():
        from rich.text import Text

        console = stdout_console()
        for key, value in pairs:
            console.print(Text(f"{key.ljust(width)}  ", style="bold") + Text(value))
    else:
        for key, value in pairs:
            sys.stdout.write(f"{key.ljust(width)}  {value}\n")


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def message(text: str, *, style: str = "") -> None:
    """A line for people on stderr (suppressed by --quiet and in JSON/YAML mode)."""
    if OPTS.quiet:
        return
    from rich.text import Text

    stderr_console().print(Text(text, style=style))


def warning(text: str) -> None:
    if OPTS.quiet:
        return
    from rich.text import Text

    stderr_console().print(Text("warning: ", style="yellow") + Text(text))
