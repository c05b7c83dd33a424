"""`backupctl schedule ...`: run what is due (cron), a daemon, and exports for other schedulers."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import RetryLockOpt, parse_retry_lock
from backupctl.cli.output import human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode
from backupctl.events import CANCEL
from backupctl.schedule.scheduler import Scheduler

app = typer.Typer(
    help="Run scheduled backups: from cron, as a daemon, or exported to other schedulers.",
    no_args_is_help=True,
)

RUN_COLUMNS: list[output.Column] = [
    ("Deployment", "deployment", None),
    ("Policy", "policy", None),
    ("Schedule", "schedule", None),
    ("Type", "type", None),
    ("Slot", "slot", human_time),
    ("Backup", "backup_id", lambda v: v or ""),
    ("Status", "status", None),
    ("Error", "error", None),
]


# Binary log syncs (pitr.binlog_sync) add how many files they archived.
ARCHIVED_COLUMN: output.Column = ("Archived", "archived", lambda v: "" if v is None else str(v))

UPCOMING_COLUMNS: list[output.Column] = [
    ("Deployment", "deployment", None),
    ("Kind", "kind", None),
    ("Policy", "policy", None),
    ("Schedule", "schedule", None),
    ("Type", "type", None),
    ("Next run", "next_run", human_time),
    ("In its zone", "next_run_in_zone", None),
    ("Last run", "last_run", human_time),
    ("Last status", "last_status", None),
    ("Last error", "last_error", None),
]
# What a narrow terminal keeps, most important first (deployment and policy are never dropped).
UPCOMING_PRIORITY = [
    "deployment",
    "policy",
    "next_run",
    "schedule",
    "last_status",
    "type",
    "next_run_in_zone",
]


def _failed(row: dict[str, Any]) -> bool:
    """A failed backup or sync, a backup whose upload failed, or one whose retention did not run."""
    status = str(row.get("status", ""))
    return (
        status == "Failed"
        or status.startswith("failed")
        or bool(row.get("retention_error"))
        or bool(row.get("failed_uploads"))
    )


def _render_runs(rows: list[dict[str, Any]]) -> None:
    """With --quiet (cron), only failures are printed, so cron mails only when something is wrong."""
    if output.structured():
        output.emit_document(rows)
        return
    shown = [r for r in rows if _failed(r)] if output.OPTS.quiet else rows
    columns = RUN_COLUMNS + ([ARCHIVED_COLUMN] if any(r.get("kind") == "binlog_sync" for r in shown) else [])
    if shown:
        output.emit_table(shown, columns)
    elif not rows:
        output.message("nothing is due")


@app.command("run-due")
def run_due(retry_lock: RetryLockOpt = None) -> None:
    """Run every backup that is due now, apply retention, archive binary logs, then exit.

    Meant for cron or a systemd timer; running it twice in the same minute starts
    nothing twice. Deployments with `pitr: {binlog_sync: 5m}` also get their MariaDB/MySQL
    binary logs archived once per interval (rows of kind binlog_sync). Exit code 1 when a
    backup or a sync failed, or when retention could not run after a backup (one line on
    stderr, even with --quiet). Example: * * * * * backupctl schedule run-due --quiet
    """
    wait = parse_retry_lock(retry_lock)
    with CliReporter() as reporter:
        svc = context.service(reporter)
        svc.set_lock_wait(wait)
        rows = Scheduler(svc).run_due()
    _render_runs(rows)
    _report_retention(rows)
    if any(_failed(r) for r in rows):
        raise typer.Exit(ExitCode.FAILED)


def _report_retention(rows: list[dict[str, Any]]) -> None:
    """One line on stderr per retention step that did not run, even with --quiet: old
    backups that should be gone are still there, and cron must mail about it."""
    for row in rows:
        if row.get("retention_error"):
            sys.stderr.write(
                f"error: retention of {row['deployment']} did not run after backup "
                f"{(row.get('backup_id') or '')[:8]}: {row['retention_error']}\n"
            )


@app.command("list")
def list_() -> None:
    """List what the scheduler runs next: each deployment's backups, binary log sync and drills.

    Next run, and the last run with its status (binary log syncs and restore drills: as
    recorded on this host). Example: backupctl schedule list -o json
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        rows = Scheduler(svc).upcoming()
    zones = _schedule_zones(svc.config)
    for row in rows:
        row["timezone"] = zones.get((str(row.get("policy")), str(row.get("schedule"))))
    if output.structured():
        flat = [c for c in UPCOMING_COLUMNS if c[1] != "next_run_in_zone"]
        output.emit_document(rows, [*flat, ("Timezone", "timezone", None)])
    elif rows:
        for row in rows:  # the next run in the schedule's own zone, beside local time
            row["next_run_in_zone"] = _in_zone(row.get("next_run"), row["timezone"])
        output.emit_table(rows, UPCOMING_COLUMNS, priority=UPCOMING_PRIORITY)
    else:
        output.message("nothing is scheduled")


