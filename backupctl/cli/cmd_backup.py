"""`backupctl backup ...`: create, list, show, restore, delete, verify."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.output import human_bytes, human_duration, human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode, IntegrityError, NotFoundError, UsageError

if TYPE_CHECKING:
    from backupctl.pitr.common import Target

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


@app.command("create")
def create(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument(help="Deployment name from the config.")],
    type_: Annotated[
        str, typer.Option("--type", "-t", help="full or incremental (files: skip unchanged files).")
    ] = "incremental",
    comment: Annotated[str, typer.Option("--comment", help="A note stored with the backup.")] = "",
    retry_lock: RetryLockOpt = None,
) -> None:
    """Take a backup of DEPLOYMENT now and print its ID.

    Example: backupctl backup create shop --type full --comment "before upgrade"
    """
    if type_ not in ("full", "incremental"):
        raise typer.BadParameter("must be full or incremental", param_hint="--type")
    wait = parse_retry_lock(retry_lock)
    with CliReporter() as reporter:
        svc = context.service(reporter)
        svc.set_lock_wait(wait)
        # Asked for on the command line (not the default): a database then says that it has no
        # incremental form.
        source = ctx.get_parameter_source("type_")
        explicit = source is not None and source.name == "COMMANDLINE"
        record = svc.create_backup(deployment, type=type_, comment=comment, type_requested=explicit)
    record.pop("warning_list", None)
    if output.structured():
        output.emit_document(record)
    elif output.is_tty():
        output.message(
            f"Backup {record['short_id']} of {deployment} completed: {record['files']} files, "
            f"{human_bytes(record['size_bytes'])} read, {human_bytes(record['stored_bytes'])} stored, "
            f"in {human_duration(record['duration_s'])}.",
        )
        sys.stdout.write(record["id"] + "\n")
    else:
        sys.stdout.write(record["id"] + "\n")
    if record["warnings"]:
        output.warning(f"{_count(record['warnings'], 'warning')} (see above); the backup is usable")
        raise typer.Exit(ExitCode.PARTIAL)


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
    if record.get("pitr"):
        w = record["pitr"]
        if w.get("latest"):
            text = f"{human_time(w['earliest'])} to {human_time(w['latest'])}"
        else:
            text = f"none: {w.get('reason') or 'no WAL/binlogs archived after it'}"
        if w.get("gaps"):
            text += f" ({w['gaps']} gap{'s' if w['gaps'] != 1 else ''} in the archive after it)"
        pairs.append(("Recoverable", text))
    for i, d in enumerate(record["drills"][:5]):  # restore drills, newest first
        text = f"{'passed' if d['passed'] else 'FAILED'} {human_time(d['started'])} on {d['host']}, "
        text += f"restore {human_duration(d['restore_seconds'])}"
        failed = [c for c in d["checks"] if not c["passed"]]
        if failed:
            text += f": {failed[0]['name']}: {failed[0]['detail']}"
        pairs.append(("Drills" if i == 0 else "", text))
    if len(record["drills"]) > 5:
        pairs.append(("", f"({len(record['drills']) - 5} older drills: -o json lists them)"))
    for i, src in enumerate(record.get("sources", [])):
        what = ", ".join(f"{k}={v}" for k, v in src["describe"].items() if v)
        pairs.append((f"Source {i + 1}", f"{src['method']}: {what}"))
        pairs.append(
            (
                "",
                f"{_count(src['files'], 'file')}, {_count(src['dirs'], 'directory', 'directories')}, "
                f"{human_bytes(src['bytes'])}"
                + (f", {_count(len(src['warnings']), 'warning')}" if src["warnings"] else ""),
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
    output.emit_fields(pairs, record=record)


def _target_is_live(target: Path | None) -> bool:
    """True when a restore would overwrite existing data and so needs a confirmation."""
    if target is None:
        return True
    return target.exists() and (not target.is_dir() or any(os.scandir(target)))


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


def _restore_to_moment(
    backup_id: str | None,
    deployment: str | None,
    target: Path | None,
    to_time: str | None,
    to_lsn: str | None,
    to_name: str | None,
    to_position: str | None,
    yes: bool,
    no_safety_backup: bool,
) -> None:
    from backupctl.pitr import common as pitr
    from backupctl.pitr.dispatch import restore_to_moment

    moment = moment_from_options(to_time, to_lsn, to_name, to_position)
    assert moment is not None  # the caller saw one of them
    with CliReporter() as reporter:
        svc = context.service(reporter)
        if target is not None and _target_is_live(target):  # refused before asking
            raise UsageError(
                f"{target} is not empty; a point-in-time restore writes a new data directory",
                hint="give an empty or absent --target, or no --target to restore into the deployment's own",
            )
        deployment = pitr.base_deployment(svc, backup_id, deployment)  # refusals before asking
        if target is None:
            context.confirm(
                f"Restore deployment {deployment!r} to {moment.describe()}? Current data there "
                "will be overwritten and the database is unavailable during the restore.",
                yes=yes,
            )
        result = restore_to_moment(
            svc,
            deployment=deployment,
            backup_id=backup_id,
            target=moment,
            target_dir=target,
            safety_backup=not no_safety_backup,
        )
    if output.structured():
        output.emit_document(result)
    else:
        output.message(
            f"Restored backup {result['backup'][:8]} into {result.get('datadir') or 'place'}; "
            f"recovery target {result['target_moment']}."
        )
        output.message(f"Next: {result['next_step']}")
        if result.get("safety_backup"):
            output.message(f"Safety backup: {result['safety_backup'][:8]}")


@app.command("restore")
def restore(
    backup_id: Annotated[
        str | None,
        typer.Argument(help="Backup ID or a unique prefix of it (optional with --deployment and --to-*)."),
    ] = None,
    target: Annotated[
        Path | None, typer.Option("--target", help="Restore under this directory instead of in place.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Restore into another configured deployment.")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")
    ] = False,
    no_safety_backup: Annotated[
        bool,
        typer.Option(
            "--no-safety-backup", help="Restore in place without first backing up the current state."
        ),
    ] = False,
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", "-d", help="Point-in-time restore: the deployment (picks the backup)."),
    ] = None,
    to_time: ToTimeOpt = None,
    to_lsn: ToLsnOpt = None,
    to_name: ToNameOpt = None,
    to_position: ToPositionOpt = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="Restore only paths matching this glob (base name or absolute path; repeatable), "
            "with the directories above them.",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", help="Do not restore paths matching this glob, nor what is below them (repeatable)."
        ),
    ] = None,
) -> None:
    """Restore a backup in place (after confirmation) or into an empty --target directory.

    In place, a safety backup of the current state is taken first and its ID printed,
    so that the restore can be undone. With --to-time/--to-lsn/--to-name/--to-position
    (point-in-time recovery, docs/pitr.md) the newest physical backup before that moment is
    restored and the archived WAL or binary logs are replayed up to it.

    With --include/--exclude (files sources only) just the matching paths are restored, as
    the files source's `exclude:` matches them: a pattern matches a base name or an absolute
    path, and a matching directory brings everything below it.

    Example: backupctl backup restore 1a2b3c4d --target /tmp/restore

    Example: backupctl backup restore 1a2b3c4d --include /srv/app/config --exclude '*.log' --yes

    Example: backupctl backup restore --deployment shop --to-time "2026-11-20 09:03:00 Europe/Berlin" --target /srv/pg-restored
    """
    selection = None
    if include or exclude:
        from backupctl.backups.browse import RestoreSelection

        selection = RestoreSelection(tuple(include or ()), tuple(exclude or ()))
    if to_time or to_lsn or to_name or to_position:
        if selection:
            raise UsageError(
                "--include/--exclude cannot be combined with a point-in-time restore",
                hint="restore the whole backup, or drop the --to-* option",
            )
        _restore_to_moment(
            backup_id, deployment, target, to_time, to_lsn, to_name, to_position, yes, no_safety_backup
        )
        return
    if backup_id is None:
        raise typer.BadParameter(
            "give a backup ID (or --deployment with --to-time/--to-lsn/--to-name/--to-position)"
        )
    if target is not None and target.exists() and not target.is_dir():
        raise UsageError(f"--target {target} is not a directory", hint="name a new or empty directory")
    with CliReporter() as reporter:
        svc = context.service(reporter)
        record = svc.find_backup(backup_id, destination)
        if _target_is_live(target):
            where = f"{target}" if target else f"deployment {to or record['deployment']!r}"
            offline = (
                ""
                if record["method"] in ("files", "sqlite")
                else " The database is unavailable during the restore."
            )
            context.confirm(
                f"Restore backup {record['short_id']} created {human_time(record['started'])} into {where}? "
                f"Current data there will be overwritten and changes since the backup will be lost.{offline}",
                yes=yes,
            )
        result = svc.restore_backup(
            backup_id,
            target_dir=target,
            to_deployment=to,
            destination=destination,
            safety_backup=not no_safety_backup,
            selection=selection,
        )
    if output.structured():
        output.emit_document(result)
    else:
        output.message(
            f"Restored backup {result['id'][:8]} ({human_bytes(result['bytes'])}) "
            f"{'into ' + result['target'] if result['target'] else 'in place'} in {human_duration(result['duration_s'])}."
        )
        if result.get("safety_backup"):
            output.message(
                f"Safety backup of the previous state: {result['safety_backup']} "
                f"(undo with: backupctl backup restore {result['safety_backup'][:8]})"
            )
    if reporter.warnings:
        raise typer.Exit(ExitCode.PARTIAL)


LS_COLUMNS: list[output.Column] = [
    ("Type", "type", None),
    ("Mode", "mode", None),
    ("User", "user", None),
    ("Group", "group", None),
    ("Size", "size", None),
    ("Modified", "mtime", human_time),
    ("Path", "shown", None),
]
# value/CSV/-c of `backup ls`: the record's own keys (`shown` is the table's "path -> target").
LS_FIELDS: list[output.Column] = [*LS_COLUMNS[:-1], ("Path", "path", None), ("Target", "target", None)]
# On a narrow terminal the path is wrapped and kept; the owner columns go first.
LS_PRIORITY = ("shown", "type", "size", "mtime", "mode", "user", "group")
DIFF_COLUMNS: list[output.Column] = [
    ("Change", "change", None),
    ("Type", "type", None),
    ("Old size", "old_size", None),
    ("New size", "new_size", None),
    ("What", "changes", None),
    ("Path", "path", None),
]
DIFF_PRIORITY = ("path", "change", "changes", "type", "new_size", "old_size")


def _emit_rows(rows: Any, columns: list[output.Column], priority: tuple[str, ...] = ()) -> int:
    """JSON streams one record at a time (memory does not grow with the backup); YAML and
    tables take the records as a list. Returns how many there were."""
    import json

    if output.OPTS.output == "json" and not output.OPTS.columns and not output.OPTS.sort_columns:
        n = 0
        sys.stdout.write("[")
        for row in rows:
            sys.stdout.write(("," if n else "") + "\n  " + json.dumps(output.normalize_times(row)))
            n += 1
        sys.stdout.write("\n]\n" if n else "]\n")
        sys.stdout.flush()
        return n
    listed = list(rows)
    if output.structured():
        output.emit_document(listed, columns)
    else:
        output.emit_table(listed, columns, priority=priority)
    return len(listed)


@app.command("ls")
def ls(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    path: Annotated[
        str | None, typer.Argument(help="Only this path and what is below it (absolute, as backed up).")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination.")
    ] = None,
) -> None:
    """List the entries stored in a backup, in path order: type, mode, owner, size, mtime.

    For database sources the entries are the stored dump files. JSON records have the keys
    path, type, size, mode (octal), mtime (UTC), mtime_ns, user, group, target (symlinks and
    hard links) and source (the source type); a byte that is not UTF-8 shows as \\xNN.

    Example: backupctl backup ls 1a2b3c4d /srv/app/config -o json
    """
    from backupctl.backups.browse import list_items

    with CliReporter() as reporter:
        svc = context.service(reporter)
        record, repo, manifest = svc.completed_backup(backup_id, destination)
        prefix = (path or "").strip("/")

        def rows() -> Any:
            for row in list_items(repo, manifest, path):
                if not output.structured():
                    row["shown"] = row["path"] + (f" -> {row['target']}" if row["target"] else "")
                yield row

        n = _emit_rows(rows(), LS_FIELDS if output.structured() else LS_COLUMNS, LS_PRIORITY)
    if n == 0 and prefix:
        raise NotFoundError(
            f"backup {record['short_id']} holds no path /{prefix}",
            hint=f"see `backupctl backup ls {record['short_id']}`",
        )


@app.command("diff")
def diff(
    backup_a: Annotated[str, typer.Argument(help="The older backup (ID or unique prefix).")],
    backup_b: Annotated[str, typer.Argument(help="The newer backup (ID or unique prefix).")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination.")
    ] = None,
) -> None:
    """Show what was added, removed and changed from backup A to backup B, in path order.

    A change names what differs: content, mode, owner, mtime or type. JSON records have the
    keys change (added/removed/changed), path, type, old_size, new_size, changes (a list)
    and source.

    Example: backupctl backup diff 1a2b3c4d 5e6f7a8b -o json
    """
    from backupctl.backups.browse import diff_backups

    with CliReporter() as reporter:
        svc = context.service(reporter)
        _, repo_a, manifest_a = svc.completed_backup(backup_a, destination)
        _, repo_b, manifest_b = svc.completed_backup(backup_b, destination)

        _emit_rows(diff_backups(repo_a, manifest_a, repo_b, manifest_b), DIFF_COLUMNS, DIFF_PRIORITY)


@app.command("delete")
def delete(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="Delete only from this destination.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    retry_lock: RetryLockOpt = None,
    max_unused: Annotated[
        str,
        typer.Option(
            "--max-unused",
            help="Also repack packs until at most this share of the repository is unused data "
            "(as `backup prune --max-unused`; the default 100% never repacks).",
        ),
    ] = "100%",
) -> None:
    """Delete a backup and the data only it referenced.

    Example: backupctl backup delete 1a2b3c4d --yes
    """
    from backupctl.repo.repack import parse_max_unused

    unused_share = parse_max_unused(max_unused)
    wait = parse_retry_lock(retry_lock)
    with CliReporter() as reporter:
        svc = context.service(reporter)
        svc.set_lock_wait(wait)
        record = svc.find_backup(backup_id, destination)
        context.confirm(
            f"Delete backup {record['short_id']} of {record['deployment']} created {human_time(record['started'])}?",
            yes=yes,
        )
        result = svc.delete_backup(backup_id, destination, unused_share)
    if output.structured():
        output.emit_document(result)
    else:
        output.message(f"Deleted backup {result['id'][:8]}; freed {human_bytes(result['freed_bytes'])}.")


@app.command("verify")
def verify(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="Verify the copy at this destination.")
    ] = None,
) -> None:
    """Read back every chunk of a backup and check authentication and hashes.

    Example: backupctl backup verify 1a2b3c4d --destination s3
    """
    with CliReporter() as reporter:
        result: dict[str, Any] = context.service(reporter).verify_backup(backup_id, destination)
    if output.structured():
        output.emit_document(result)
    else:
        for problem in result["errors"]:
            sys.stderr.write(f"damaged: {problem}\n")
        if result["ok"]:
            output.message(
                f"Backup {result['id'][:8]} is intact: {result['blobs_checked']} objects, "
                f"{human_bytes(result['bytes_checked'])} read back."
            )
    if not result["ok"]:
        raise IntegrityError(
            f"backup {result['id'][:8]} is damaged: {len(result['errors'])} objects failed verification"
        )


@app.command("upload")
def upload(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    destination: Annotated[
        list[str] | None, typer.Option("--destination", help="Only this destination (repeatable).")
    ] = None,
) -> None:
    """Upload a backup to its deployment's remote destinations, or retry a failed upload.

    Only objects a destination lacks are sent. Example: backupctl backup upload 1a2b3c4d --destination s3
    """
    with CliReporter() as reporter:
        states = context.service(reporter).upload_backup(backup_id, destination or None)
    rows = [{"destination": n, **st} for n, st in states.items()]
    if output.structured():
        output.emit_document({"id": backup_id, "destinations": states})
    else:
        output.emit_table(
            rows,
            [
                ("Destination", "destination", None),
                ("State", "state", None),
                ("Sent", "bytes_sent", human_bytes),
                ("Duration", "duration_s", human_duration),
                ("Error", "error", None),
            ],
        )
    if any(st["state"] == "failed" for st in states.values()):
        raise typer.Exit(ExitCode.FAILED)


@app.command("download")
def download(
    backup_id: Annotated[str, typer.Argument(help="Backup ID or a unique prefix of it.")],
    part: Annotated[str, typer.Option("--part", help="all, database or files.")] = "all",
    out: Annotated[
        str, typer.Option("--output-file", "--out", "-O", help="File to write, or - for stdout.")
    ] = "-",
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read from this destination.")
    ] = None,
) -> None:
    """Write a backup in standard formats: a tar for files, the native dump for databases
    (a tar of the dumps when a backup holds several, e.g. every pg_dump backup).

    Example: backupctl backup download 1a2b3c4d --part files --out shop-files.tar
    """
    if part not in ("all", "database", "files"):
        raise typer.BadParameter("must be all, database or files", param_hint="--part")
    with CliReporter() as reporter:
        svc = context.service(reporter)
        if out == "-":
            if sys.stdout.isatty():
                raise typer.BadParameter(
                    "refusing to write binary data to a terminal; use --out FILE or a pipe",
                    param_hint="--out",
                )
            result = svc.download_backup(backup_id, part, sys.stdout.buffer, destination)
            sys.stdout.buffer.flush()
            return
        path = Path(out)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "wb") as fh:
                result = svc.download_backup(backup_id, part, fh, destination)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    result["output"] = str(path)
    if output.structured():
        output.emit_document(result)
    else:
        output.message(
            f"Wrote {path} ({result['format']}, {result['files']} files, {human_bytes(result['bytes'])})."
        )


@app.command("prune")
def prune(
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Only this deployment.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    retry_lock: RetryLockOpt = None,
    max_unused: Annotated[
        str,
        typer.Option(
            "--max-unused",
            help="Repack packs until at most this share of each repository is unused data "
            "(as restic's prune; 0% repacks every pack with a dead blob, 100% never repacks).",
        ),
    ] = "5%",
) -> None:
    """Apply the retention rules of each deployment's policy; list what is kept and why.

    Then remove what no backup references from each repository: packs of failed or
    interrupted backups and temporary files older than an hour; and copy the live data of
    mostly-unused packs into new packs (--max-unused) so their space is freed.
    Example: backupctl backup prune --deployment shop --dry-run
    """
    from backupctl.repo.repack import parse_max_unused
    from backupctl.schedule.scheduler import Scheduler

    unused_share = parse_max_unused(max_unused)
    wait = parse_retry_lock(retry_lock)
    repositories: list[dict[str, Any]] = []
    with CliReporter() as reporter:
        svc = context.service(reporter)
        svc.set_lock_wait(wait)
        names = [deployment] if deployment else list(svc.config.deployments)
        if deployment:
            svc.deployment(deployment)
        scheduler = Scheduler(svc)
        plan = [row for name in names for row in scheduler.apply_retention(name, dry_run=True)]
        doomed = [r for r in plan if r["action"] == "delete"]
        if doomed and not dry_run:
            context.confirm(f"Delete {len(doomed)} backups that retention no longer keeps?", yes=yes)
            for name in names:
                scheduler.apply_retention(name, dry_run=False)
        if not dry_run:
            repositories = _collect_garbage(svc, names, unused_share)
    if output.structured():
        output.emit_document({"dry_run": dry_run, "decisions": plan, "repositories": repositories})
        return
    output.emit_table(
        plan,
        [
            ("ID", "id", None),
            ("Deployment", "deployment", None),
            ("Started", "started", human_time),
            ("Created by", "created_by", None),
            ("Action", "action", None),
            ("Why", "reasons", lambda v: "; ".join(v)),
        ],
        # A dry run is read for its decisions: on a narrow terminal the context columns go first.
        priority=("id", "action", "reasons", "deployment", "started", "created_by"),
    )
    verb = "would delete" if dry_run else "deleted"
    output.message(f"{verb} {len(doomed)} of {len(plan)} backups")
    for r in repositories:
        output.message(_prune_summary(r))


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 warning', '2 warnings' (`plural` for irregular nouns)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _prune_summary(r: dict[str, Any]) -> str:
    """One line per repository from the engine's prune result (the engine prints nothing)."""
    from backupctl.repo.prune import GRACE

    text = (
        f"{r['destination']}: deleted {_count(r['packs_deleted'], 'unreferenced pack')} and "
        f"{_count(r['temp_files_deleted'], 'temporary file')}"
    )
    if r.get("packs_repacked"):
        text += f", repacked {_count(r['packs_repacked'], 'pack')} into {r['packs_written']}"
    text += f", freed {human_bytes(r['freed_bytes'])}"
    if r.get("young_packs_kept"):
        text += (
            f"; kept {_count(r['young_packs_kept'], 'unreferenced pack')} younger than {GRACE / 60:g} min "
            "(a backup may still be writing them)"
        )
    return text


def _collect_garbage(
    svc: Any, deployments: list[str], max_unused: float | None = None
) -> list[dict[str, Any]]:
    """Prune every repository the deployments write to (those that exist)."""
    from backupctl.errors import NoRepositoryError

    out = []
    for dest in dict.fromkeys(d for name in deployments for d in svc.deployment(name).destinations):
        try:
            out.append(svc.prune_repository(dest, max_unused))
        except NoRepositoryError:
            continue
    return out
