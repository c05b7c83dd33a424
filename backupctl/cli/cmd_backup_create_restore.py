"""`backupctl backup create` and `backup restore`: taking a backup and restoring one.

Registered on the `backup` group (cmd_backup.app) when imported; cli/main.py imports this
module only when `create` or `restore` is used. `restore` with a --to-* option is a
point-in-time restore (`_restore_to_moment`, the pitr package); the options it shares with
`backup clone` are declared in cmd_backup.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import (
    RetryLockOpt,
    ToLsnOpt,
    ToNameOpt,
    ToPositionOpt,
    ToTimeOpt,
    app,
    moment_from_options,
    parse_retry_lock,
)
from backupctl.cli.output import human_bytes, human_count, human_duration, human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode, UsageError


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
        output.warning(f"{human_count(record['warnings'], 'warning')} (see above); the backup is usable")
        raise typer.Exit(ExitCode.PARTIAL)


def _target_is_live(target: Path | None) -> bool:
    """True when a restore would overwrite existing data and so needs a confirmation."""
    if target is None:
        return True
    return target.exists() and (not target.is_dir() or any(os.scandir(target)))


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
