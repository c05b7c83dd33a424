"""Rendering results: Rich tables on a terminal, plain columns in pipes; JSON, YAML, value, CSV.

Commands hand plain dicts/lists to these functions and never format by themselves. Every
format but `table` is a document for scripts (`structured()`): exactly one on stdout, with
messages and progress on stderr so that stdout stays parseable.

The global options (cli/main.py) land in `OPTS` and apply to every command, as in the
OpenStack CLI: `-f/--format` (`-o/--output`), `-c/--column` (any key of the record, or a
table header), `--sort-column` with `--sort-ascending/--sort-descending`, `--max-width`,
`--fit-width`, `--wide` and `--utc`.

Tables fit the terminal (`emit_table`; the layout and drawing are cli/table_layout.py):
identifying columns are never cut or dropped, free text is wrapped first, then the columns
of lowest priority are dropped (a note on stderr names them; `--wide` shows everything).
value/CSV writing is cli/flat_output.py.

Times: JSON/YAML/CSV/value carry UTC ISO 8601 with one precision, milliseconds and a `Z`
(`normalize_times`, the precision of the backup records and the repository); tables show
local time with the zone abbreviation, or UTC with `--utc` (`human_time`).

Rich, table_layout and flat_output are imported only inside the functions that use them:
importing this module must stay cheap, because every command (and `--help`, `--version`,
shell completion) loads it (tests/cli/test_startup.py checks the import graph).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from backupctl.errors import UsageError
from backupctl.timefmt import parse_iso

if TYPE_CHECKING:
    from rich.console import Console

FORMATS = ("table", "json", "yaml", "value", "csv")


@dataclass
class Options:
    output: str = "table"  # one of FORMATS
    quiet: bool = False
    color: bool = True
    verbose: bool = False
    config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)  # -c/--column, in the order given
    sort_columns: list[str] = field(default_factory=list)  # --sort-column
    sort_descending: bool = False
    max_width: int | None = None  # --max-width; 0: no limit
    fit_width: bool = False  # --fit-width: fit the terminal width also in a pipe
    wide: bool = False  # --wide: every column, nothing dropped or wrapped
    utc: bool = False  # --utc: tables show UTC instead of local time


OPTS = Options()


def stdout_console(width: int | None = None) -> Console:
    from rich.console import Console

    no_color = not OPTS.color or "NO_COLOR" in os.environ
    return Console(file=sys.stdout, no_color=no_color, highlight=False, soft_wrap=True, width=width)


def stderr_console(force_terminal: bool = False) -> Console:
    """`force_terminal`: draw live displays also into a pipe (`--progress bar`, asked for)."""
    from rich.console import Console

    no_color = not OPTS.color or "NO_COLOR" in os.environ
    return Console(
        file=sys.stderr,
        no_color=no_color,
        highlight=False,
        soft_wrap=True,
        force_terminal=True if force_terminal else None,
    )


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


def human_count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 warning', '2 warnings' (`plural` for irregular nouns)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _zone_label(t: dt.datetime) -> str:
    """The zone abbreviation (CET, EDT); a numeric offset where the zone has none."""
    name = t.strftime("%Z")
    if name and name[0] not in "+-" and not name.startswith(("UTC+", "UTC-")):
        return name
    minutes = int((t.utcoffset() or dt.timedelta()).total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes > 0 else '-'}{hours:02d}" + (f":{rest:02d}" if rest else "")


def human_time(value: str | None) -> str:
    """An ISO timestamp for tables, minute precision with its zone: local time
    (`2026-12-03 16:00 CET`), or UTC with --utc (`2026-12-03 15:00 UTC`)."""
    if not value:
        return ""
    try:
        t = parse_iso(value)
    except ValueError:
        return value
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    t = t.astimezone(dt.UTC) if OPTS.utc else t.astimezone()
    return f"{t.strftime('%Y-%m-%d %H:%M')} {_zone_label(t)}"


def human_time_in(value: str | None, zone: str | None) -> str:
    """A schedule's time in its own zone, then in local time (UTC with --utc) when that differs:
    `2026-12-04 03:30 CET (Europe/Berlin), 02:30 UTC`."""
    if not value:
        return ""
    if not zone:
        return human_time(value)
    try:
        from zoneinfo import ZoneInfo

        t = parse_iso(value)
        own = t.astimezone(ZoneInfo(zone))
    except (ValueError, KeyError, OSError):
        return human_time(value)
    text = f"{own.strftime('%Y-%m-%d %H:%M')} {_zone_label(own)}"
    text += f" ({zone})" if zone != _zone_label(own) else ""
    local = own.astimezone(dt.UTC) if OPTS.utc else own.astimezone()
    if local.utcoffset() != own.utcoffset() or _zone_label(local) != _zone_label(own):
        day = "%H:%M" if local.date() == own.date() else "%Y-%m-%d %H:%M"
        text += f", {local.strftime(day)} {_zone_label(local)}"
    return text


# ---- timestamps in documents --------------------------------------------------------

_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
# Keys whose timestamp opens a window (`pitr show` earliest, a binlog range's from): rounded
# up instead of down, so that the moment shown stays inside the window.
_ROUND_UP = frozenset({"earliest", "from"})


def _iso_ms(text: str, up: bool) -> str:
    t = parse_iso(text).astimezone(dt.UTC)
    if up and t.microsecond % 1000:
        t += dt.timedelta(microseconds=1000 - t.microsecond % 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def normalize_times(doc: Any, key: str | None = None) -> Any:
    """`doc` with every timestamp as UTC ISO 8601 with milliseconds and `Z`, the one precision
    of JSON/YAML/CSV/value output (the backup records' and the repository's own)."""
    if isinstance(doc, str):
        if len(doc) >= 20 and _ISO_UTC.match(doc):
            try:
                return _iso_ms(doc, key in _ROUND_UP)
            except ValueError:
                return doc
        return doc
    if isinstance(doc, Mapping):
        return {k: normalize_times(v, k) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [normalize_times(v, key) for v in doc]
    return doc


# ---- column selection and sorting ---------------------------------------------------

Column = tuple[str, str, Callable[[Any], str] | None]  # (header, key, formatter)
_Row = TypeVar("_Row", bound=Mapping[str, Any])


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def _record_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def _resolve(
    name: str, option: str, columns: Sequence[Column], keys: Sequence[str], *, strict: bool = True
) -> Column | None:
    """A -c/--sort-column NAME: a table header or key (any spelling of case, space, _ and -),
    or any key of the records. Unknown: a usage error naming the columns that exist."""
    wanted = _norm(name)
    for col in columns:
        if wanted in (_norm(col[0]), _norm(col[1])):
            return col
    for key in keys:
        if _norm(key) == wanted:
            return (key, key, _auto)
    if not strict:
        return None
    names = list(dict.fromkeys([*keys, *(c[1] for c in columns)]))
    raise UsageError(f"{option}: no column {name!r}; the columns are: {', '.join(names)}")


def _auto(value: Any) -> str:
    """A column picked with -c that the command's table does not have."""
    if isinstance(value, str) and _ISO_UTC.match(value):
        return human_time(value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return _plain(value)


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None or value == "":
        return (2, "")
    if isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, (list, tuple, Mapping)):
        return (1, json.dumps(value, default=str, sort_keys=True))
    return (1, str(value))