def _schedule_zones(cfg: Any) -> dict[tuple[str, str], str]:
    """(policy, schedule key) -> the schedule's IANA time zone."""
    from backupctl.policy.resolve import policies

    return {
        (name, key): schedule.timezone
        for name, policy in policies(cfg).items()
        for key, schedule in zip(policy.schedule_keys(), policy.schedules, strict=True)
    }


def _in_zone(value: str | None, zone: str | None) -> str:
    if not value or not zone:
        return ""
    from zoneinfo import ZoneInfo

    from backupctl.timefmt import parse_iso

    return f"{parse_iso(value).astimezone(ZoneInfo(zone)).strftime('%Y-%m-%d %H:%M')} {zone}"


@app.command("daemon")
def daemon(
    poll: Annotated[int, typer.Option("--poll", help="Re-read the config at least every N seconds.")] = 60,
) -> None:
    """Run in the foreground, sleeping until the next backup or binary log sync is due.

    SIGTERM/SIGINT stop it cleanly: a running backup finishes first (a second signal
    stops at once; the interrupted backup is then Failed, never half-visible).
    Example: backupctl schedule daemon
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            CANCEL.set()  # running backups stop at their next progress point and end Failed
            raise KeyboardInterrupt
        stop.set()
        output.message("stopping after the running backups finish (signal again to stop now)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    output.message("backupctl scheduler started")
    while not stop.is_set():
        with CliReporter() as reporter:
            scheduler = Scheduler(context.service(reporter))
            rows = scheduler.run_due()
            if rows and not output.OPTS.quiet:
                _render_runs(rows)
            _report_retention(rows)
            upcoming = scheduler.next_run()
        wait = float(poll)
        if upcoming is not None:
            wait = max(1.0, min(wait, (upcoming - scheduler.clock.now()).total_seconds() + 1))
        stop.wait(wait)
    output.message("backupctl scheduler stopped")


@app.command("export")
def export(
    format: Annotated[
        str | None,
        typer.Argument(metavar="FORMAT", help="crontab, systemd or kubernetes (same as --format)."),
    ] = None,
    format_: Annotated[
        str | None, typer.Option("--format", "-f", help="crontab (default), systemd or kubernetes.")
    ] = None,
    per_schedule: Annotated[
        bool,
        typer.Option(
            "--per-schedule",
            help="crontab, systemd: wake at each schedule's times instead of every minute.",
        ),
    ] = False,
    user: Annotated[
        str | None, typer.Option("--user", help="systemd: User= of the service (default: you).")
    ] = None,
    image: Annotated[str, typer.Option("--image", help="kubernetes: container image.")] = "backupctl:latest",
    namespace: Annotated[str | None, typer.Option("--namespace", help="kubernetes: namespace.")] = None,
) -> None:
    """Print the entries that let an existing scheduler run backupctl.

    They run as printed: the absolute path of this backupctl (or this Python with
    -m backupctl), the absolute config path, --quiet and --retry-lock. Kubernetes: per
    deployment a CronJob, a ConfigMap and a state claim; see docs/scheduling.md.
    Example: backupctl schedule export systemd --user backup
    """
    from backupctl.policy.export import export as render

    if format is not None and format_ is not None and format != format_:
        raise typer.BadParameter(
            f"FORMAT {format!r} and --format {format_!r} disagree", param_hint="--format"
        )
    chosen = format or format_ or "crontab"
    if chosen not in ("crontab", "systemd", "kubernetes"):
        hint = "FORMAT" if format else "--format"
        raise typer.BadParameter("must be crontab, systemd or kubernetes", param_hint=hint)
    cfg = context.config()
    text = render(
        cfg,
        chosen,
        config_path=str(cfg.path) if cfg.path else None,
        mode="per-schedule" if per_schedule else "minutely",
        user=user,
        image=image,
        namespace=namespace,
    )
    if output.structured():
        output.emit_document({"format": chosen, "text": text})
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
