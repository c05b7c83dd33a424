"""`backupctl backup clone`: a new deployment from a database backup.

Registered on the `backup` group (backupctl.cli.main._SUBCOMMANDS), so that `backup list`
does not import it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import (
    ToLsnOpt,
    ToNameOpt,
    ToPositionOpt,
    ToTimeOpt,
    app,
    moment_from_options,
)
from backupctl.cli.output import human_time
from backupctl.cli.progress import CliReporter
from backupctl.clone.api import clone_backup
from backupctl.errors import ExitCode


@app.command("clone")
def clone(
    name: Annotated[str, typer.Option("--name", help="Name of the new deployment.")],
    backup_id: Annotated[
        str | None,
        typer.Argument(help="Backup ID or a unique prefix of it (optional with --deployment and --to-*)."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="Name of the cloned database (default: <db>_<NAME>; logical only)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Clone onto this server instead of the original one.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="Port of that server (logical), or of the cloned data directory (physical)."
        ),
    ] = None,
    datadir: Annotated[
        Path | None,
        typer.Option("--datadir", help="New, empty data directory for a physical backup (required there)."),
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Read the backup from this destination.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")
    ] = False,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment", "-d", help="Point-in-time clone: the deployment (picks the base backup)."
        ),
    ] = None,
    to_time: ToTimeOpt = None,
    to_lsn: ToLsnOpt = None,
    to_name: ToNameOpt = None,
    to_position: ToPositionOpt = None,
) -> None:
    """Create a new deployment NAME from a database backup, leaving the original untouched.

    A logical backup (pg_dump, mariadb-dump) becomes new database(s) on the same server
    (or --host/--port) owned by a new account NAME_owner with a newly generated password;
    a physical backup (pg_basebackup, mariabackup) becomes a new data directory (--datadir).
    The password is shown once on a terminal and stored in a 0600 file under
    ~/.config/backupctl/secrets/; the new deployment is added to the config file.
    With -o json the document names the password file, never the password.

    With --to-time/--to-lsn/--to-name/--to-position (point-in-time clone, docs/pitr.md) the
    newest physical backup before that moment (or BACKUP_ID) is restored into --datadir, the
    archived WAL or binary logs are replayed up to the moment, and the clone is promoted:
    a normal server of its own that no longer reads the original's archive.

    Example: backupctl backup clone 1a2b3c4d --name staging

    Example: backupctl backup clone --deployment shop --to-time "2026-11-20 09:03:00 Europe/Berlin" --name shop_0903 --datadir /srv/pg-0903
    """
    moment = moment_from_options(to_time, to_lsn, to_name, to_position)
    if moment is None and backup_id is None:
        raise typer.BadParameter(
            "give a backup ID (or --deployment with --to-time/--to-lsn/--to-name/--to-position)"
        )
    with CliReporter() as reporter:
        svc = context.service(reporter)
        if moment is None:
            assert backup_id is not None
            record = svc.find_backup(backup_id, destination)
            what = f"backup {record['short_id']} of {record['deployment']} created {human_time(record['started'])}"
        else:
            what = f"{('backup ' + backup_id) if backup_id else 'deployment ' + repr(deployment)} at {moment.describe()}"
        context.confirm(
            f"Clone {what} into a new deployment {name!r} (the config file will gain it)?",
            yes=yes,
        )
        result = clone_backup(
            svc,
            backup_id,
            name=name,
            database=database,
            host=host,
            port=port,
            datadir=datadir,
            destination=destination,
            deployment=deployment,
            moment=moment,
        )
    password = result.pop("password", None)
    if output.structured():
        output.emit_document(result)
    else:
        if result["kind"] == "logical":
            what = ", ".join(f"{o} -> {n}" for o, n in result["databases"].items())
            output.message(
                f"Cloned backup {result['backup_id'][:8]} into deployment {name}: {what} on "
                f"{result['host']}:{result['port']}, owned by {result['user']}."
            )
        elif result.get("target_moment"):
            output.message(
                f"Cloned {result['from_deployment']} at {result['target_moment']} (base backup "
                f"{result['backup_id'][:8]}) into deployment {name}: data directory {result['datadir']}, "
                f"port {result['port']}. Start it with: {result['start_command']}"
            )
        else:
            output.message(
                f"Cloned backup {result['backup_id'][:8]} into deployment {name}: data directory "
                f"{result['datadir']}, port {result['port']}. Start it with: {result['start_command']}"
            )
        if password and sys.stderr.isatty():
            # Shown once, on the terminal only; never on stdout (pipes, logs) nor in JSON.
            sys.stderr.write(f"Password of {result['user']} (shown once): {password}\n")
        if result.get("password_file"):
            output.message(f"The password is stored in {result['password_file']} (mode 0600).")
        sys.stdout.write(name + "\n")
    if reporter.warnings:
        raise typer.Exit(ExitCode.PARTIAL)
