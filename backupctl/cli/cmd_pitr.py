"""`backupctl pitr ...`: point-in-time recovery set-up, window, verification and log retention."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.output import human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode
from backupctl.pitr import dispatch, mariadb, postgres
from backupctl.pitr.retention import prune_logs

app = typer.Typer(
    help="Point-in-time recovery: archive set-up, the recoverable window, verification.", no_args_is_help=True
)

DeploymentArg = Annotated[str, typer.Argument(help="Deployment name from the config.")]


@app.command("setup")
def setup(
    deployment: DeploymentArg,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the settings with ALTER SYSTEM and reload (PostgreSQL).")
    ] = False,
    command: Annotated[
        str | None,
        typer.Option(
            "--command",
            help="How the database server runs backupctl's light entry point (default: this Python with "
            "`-m backupctl.wal`, or $BACKUPCTL_WAL_COMMAND).",
        ),
    ] = None,
) -> None:
    """Print (or apply) the server settings continuous archiving needs; creates the repository.

    PostgreSQL: wal_level, archive_mode and archive_command (a restart is needed when
    archive_mode or wal_level change). MariaDB/MySQL: checks log_bin and server_id (set in
    the server's configuration; --apply cannot change them) and prints the `binlog sync`
    commands to run from cron or as a service.

    Example: backupctl pitr setup shop --apply
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        dep = svc.deployment(deployment)
        if dispatch.family_for(dep) == "mariadb":
            _setup_mariadb(mariadb.setup(svc, deployment), dep.pitr.binlog_sync if dep.pitr else None)
            return
        result = postgres.setup_postgres(svc, deployment, apply=apply, prefix=command)
    if output.structured():
        output.emit_document(result)
        return
    if result["applied"]:
        output.message(f"Applied to {deployment} with ALTER SYSTEM and reloaded:")
    else:
        output.message(f"Settings for {deployment} (postgresql.conf, or run again with --apply):")
    for key, value in result["settings"].items():
        typer.echo(f"{key} = '{value}'")
    for warning in result["warnings"]:
        output.warning(warning)
    # The most common first failure: the server's OS user cannot run this interpreter (e.g. one
    # under /root); `pitr check` then only times out, so say it before the user gets there.
    output.message(
        "PostgreSQL runs archive_command as its own OS user (e.g. postgres): that user must be able "
        "to run the command above, read the config and key file, and write the repository "
        f'{result["repository"]} (otherwise use --command; docs/pitr.md, "Who runs the archive command").'
    )
    if result["applied"]:
        if result["restart_needed"]:
            output.warning(
                f"restart PostgreSQL for {', '.join(result['pending_restart'])} to take effect, "
                f"then run `backupctl pitr check {deployment}`"
            )
        else:
            output.message(f"No restart needed. Check it with `backupctl pitr check {deployment}`.")
    else:
        output.message(
            "archive_mode and wal_level take effect after a restart; archive_command after a reload."
        )


def _setup_mariadb(result: dict[str, Any], scheduled: str | None) -> None:
    """`scheduled`: the deployment's pitr.binlog_sync interval, when the scheduler archives."""
    if output.structured():
        output.emit_document({**result, "binlog_sync": scheduled})
    else:
        for key, value in result["settings"].items():
            typer.echo(f"{key} = {value}")
        for problem in result["problems"]:
            output.warning(problem)
        for warning in result["warnings"]:
            output.warning(warning)
        if not result["ok"]:
            output.message("Fix the server's configuration, restart it and run `backupctl pitr setup` again.")
        elif scheduled:
            output.message(
                f"Archived by the scheduler every {scheduled} (pitr.binlog_sync): run "
                "`backupctl schedule run-due` every minute from cron or a timer (`schedule export`)"
            )
        else:
            output.message(
                f"Archive closed binary logs from the scheduler: set `pitr: {{binlog_sync: 5m}}` under "
                f"deployments.{result['deployment']} in the config (`schedule run-due` then syncs every 5 minutes)"
            )
            output.message(f"or from cron: {result['sync_command']}")
            output.message(f"or continuously: {result['follow_command']}")
    if not result["ok"]:
        raise typer.Exit(ExitCode.CONFIG)


@app.command("check")
def check(
    deployment: DeploymentArg,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the segment.")] = 60.0,
) -> None:
    """Write a transaction, switch to a new WAL segment and wait until it is archived.

    MariaDB/MySQL: close the current binary log (FLUSH BINARY LOGS), archive it with
    `binlog sync` and confirm that it arrived.

    Example: backupctl pitr check shop
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        dep = svc.deployment(deployment)
        if dispatch.family_for(dep) == "mariadb":
            result = mariadb.check(svc, deployment)
        else:
            result = postgres.check_postgres(svc, deployment, timeout=timeout)
    if output.structured():
        output.emit_document(result)
    else:
        what = result.get("segment") or result.get("binlog")
        output.message(f"OK: {what} arrived in the archive of {deployment} after {result['seconds']} s.")


def _span(g: dict[str, Any]) -> str:
    if g["count"] == 1:
        return str(g["first"])
    return f"{g['first']}..{g['last']} ({g['count']} files)"


def _gap_text(g: dict[str, Any]) -> str:
    if g["kind"] == "missing_segments":
        return f"missing WAL {_span(g)} (timeline {g['timeline']})"
    if g["kind"] == "timeline_change":
        return f"timeline {g['timeline']} starts at {g['first']}" + (
            "" if g.get("history_file") else " (no history file archived)"
        )
    if g["kind"] == "missing_binlogs":
        return f"missing binary logs {_span(g)}, between {g['after']} and {g['before']}"
    if g["kind"] in ("backup_without_wal", "backup_without_binlog"):
        return f"backup {g['backup'][:8]}: {g['reason']}"
    return str(g)


@app.command("show")
def show(deployment: DeploymentArg) -> None:
    """Show the recoverable window: earliest and latest moment, and gaps in the archive.

    Example: backupctl pitr show shop -o json
    """
    with CliReporter() as reporter:
        result = dispatch.show(context.service(reporter), deployment)
    if output.structured():
        output.emit_document(result)
        return
    pairs = [
        ("Deployment", deployment),
        ("Earliest", human_time(result["earliest"]) or "none (no usable backup)"),
        ("Latest", human_time(result["latest"]) or "none"),
        ("Archived files", str(result.get("segments", result.get("binlogs", 0)))),
        ("Engine", result.get("engine", "")),
    ]
    for b in result["backups"]:
        text = (
            f"{human_time(b['from'])} .. {human_time(b['to'])}"
            if b["usable"]
            else f"not usable: {b['reason']}"
        )
        pairs.append((f"Backup {b['id'][:8]}", text))
    for g in result["gaps"]:
        pairs.append(("Gap", _gap_text(g)))
    output.emit_fields(pairs)


@app.command("verify")
def verify(deployment: DeploymentArg) -> None:
    """Decrypt and hash-check every archived log file; check continuity from each backup on.

    Example: backupctl pitr verify shop
    """
    with CliReporter() as reporter:
        result = dispatch.verify(context.service(reporter), deployment)
    if output.structured():
        output.emit_document(result)
    else:
        output.message(f"Checked {result['checked']} archived files of {deployment}.")
        for d in result["damaged"]:
            output.warning(f"damaged: {d['object']}: {d['error']}")
        for p in result["problems"]:
            output.warning(_gap_text(p))
        if result["ok"]:
            output.message("The archive is complete and intact.")
    if not result["ok"]:
        raise typer.Exit(ExitCode.INTEGRITY)


@app.command("prune")
def prune(
    deployment: DeploymentArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete archived WAL / binary logs older than the oldest retained backup needs.

    Run it after `backupctl backup prune`; what a retained backup needs is never deleted.

    Example: backupctl pitr prune shop --dry-run
    """

    with CliReporter() as reporter:
        svc = context.service(reporter)
        plan = prune_logs(svc, deployment, dry_run=True)
        result = plan
        if plan["deleted"] and not dry_run:
            context.confirm(f"Delete {len(plan['deleted'])} archived log files of {deployment}?", yes=yes)
            result = prune_logs(svc, deployment, dry_run=False)
    if output.structured():
        output.emit_document(result)
    else:
        verb = "Would delete" if dry_run else "Deleted"
        # keep_from: {"wal": {backup, segment}} and/or {"binlog": {backup, file}}; empty without
        # a physical backup (nothing is deleted then).
        kept = [
            f"{v.get('segment') or v.get('file')} on (needed by backup {str(v['backup'])[:8]})"
            for v in result["keep_from"].values()
        ]
        output.message(
            f"{verb} {len(result['deleted'])} archived log files of {deployment}; "
            + (f"keeping {', '.join(kept)}." if kept else "no physical backup, so nothing is deleted.")
        )


@app.command("sync")
def sync(deployment: DeploymentArg) -> None:
    """Copy archived log files to the deployment's other destinations where they are missing.

    Example: backupctl pitr sync shop
    """
    with CliReporter() as reporter:
        result = dispatch.sync_copies(context.service(reporter), deployment)
    if output.structured():
        output.emit_document(result)
    else:
        if not result["destinations"]:
            output.message(f"{deployment} has one destination: there are no other copies to sync.")
        for name, counts in result["destinations"].items():
            summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            output.message(f"{name}: {summary or 'nothing archived yet'}")
