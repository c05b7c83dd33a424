"""`backupctl policy ...`: list, show, create, edit, pause, resume, delete.

Thin: parsing and rendering only; the work is in backupctl.policy.editor (checked,
comment-preserving writes to the config file) and backupctl.policy (schedules, retention).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.backups.service import Service
from backupctl.cli import context, output
from backupctl.cli.output import human_time, human_time_in
from backupctl.cli.progress import CliReporter
from backupctl.errors import AbortedError, ConfigError
from backupctl.pitr import dispatch as pitr
from backupctl.policy import config_file, edit_flags, editor, overview
from backupctl.tempdir import run_dir

app = typer.Typer(
    help="Backup policies: when deployments are backed up and which backups are kept.",
    no_args_is_help=True,
)


def _lines(values: Any) -> str:
    if not values:
        return ""
    return ("\n" if output.is_tty() else "; ").join(str(v) for v in values)


LIST_COLUMNS: list[output.Column] = [
    ("Name", "name", None),
    ("Deployments", "deployments", None),
    ("Types", "types", None),
    ("Status", "status", None),
    ("Created", "created", human_time),
    ("Recurrence", "recurrence", _lines),
    ("Next run", "next_run", human_time),
    ("Last full", "last_full", human_time),
    ("Last incremental", "last_incremental", human_time),
]
# What a narrow terminal keeps, most important first (name and status are never dropped).
LIST_PRIORITY = ["name", "status", "next_run", "deployments", "recurrence", "types", "last_full"]

BACKUP_COLUMNS: list[output.Column] = [
    ("ID", "id", None),
    ("Deployment", "deployment", None),
    ("Type", "type", None),
    ("Status", "status", None),
    ("Created by", "created_by", None),
    ("Started", "started", human_time),
    ("Expires", "expires", lambda v: human_time(v) or "never"),
    ("Kept by", "reason", None),
]

# ---- shared options ---------------------------------------------------------------------

Name = Annotated[str, typer.Argument(help="Policy name.")]
Cron = Annotated[
    str | None, typer.Option("--cron", help='Five-field cron expression, e.g. "0 5 * * *".', metavar="EXPR")
]
HourlyOpt = Annotated[int | None, typer.Option("--hourly", help="Every N hours (N divides 24).", metavar="N")]
Minute = Annotated[
    int | None, typer.Option("--minute", help="Minute past the hour for --hourly.", metavar="M")
]
DailyAt = Annotated[str | None, typer.Option("--daily-at", help="Every day at HH:MM.", metavar="HH:MM")]
Days = Annotated[
    str | None, typer.Option("--days", help="Weekdays for --daily-at, e.g. mon,wed,fri.", metavar="DAYS")
]
MonthlyDay = Annotated[
    str | None,
    typer.Option("--monthly-day", help="Day of the month (1-31 or last); time from --at.", metavar="D"),
]
At = Annotated[str | None, typer.Option("--at", help="Time for --monthly-day (HH:MM).", metavar="HH:MM")]
Interval = Annotated[
    str | None,
    typer.Option("--interval", help="Time after the last successful backup, e.g. 24h.", metavar="DURATION"),
]
Type = Annotated[
    str | None,
    typer.Option("--type", "-t", help="Schedule type: full or incremental (edit: which schedule to change)."),
]
Timezone = Annotated[
    str | None, typer.Option("--timezone", "--tz", help="IANA time zone of the schedule, e.g. Europe/Berlin.")
]
KeepLast = Annotated[int | None, typer.Option("--keep-last", help="Keep the N newest backups.", metavar="N")]
KeepWithin = Annotated[
    str | None,
    typer.Option("--keep-within", help="Keep every backup younger than this, e.g. 90d.", metavar="D"),
]
KeepHourly = Annotated[
    int | None, typer.Option("--keep-hourly", help="Keep one backup per hour for N hours.", metavar="N")
]
KeepDaily = Annotated[
    int | None, typer.Option("--keep-daily", help="Keep one backup per day for N days.", metavar="N")
]
KeepWeekly = Annotated[
    int | None, typer.Option("--keep-weekly", help="Keep one backup per week for N weeks.", metavar="N")
]
KeepMonthly = Annotated[
    int | None, typer.Option("--keep-monthly", help="Keep one backup per month for N months.", metavar="N")
]
KeepYearly = Annotated[
    int | None, typer.Option("--keep-yearly", help="Keep one backup per year for N years.", metavar="N")
]
IncludeManual = Annotated[
    bool | None,
    typer.Option(
        "--include-manual/--exempt-manual",
        help="Whether retention also deletes manual backups (default: exempt).",
    ),
]
Deployments = Annotated[
    list[str] | None,
    typer.Option("--deployment", "-d", help="Make this deployment use the policy (repeatable)."),
]
Paused = Annotated[
    bool | None, typer.Option("--paused/--active", help="Status: paused (nothing runs) or active.")
]
Description = Annotated[str | None, typer.Option("--description", help="Free text shown by `policy show`.")]


def _flags(
    *,
    cron: str | None,
    hourly: int | None,
    minute: int | None,
    daily_at: str | None,
    days: str | None,
    monthly_day: str | None,
    at: str | None,
    interval: str | None,
    type_: str | None,
    timezone: str | None,
    keep_last: int | None,
    keep_within: str | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    include_manual: bool | None,
    deployment: list[str] | None,
    paused: bool | None,
    description: str | None,
) -> edit_flags.PolicyFlags:
    if type_ is not None and type_ not in ("full", "incremental"):
        raise typer.BadParameter("must be full or incremental", param_hint="--type")
    return edit_flags.PolicyFlags(
        schedule=edit_flags.ScheduleFlags(
            type=type_,
            cron=cron,
            hourly=hourly,
            minute=minute,
            daily_at=daily_at,
            days=days,
            monthly_day=monthly_day,
            at=at,
            interval=interval,
            timezone=timezone,
        ),
        retention={
            "keep_last": keep_last,
            "keep_within": keep_within,
            "keep_hourly": keep_hourly,
            "keep_daily": keep_daily,
            "keep_weekly": keep_weekly,
            "keep_monthly": keep_monthly,
            "keep_yearly": keep_yearly,
            "include_manual": include_manual,
        },
        deployments=list(deployment or []),
        status=None if paused is None else ("paused" if paused else "active"),
        description=description,
    )


def _report(result: config_file.WriteResult) -> None:
    """After a write: the policy as it is now (from the re-loaded file), or what was deleted."""
    doc = result.as_dict()
    if result.action != "deleted":
        rows = [r for r in overview.policy_rows(context.config(), []) if r["name"] == result.policy]
        if rows:
            doc["recurrence"] = rows[0]["recurrence"]
            doc["status"] = rows[0]["status"]
            doc["next_run"] = rows[0]["next_run"]
    if output.structured():
        output.emit_document(doc)
        return
    if not result.changed:
        output.message(f"Policy {result.policy}: nothing to change.")
        return
    text = f"Policy {result.policy} {result.action}"
    if doc.get("recurrence"):
        text += f": {', '.join(doc['recurrence'])}"
    if result.action != "deleted":
        text += f"; status {doc.get('status')}"
        text += f"; next run {human_time(doc['next_run'])}" if doc.get("next_run") else "; no next run"
    output.message(text + ".")
    if result.deployments and result.action != "deleted":
        output.message(f"Deployments now using it: {', '.join(result.deployments)}.")
    for note in result.notes:
        output.message(note + ".")


# ---- commands -----------------------------------------------------------------------


@app.command("list")
def list_() -> None:
    """List policies: deployments, types, status, recurrence, next run, last full and incremental.

    The built-in `default` policy is listed when a deployment uses it.

    Example: backupctl policy list -o json
    """
    cfg = context.config()
    with CliReporter() as reporter:
        records, warnings = overview.load_records(Service(cfg, reporter))
    for w in warnings:
        output.warning(w)
    rows = overview.policy_rows(cfg, records)
    output.emit_list(rows, LIST_COLUMNS, priority=LIST_PRIORITY)


@app.command("show")
def show(name: Name) -> None:
    """Show a policy: schedules, next five runs, retention in words, and each backup's expiry.

    Example: backupctl policy show nightly
    """
    cfg = context.config()
    with CliReporter() as reporter:
        records, warnings = overview.load_records(Service(cfg, reporter))
        doc = overview.policy_detail(cfg, name, records)
        windows = pitr.deployment_windows(Service(cfg, reporter), list(doc["deployments"]))
    for w in warnings:
        output.warning(w)
    if windows:
        doc["pitr"] = windows
    if output.structured():
        output.emit_document(doc)
        return
    pairs = _policy_pairs(doc) + _next_run_pairs(doc)
    for i, rule in enumerate(doc["retention_rules"]):
        pairs.append(("Retention" if i == 0 else "", rule))
    pairs += _recoverable_pairs(doc.get("pitr", {}))
    output.emit_fields(pairs, record=doc)
    if doc["backups"] and not output.OPTS.columns:  # -c picks among the details above
        sys.stdout.write("\n")
        output.emit_table(doc["backups"], BACKUP_COLUMNS, title="Backups and their expiry")


def _policy_pairs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """`policy show`'s fields of the policy itself: what it is, its schedules and last backups."""
    pairs = [
        ("Name", doc["name"] + (" (built-in)" if doc["builtin"] else "")),
        ("Description", doc["description"] or ""),
        ("Status", doc["status"]),
        ("Created", human_time(doc["created"])),
        ("Deployments", ", ".join(doc["deployments"]) or "none"),
    ]
    for s in doc["schedules"]:
        pairs.append((f"Schedule {s['key']}", f"{s['type']}: {s['recurrence']}"))
    if doc["upload"] is not None:
        pairs.append(("Upload", "yes" if doc["upload"] else "no"))
    if doc["destinations"]:
        pairs.append(("Destinations", ", ".join(doc["destinations"])))
    pairs.append(("Last full", human_time(doc["last_full"]) or "none"))
    pairs.append(("Last incremental", human_time(doc["last_incremental"]) or "none"))
    return pairs


