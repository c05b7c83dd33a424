"""`backupctl backup ...`: the `backup` group, its listing commands and the options its commands share.

This module defines the group's Typer `app` and the commands `list` and `show`. The other
subcommands live in their own modules and register themselves on `app` when imported;
cli/main.py (`_SUBCOMMANDS`) imports them only when one of them is used, so that
`backupctl backup list` (start-up benchmarked: bench/startup.py, tests/cli/test_startup.py)
loads no code of commands it does not run:

- cmd_backup_browse: `ls` and `diff` (the contents of backups);
- cmd_backup_create_restore: `create` and `restore`;
- cmd_backup_manage: `delete`, `verify`, `upload`, `download` and `prune`;
- cmd_clone, cmd_drill: `clone` and `drill`.

The option declarations those modules share are here, at the group, which each of them
imports anyway for `app`: `--retry-lock` (`RetryLockOpt`, `parse_retry_lock`; also used by
`schedule run`) and the point-in-time options of `restore` and `clone` (`ToTimeOpt`...,
`moment_from_options`; `drill` uses `--to-time`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.output import human_bytes, human_count, human_duration, human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import UsageError

if TYPE_CHECKING:
    from backupctl.pitr.common import Target
    from backupctl.records import BackupSummary, PitrWindow, SourceSummary

app = typer.Typer(help="Create, list, inspect, restore, verify and delete backups.", no_args_is_help=True)

LIST_COLUMNS: list[output.Column] = [
    ("ID", "id", None),
    ("Deployment", "deployment", None),
    ("Method", "method", None),
    ("Type", "type", None),
    ("Status", "status", None),
    ("Started", "started", human_time),
    ("Duration", "duration_s", human_duration),
    ("Size", "size_bytes", human_bytes),
    ("Expires", "expires", human_time),
]
# Added by --wide (and in value/CSV output).
LIST_WIDE_COLUMNS: list[output.Column] = [
    ("Created by", "created_by", None),
    ("Finished", "finished", human_time),
    ("Files", "files", None),
    ("Stored", "stored_bytes", human_bytes),
    ("Comment", "comment", None),
]
# What a narrow terminal keeps, most important first (the ID and status are never dropped).
LIST_PRIORITY = ["id", "status", "deployment", "started", "type", "size_bytes", "method", "expires"]
# Restore drills (`backup drill`): when the newest passed drill started. The table shows
# "failed" when the newest drill failed and "-" when none ran (JSON: verified_at, drill_passed).
VERIFIED_COLUMN: output.Column = ("Verified", "verified_at", human_time)


def _verified_text(record: Any) -> str:
    if record.get("drill_passed") is False:
        return "failed"
    return human_time(record["verified_at"]) if record.get("verified_at") else "-"


# A table shows this many backups unless --limit or --all; the other formats show all.
TABLE_LIMIT = 20
# `--retry-lock DURATION` of create, delete and prune: keep retrying a lock held elsewhere.
RetryLockOpt = Annotated[
    str | None,
    typer.Option(
        "--retry-lock", help="If the repository is locked, keep retrying for this long (e.g. 5m, 1h)."
    ),
]


def parse_retry_lock(text: str | None) -> float:
    if text is None:
        return 0.0
    from backupctl.policy.models import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--retry-lock: {exc}") from None


# Shown only when a listed backup can be rolled forward (point-in-time recovery).
PITR_COLUMN: output.Column = ("PITR until", "recoverable_until", human_time)
# Shown only when a listed backup's copy to another destination failed (it stays Completed:
# restorable from its primary destination).
UPLOAD_COLUMN: output.Column = (
    "Upload failed",
    "failed_uploads",
    lambda v: ", ".join(v) if v else "",
)


@app.command("list")
def list_(
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Only this deployment.")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination's repository.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            help=f"Show at most N backups (default: all; a table shows {TABLE_LIMIT}).",
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show every backup, also in a table.")] = False,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only backups with this status: Queued, Running, Completed or Failed."),
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="Only full or incremental backups.")
    ] = None,
    created_by: Annotated[
        str | None,
        typer.Option("--created-by", help="Only backups made by this: manual, or a policy name."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only backups started at or after this: 7d, 12h (ago), 2026-12-01, 2026-12-01T10:00.",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Only backups started before this (as --since).")
    ] = None,
) -> None:
    """List backups, newest first.

    JSON, YAML, CSV and value output list every backup that matches, unless --limit; a
    table shows the newest 20 (and says how many more there are) unless --limit or --all.
    Dates without a zone are local time.

    A pg_basebackup/mariabackup backup whose deployment archives WAL or binary logs also
    gets `recoverable_until` (the "PITR until" column): the last moment it can be rolled
    forward to, as `pitr show` computes it.

    Example: backupctl backup list --deployment shop --status Failed --since 7d -f json
    """
    from backupctl.drill.run import verified
    from backupctl.pitr.window import add_recoverable_until

    matches = _list_filter(status, type_, created_by, since, until)
    with CliReporter() as reporter:
        svc = context.service(reporter)
        records = [r for r in svc.list_backups(deployment, destination) if matches(r)]
        if output.OPTS.sort_columns:  # any column may be the sort key: add them all first
            add_recoverable_until(svc, records)
            verified(svc, records)
            records = output.sort_rows(records, [*LIST_COLUMNS, PITR_COLUMN, VERIFIED_COLUMN, UPLOAD_COLUMN])
        if limit is not None:
            shown = records[: max(limit, 0)]
        elif all_ or output.structured():
            shown = records
        else:
            shown = records[:TABLE_LIMIT]
        if not output.OPTS.sort_columns:
            add_recoverable_until(svc, shown)
            verified(svc, shown)  # restore drills: the stable keys verified_at, drill_passed
    pitr = any(r.get("recoverable_until") for r in shown)
    uploads = any(r.get("failed_uploads") for r in shown)
    # The table's Verified column reads both drill keys ("failed" when the newest drill failed).
    rows = shown if output.structured() else [{**r, "verified": _verified_text(r)} for r in shown]
    verified_column = VERIFIED_COLUMN if output.structured() else ("Verified", "verified", None)
    output.emit_list(
        rows,
        LIST_COLUMNS
        + [verified_column]
        + ([UPLOAD_COLUMN] if uploads else [])
        + ([PITR_COLUMN] if pitr else []),
        wide=LIST_WIDE_COLUMNS,
        priority=LIST_PRIORITY,
    )
    if len(shown) < len(records) and limit is None:
        output.message(f"({len(records) - len(shown)} more; use --all or --limit)")


def _list_filter(
    status: str | None, type_: str | None, created_by: str | None, since: str | None, until: str | None
) -> Any:
    """The predicate of `backup list`'s filters (a usage error for an unreadable value)."""
    from backupctl.timefmt import parse_iso_utc, parse_time_arg

    if type_ is not None and type_ not in ("full", "incremental"):
        raise typer.BadParameter("must be full or incremental", param_hint="--type")
    if status is not None and status.lower() not in ("queued", "running", "completed", "failed"):
        raise typer.BadParameter("must be Queued, Running, Completed or Failed", param_hint="--status")
    bounds = []
    for name, text in (("--since", since), ("--until", until)):
        try:
            bounds.append(parse_time_arg(text) if text else None)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=name) from None
    low, high = bounds

    def matches(r: dict[str, Any]) -> bool:
        if status is not None and str(r.get("status", "")).lower() != status.lower():
            return False
        if type_ is not None and r.get("type") != type_:
            return False
        if created_by is not None and r.get("created_by") != created_by:
            return False
        if low is not None or high is not None:
            if not r.get("started"):
                return False
            started = parse_iso_utc(r["started"])
            if (low is not None and started < low) or (high is not None and started >= high):
                return False
        return True

    return matches


