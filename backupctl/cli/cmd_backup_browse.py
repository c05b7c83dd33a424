"""`backupctl backup ls` and `backup diff`: what backups contain, entry by entry.

Registered on the `backup` group (cmd_backup.app) when imported; cli/main.py imports this
module only when `ls` or `diff` is used. A backup may hold millions of entries, so JSON
output is streamed one record at a time (`_emit_rows`) instead of built as one document.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import app
from backupctl.cli.output import human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import NotFoundError

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