def _next_run_pairs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The "Next runs" lines: each in its schedule's own zone and in local time."""
    if not doc["next_runs"]:
        return [("Next runs", "none" + (" (paused)" if doc["status"] == "Paused" else ""))]
    zones = {s["key"]: s["timezone"] for s in doc["schedules"]}
    pairs = []
    for i, run in enumerate(doc["next_runs"]):
        when = human_time_in(run["time"], zones.get(run["schedule"]))
        pairs.append(("Next runs" if i == 0 else "", f"{when}  {run['type']}"))
    return pairs


def _recoverable_pairs(windows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """One "Recoverable DEPLOYMENT" line per deployment with archived WAL/binlogs."""
    pairs = []
    for dep, w in sorted(windows.items()):
        if w.get("error"):
            pairs.append((f"Recoverable {dep}", f"unknown: {w['error']}"))
            continue
        text = f"{human_time(w['earliest'])} to {human_time(w['latest'])}" if w["latest"] else "none yet"
        if w["gaps"]:
            text += f" ({w['gaps']} gap{'s' if w['gaps'] != 1 else ''})"
        pairs.append((f"Recoverable {dep}", text))
    return pairs


@app.command("create")
def create(
    name: Name,
    cron: Cron = None,
    hourly: HourlyOpt = None,
    minute: Minute = None,
    daily_at: DailyAt = None,
    days: Days = None,
    monthly_day: MonthlyDay = None,
    at: At = None,
    interval: Interval = None,
    type_: Type = None,
    timezone: Timezone = None,
    keep_last: KeepLast = None,
    keep_within: KeepWithin = None,
    keep_hourly: KeepHourly = None,
    keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None,
    keep_monthly: KeepMonthly = None,
    keep_yearly: KeepYearly = None,
    include_manual: IncludeManual = None,
    deployment: Deployments = None,
    paused: Paused = None,
    description: Description = None,
) -> None:
    """Create a policy with one schedule and its retention, written into the config file.

    Add more schedules with `policy edit NAME --type ...`. Example: backupctl policy create
    nightly --daily-at 21:00 --timezone Europe/Berlin --keep-daily 14 --deployment shop
    """
    flags = _flags(**{k: v for k, v in locals().items() if k != "name"})
    _report(editor.create_policy(context.config(), name, flags))


@app.command("edit")
def edit(
    name: Name,
    cron: Cron = None,
    hourly: HourlyOpt = None,
    minute: Minute = None,
    daily_at: DailyAt = None,
    days: Days = None,
    monthly_day: MonthlyDay = None,
    at: At = None,
    interval: Interval = None,
    type_: Type = None,
    timezone: Timezone = None,
    keep_last: KeepLast = None,
    keep_within: KeepWithin = None,
    keep_hourly: KeepHourly = None,
    keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None,
    keep_monthly: KeepMonthly = None,
    keep_yearly: KeepYearly = None,
    include_manual: IncludeManual = None,
    deployment: Deployments = None,
    paused: Paused = None,
    description: Description = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Without flags: write the edited policy without asking.")
    ] = False,
) -> None:
    """Change a policy: only the given fields, or with no flags, the whole policy in $EDITOR.

    A recurrence flag replaces the schedule of --type (or the only schedule), or adds one.
    Without flags the policy opens as YAML in $EDITOR (default vi); it is validated on
    save (re-opened with the error on top if invalid), the change is shown, and written
    after you confirm. Existing backups are never touched.
    Example: backupctl policy edit nightly --daily-at 22:30 --keep-weekly 8
    """
    flags = _flags(**{k: v for k, v in locals().items() if k not in ("name", "yes")})
    cfg = context.config()
    if flags.given():
        _report(editor.edit_policy(cfg, name, flags))
        return
    _edit_in_editor(cfg, name, yes=yes)


