"""`backupctl backup delete`, `verify`, `upload`, `download` and `prune`: looking after stored backups.

Registered on the `backup` group (cmd_backup.app) when imported; cli/main.py imports this
module only when one of these commands is used. The engine prints nothing: the one-line
summaries of a prune are written here (`_prune_summary`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import RetryLockOpt, app, parse_retry_lock
from backupctl.cli.output import human_bytes, human_count, human_duration, human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode, IntegrityError


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


def _prune_summary(r: dict[str, Any]) -> str:
    """One line per repository from the engine's prune result (the engine prints nothing)."""
    from backupctl.repo.prune import GRACE

    text = (
        f"{r['destination']}: deleted {human_count(r['packs_deleted'], 'unreferenced pack')} and "
        f"{human_count(r['temp_files_deleted'], 'temporary file')}"
    )
    if r.get("packs_repacked"):
        text += f", repacked {human_count(r['packs_repacked'], 'pack')} into {r['packs_written']}"
    text += f", freed {human_bytes(r['freed_bytes'])}"
    if r.get("young_packs_kept"):
        text += (
            f"; kept {human_count(r['young_packs_kept'], 'unreferenced pack')} younger than {GRACE / 60:g} min "
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
