"""`backupctl status`: is every deployment protected? Thin: backupctl.monitor does the work."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from backupctl.cli import context, output
from backupctl.errors import ExitCode, UsageError

GraceOpt = Annotated[
    str | None,
    typer.Option(
        "--grace",
        help="How late a scheduled backup may be before the deployment counts as overdue, e.g. 30m "
        "(default: notifications.overdue_grace, 1h).",
        metavar="DURATION",
    ),
]


COLUMNS: list[output.Column] = [
    ("Deployment", "deployment", None),
    ("Last backup", "last_backup", output.human_time),
    ("Age", "age_s", output.human_duration),
    ("Next run", "next_run", output.human_time),
    ("Last drill", "last_drill", output.human_time),
    ("Restore", "restore_s", output.human_duration),
    ("RPO", "rpo_s", output.human_duration),
    ("PITR until", "pitr_until", output.human_time),
    ("Problems", "problems", None),
]


# On a narrow terminal the problems and the RPO are what must stay visible.
PRIORITY = [
    "deployment",
    "problems",
    "rpo_s",
    "age_s",
    "last_backup",
    "next_run",
    "last_drill",
    "restore_s",
    "pitr_until",
]


def parse_grace(text: str | None, option: str = "--grace") -> dt.timedelta | None:
    """A duration option's value (None stays None); UsageError (exit 2) with one line when it
    is not a duration."""
    if text is None:
        return None
    from backupctl.policy.models import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def status(grace: GraceOpt = None) -> None:
    """Show whether every deployment is protected: last backup, next run, last drill, RPO, problems.

    One row per deployment: the last completed backup and its age, the next scheduled run, the
    last successful restore drill and its restore time, RPO now (now minus the newest
    restorable moment, PITR window included), the PITR window end and the problems.

    Problems: never_backed_up, last_run_failed, overdue (a scheduled slot older than --grace
    has no backup), upload_failed, upload_pending, copy_missing, archive_gap, drill_failed,
    destination_unreachable, repository_unreadable. Exit code 9 when any deployment has a
    problem, 0 otherwise: usable as a Nagios-style check. -o json prints the whole document
    (docs/monitoring.md).

    Example: backupctl status -o json
    """
    from backupctl.monitor import health
    from backupctl.monitor import status as status_rows

    delta = parse_grace(grace)
    service = context.service()
    try:
        doc = health.compute(service, grace=delta)
    finally:
        service.close()
    if output.OPTS.output in ("value", "csv"):  # the table's rows; json/yaml: the whole document
        output.emit_document(status_rows.rows(doc), COLUMNS)
    elif output.structured():
        output.emit_document(doc)
    else:
        output.emit_table(status_rows.rows(doc), COLUMNS, priority=PRIORITY)
        lines = status_rows.problem_lines(doc)
        if lines:
            typer.echo("\n" + "\n".join(lines))
    if not doc["ok"]:
        raise typer.Exit(ExitCode.PROBLEMS)