def _run_editor(text: str, name: str) -> str:
    editor = os.environ.get("EDITOR") or "vi"
    # In this run's private directory (backupctl/tempdir.py): removed by the next run if killed.
    fd, tmp = tempfile.mkstemp(prefix=f"policy-{name}-", suffix=".yaml", dir=run_dir())
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        try:
            rc = subprocess.call([*shlex.split(editor), tmp])
        except OSError as exc:
            raise ConfigError(
                f"cannot start the editor {editor!r}: {exc.strerror}", hint="set $EDITOR"
            ) from None
        if rc != 0:
            raise AbortedError(f"the editor {editor!r} exited with status {rc}; nothing was changed")
        return Path(tmp).read_text()
    finally:
        Path(tmp).unlink(missing_ok=True)


def _edit_in_editor(cfg: Any, name: str, *, yes: bool) -> None:
    if not yes and not sys.stdin.isatty():
        raise AbortedError(
            "`policy edit` without flags opens $EDITOR and asks before writing, but there is no terminal",
            hint="pass flags such as --daily-at 05:00, or --yes to write the edited policy without asking",
        )
    text = editor.editor_document(cfg, name)
    while True:
        edited = _run_editor(text, name)
        try:
            mapping = editor.parse_edited(name, edited)
        except ConfigError as exc:
            if edited == text and text.startswith(editor.ERROR_PREFIX):
                raise ConfigError(
                    f"policy {name!r} is still invalid; nothing was written: {exc.message}"
                ) from None
            text = editor.with_error(edited, exc.message)
            continue
        break
    if mapping is None:
        raise AbortedError("the file was emptied; nothing was changed")
    if editor.unchanged(cfg, name, mapping):
        if output.structured():
            output.emit_document(config_file.WriteResult(name, "edited", "").as_dict())
        else:
            output.message(f"Policy {name}: no changes.")
        return
    diff = editor.editor_diff(cfg, name, mapping)
    if not output.structured() or not yes:
        sys.stderr.write(diff)
    context.confirm(f"Write this change to {cfg.path}?", yes=yes)
    _report(editor.write_edited(cfg, name, mapping))


@app.command("pause")
def pause(name: Name) -> None:
    """Pause a policy: no scheduled backups and no automatic retention until resumed.

    Existing backups are kept. Example: backupctl policy pause nightly
    """
    _report(editor.set_status(context.config(), name, "paused"))


@app.command("resume")
def resume(name: Name) -> None:
    """Resume a paused policy: its scheduled backups and retention start again.

    Example: backupctl policy resume nightly
    """
    _report(editor.set_status(context.config(), name, "active"))


@app.command("delete")
def delete(
    name: Name,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Also when deployments use it: they get `policy: none` (no scheduled backups)."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a policy from the config file; its existing backups are kept.

    Refused while deployments use it, unless --force, which sets `policy: none` on them
    (never another policy, whose retention could delete their backups).
    Example: backupctl policy delete nightly --yes
    """
    cfg = context.config()
    users = editor.plan_delete(cfg, name, force=force)
    question = f"Delete policy {name!r} from {cfg.path}?"
    if users:
        question += f" {', '.join(users)} will get `policy: none` (no scheduled backups)."
    context.confirm(question + " Existing backups are kept.", yes=yes)
    _report(editor.delete_policy(cfg, name, force=force))
