"""`backupctl backup drill`: restore a backup into a throwaway place and check it.

Registered on the `backup` group (backupctl.cli.main._SUBCOMMANDS), so that `backup list`
does not import it. The work is done by backupctl.drill.run; this module parses and renders.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_backup import ToTimeOpt, app
from backupctl.cli.output import human_duration
from backupctl.cli.progress import CliReporter
from backupctl.errors import DrillFailedError

CHECK_COLUMNS: list[output.Column] = [
    ("Check", "name", None),
    ("Result", "passed", lambda v: "passed" if v else "FAILED"),
    ("Detail", "detail", None),
]


@app.command("drill")
def drill(
    deployment: Annotated[str, typer.Argument(help="Deployment name from the config.")],
    backup_id: Annotated[
        str | None,
        typer.Argument(help="Backup ID or a unique prefix of it (default: the newest completed backup)."),
    ] = None,
    to_time: ToTimeOpt = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Drill the copy at this destination.")
    ] = None,
) -> None:
    """Prove that a backup restores: restore it into a throwaway place and check what came back.

    The live deployment is never touched. Files are compared with the backup's item stream
    (content and metadata); SQLite databases get PRAGMA integrity_check and per-table row
    counts against the counts recorded at backup time; database servers are restored into a
    temporary database or throwaway instance. The result is stored in the repository (every
    host sees it in `backup list` VERIFIED and `backup show`). Exit code 8 when a check
    failed, naming it.

    Example: backupctl backup drill shop -o json
    """
    from backupctl.drill.run import first_failure, run_drill

    moment = None
    if to_time is not None:
        from backupctl.pitr.common import parse_moment

        moment = parse_moment(to_time)
    with CliReporter() as reporter:
        svc = context.service(reporter)
        record = run_drill(svc, deployment, backup_id, to_time=moment, destination=destination)
    short = record["backup_id"][:8]
    if output.structured():
        output.emit_document(record)
    else:
        output.emit_table(record["checks"], CHECK_COLUMNS)
        if record["passed"]:
            sys.stdout.write(
                f"Drill of backup {short} passed: {len(record['checks'])} checks, restored and checked in "
                f"{human_duration(record['seconds'])} (restore {human_duration(record['restore_seconds'])}).\n"
            )
    if not record["passed"]:
        raise DrillFailedError(
            f"drill of backup {short} failed: {first_failure(record)}",
            hint=f"the backup did not restore as recorded; see `backupctl backup show {short}`",
        )