def sort_rows(rows: Sequence[_Row], columns: Sequence[Column] = ()) -> list[_Row]:
    """Rows ordered by --sort-column (stable; empty values last in either direction)."""
    out = list(rows)
    if not OPTS.sort_columns or not out:
        return out
    keys = _record_keys(out)
    for name in reversed(OPTS.sort_columns):
        col = _resolve(name, "--sort-column", columns, keys)
        assert col is not None
        present = [r for r in out if r.get(col[1]) not in (None, "")]
        empty = [r for r in out if r.get(col[1]) in (None, "")]
        present.sort(key=lambda r: _sort_value(r.get(col[1])), reverse=OPTS.sort_descending)
        out = present + empty
    return out


def _rows_of(doc: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(doc, list) and all(isinstance(r, Mapping) for r in doc):
        return doc
    return None


# ---- documents ----------------------------------------------------------------------


def emit_document(doc: Any, columns: Sequence[Column] | None = None) -> None:
    """Print one document to stdout in the chosen format. A list of records is sorted by
    --sort-column and cut to the -c columns; a single record (dict) keeps only the -c keys.
    value/CSV print `columns` (the command's table columns) of each record unless -c picks
    others; without `columns`, every key."""
    cols = list(columns or [])
    rows = _rows_of(doc)
    if rows is not None:
        rows = sort_rows(rows, cols)
        doc = rows
    record = rows if rows is not None else ([doc] if isinstance(doc, Mapping) else None)
    picked: list[Column] | None = None
    if OPTS.columns and record is not None:
        keys = _record_keys(record)
        strict = bool(record)
        found = [_resolve(name, "-c/--column", cols, keys, strict=strict) for name in OPTS.columns]
        picked = [c for c in found if c is not None] or [(n, n, None) for n in OPTS.columns]
        keep = [c[1] for c in picked]
        projected = [{k: r.get(k) for k in keep} for r in record]
        doc = projected if rows is not None else projected[0]
    doc = normalize_times(json.loads(json.dumps(doc, default=str)))
    if OPTS.output in ("value", "csv"):
        _emit_flat(doc, picked if picked is not None else cols)
    elif OPTS.output == "yaml":
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        buf = io.StringIO()
        yaml.dump(doc, buf)
        sys.stdout.write(buf.getvalue())
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _emit_flat(doc: Any, columns: Sequence[Column]) -> None:
    """value: the values only, space-separated, one record per line (OpenStack `-f value`);
    csv: a header of keys, then one row per record (RFC 4180: CRLF, quotes where needed)."""
    from backupctl.cli import flat_output  # only these two formats need it (start-up)

    csv = OPTS.output == "csv"
    if isinstance(doc, Mapping):
        records: list[Mapping[str, Any]] = [doc]
    elif _rows_of(doc) is not None:
        records = doc
    else:  # a list of scalars or a scalar: one per line
        flat_output.write_values(doc if isinstance(doc, list) else [doc], csv=csv)
        return
    flat_output.write_records(records, [c[1] for c in columns] or _record_keys(records), csv=csv)


def structured() -> bool:
    """True for every format but `table`: the command prints one document (emit_document)."""
    return OPTS.output != "table"


def emit_list(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    wide: Sequence[Column] = (),
    priority: Sequence[str] = (),
) -> None:
    """A list of records in any format: a table (emit_table), or a document whose value/CSV
    form has the table's columns (the --wide ones too)."""
    if structured():
        emit_document(list(rows), [*columns, *wide])
    else:
        emit_table(rows, columns, title=title, wide=wide, priority=priority)


# ---- tables ---------------------------------------------------------------------------


def table_width() -> int | None:
    """The width a table must fit: --max-width N (0: none); the terminal's on a TTY or with
    --fit-width (COLUMNS wins, as for Rich); none in a pipe or with --wide."""
    if OPTS.wide:
        return None
    if OPTS.max_width is not None:
        return OPTS.max_width or None
    if not (is_tty() or OPTS.fit_width or os.environ.get("BACKUPCTL_FIT_WIDTH")):
        return None
    try:
        columns = int(os.environ.get("COLUMNS", ""))
        if columns > 0:
            return columns
    except ValueError:
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 80


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    wide: Sequence[Column] = (),
    priority: Sequence[str] = (),
) -> None:
    """A Rich table on a terminal; in a pipe, plain aligned columns with an upper-case header.

    -c picks the columns (a header, a key of `columns` or any key of the records), --sort-column
    orders the rows; `wide` columns are added with --wide. On a terminal (or with --fit-width
    or --max-width) the table fits the width: see `_fit`; `priority` lists keys, most
    important first (default: the table's order)."""
    from backupctl.cli import table_layout  # only a table needs it (start-up)

    rows = sort_rows(rows, [*columns, *wide])
    if OPTS.columns:
        keys = _record_keys(rows)
        found = [_resolve(n, "-c/--column", [*columns, *wide], keys, strict=bool(rows)) for n in OPTS.columns]
        cols = [c for c in found if c is not None]
    else:
        cols = [*columns, *(wide if OPTS.wide else ())]
    cells = [[(fmt(row.get(key)) if fmt else _plain(row.get(key))) for _, key, fmt in cols] for row in rows]
    tty = is_tty()
    headers = [h if tty else h.upper().replace(" ", "_") for h, _, _ in cols]
    keys = [k for _, k, _ in cols]
    width = None if OPTS.columns else table_width()
    shown, widths = table_layout.fit_columns(headers, keys, cells, width, priority)
    hidden = [cols[i][0] for i in range(len(cols)) if i not in shown]
    keys = [keys[i] for i in shown]
    headers = [headers[i] for i in shown]
    cells = [[row[i] for i in shown] for row in cells]
    if tty:
        console = stdout_console(width=max(table_layout.total_width(widths), table_width() or 0, 1))
        table_layout.rich_table(keys, headers, cells, widths, title, console)
    else:
        table_layout.plain_table(headers, cells, widths)
    if hidden:  # after the table: stdout and stderr may share the terminal
        message(f"(not shown for the width: {', '.join(hidden)}; --wide or -c NAME shows them)")


def _field_selected(
    pairs: Sequence[tuple[str, str]], record: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    if not OPTS.columns:
        return list(pairs)
    labels = [k for k, _ in pairs if k]
    out: list[tuple[str, str]] = []
    for name in OPTS.columns:
        if _norm(name) not in {_norm(k) for k in labels}:
            key = next((k for k in record or {} if _norm(k) == _norm(name)), None)
            if record is not None and key is not None:  # a key of the record the details do not show
                out.append((key, _auto(record[key])))
                continue
            names = ", ".join(dict.fromkeys([*labels, *(record or {})]))
            raise UsageError(f"-c/--column: no field {name!r}; the fields are: {names}")
        take = False
        for key, value in pairs:  # a field and its continuation lines (empty label)
            if key:
                take = _norm(key) == _norm(name)
            if take:
                out.append((key, value))
    return out


def emit_fields(pairs: Sequence[tuple[str, str]], *, record: Mapping[str, Any] | None = None) -> None:
    """Key/value details (`show` commands); -c keeps the named fields, or any key of `record`
    (the document the details were made from)."""
    pairs = _field_selected(pairs, record)
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