@app.command("show")
def show(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination.")
    ] = None,
) -> None:
    """Show every detail of a backup, including what it contains.

    Example: backupctl backup show 1a2b3c4d
    """
    from backupctl.drill.base import drill_history
    from backupctl.pitr.window import backup_pitr

    svc = context.service()
    record = svc.show_backup(backup_id, destination)
    window = backup_pitr(svc, record)  # the PITR window: added here, so that backups/ never imports pitr/
    if window is not None:
        record["pitr"] = window
    record["drills"] = [dict(d) for d in drill_history(svc, record["id"], destination)]
    if output.structured():
        output.emit_document(record)
        return
    pairs = _record_pairs(record)
    if record.get("pitr"):
        pairs.append(("Recoverable", _recoverable_text(record["pitr"])))
    pairs += _drill_pairs(record["drills"])
    for i, src in enumerate(record.get("sources", [])):
        pairs += _source_pairs(i, src)
    output.emit_fields(pairs, record=record)


def _record_pairs(record: BackupSummary) -> list[tuple[str, str]]:
    """`backup show`'s fields of the backup record itself, its source versions and destinations."""
    pairs = [
        ("ID", record["id"]),
        ("Deployment", record["deployment"]),
        ("Method", record["method"]),
        ("Type", record["type"]),
        ("Status", record["status"]),
        ("Created by", record["created_by"]),
        ("Started", human_time(record["started"])),
        ("Duration", human_duration(record["duration_s"])),
        ("Size", human_bytes(record["size_bytes"])),
        ("Stored (new)", human_bytes(record["stored_bytes"])),
        ("Files", str(record["files"])),
        ("Expires", human_time(record["expires"]) or "never (manual)"),
        ("Comment", record["comment"] or ""),
        ("Parent", (record["parent"] or "")[:8]),
        ("Host", record["hostname"] or ""),
    ]
    if record.get("error"):
        pairs.append(("Error", str(record["error"])))
    for key, value in sorted(record.get("source_versions", {}).items()):
        pairs.append((f"Version {key}", str(value)))
    for name, state in sorted(record.get("destinations", {}).items()):
        text = state.get("state", "")
        if state.get("error"):
            text += f": {state['error']}"
        pairs.append((f"Destination {name}", text))
    return pairs


def _recoverable_text(w: PitrWindow) -> str:
    """The "Recoverable" field: the point-in-time window after the backup, or why there is none."""
    if w.get("latest"):
        text = f"{human_time(w['earliest'])} to {human_time(w['latest'])}"
    else:
        text = f"none: {w.get('reason') or 'no WAL/binlogs archived after it'}"
    if w.get("gaps"):
        text += f" ({w['gaps']} gap{'s' if w['gaps'] != 1 else ''} in the archive after it)"
    return text


def _drill_pairs(drills: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The "Drills" lines: the newest five restore drills (newest first), then how many more."""
    pairs = []
    for i, d in enumerate(drills[:5]):
        text = f"{'passed' if d['passed'] else 'FAILED'} {human_time(d['started'])} on {d['host']}, "
        text += f"restore {human_duration(d['restore_seconds'])}"
        failed = [c for c in d["checks"] if not c["passed"]]
        if failed:
            text += f": {failed[0]['name']}: {failed[0]['detail']}"
        pairs.append(("Drills" if i == 0 else "", text))
    if len(drills) > 5:
        pairs.append(("", f"({len(drills) - 5} older drills: -o json lists them)"))
    return pairs


def _source_pairs(i: int, src: SourceSummary) -> list[tuple[str, str]]:
    """The lines of the backup's source number `i` (0-based): what it is and what it held."""
    what = ", ".join(f"{k}={v}" for k, v in src["describe"].items() if v)
    pairs = [(f"Source {i + 1}", f"{src['method']}: {what}")]
    pairs.append(
        (
            "",
            f"{human_count(src['files'], 'file')}, {human_count(src['dirs'], 'directory', 'directories')}, "
            f"{human_bytes(src['bytes'])}"
            + (f", {human_count(len(src['warnings']), 'warning')}" if src["warnings"] else ""),
        )
    )
    info = src.get("info") or {}
    if info.get("backup_type") == "incremental" and "from_lsn" in info:
        pairs.append(
            (
                "",
                f"incremental: {human_bytes(src['bytes'])} changed since the parent"
                f" (LSN {info['from_lsn']} to {info.get('to_lsn', '?')})",
            )
        )
    return pairs


_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")

# The point-in-time options, shared by `backup restore` and `backup clone`.
ToTimeOpt = Annotated[
    str | None,
    typer.Option(
        "--to-time", help="Point-in-time recovery to this moment, e.g. '2026-11-20 09:03:00 Europe/Berlin'."
    ),
]
ToLsnOpt = Annotated[
    str | None, typer.Option("--to-lsn", help="PostgreSQL: replay WAL up to this LSN (e.g. 0/3000060).")
]
ToNameOpt = Annotated[
    str | None,
    typer.Option("--to-name", help="PostgreSQL: replay up to this restore point (pg_create_restore_point)."),
]
ToPositionOpt = Annotated[
    str | None,
    typer.Option(
        "--to-position",
        help="MariaDB: replay binary logs up to FILE:POSITION (or POSITION in the last file).",
    ),
]


def moment_from_options(
    to_time: str | None, to_lsn: str | None, to_name: str | None, to_position: str | None
) -> Target | None:
    """The point-in-time target of --to-time/--to-lsn/--to-name/--to-position (None: none given),
    shared by `backup restore` and `backup clone`."""
    from backupctl.pitr import common as pitr

    given = sum(bool(x) for x in (to_time, to_lsn, to_name, to_position))
    if given == 0:
        return None
    if given > 1:
        raise typer.BadParameter("give exactly one of --to-time, --to-lsn, --to-name, --to-position")
    moment = pitr.Target(
        time=pitr.parse_moment(to_time) if to_time else None, lsn=to_lsn or None, name=to_name or None
    )
    if to_lsn and not _LSN_RE.match(to_lsn):
        raise typer.BadParameter("an LSN is two hex numbers, e.g. 0/3000060", param_hint="--to-lsn")
    if to_position:
        file, _, pos = to_position.rpartition(":")
        if not pos.isdigit():
            raise typer.BadParameter("FILE:POSITION or POSITION", param_hint="--to-position")
        moment.position, moment.position_file = int(pos), file or None
    return moment
