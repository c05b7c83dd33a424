"""`backupctl destination ...`: list configured destinations, probe one."""

from __future__ import annotations

from typing import Annotated

import typer

from backupctl import redact
from backupctl.cli import context, output
from backupctl.errors import ExitCode

app = typer.Typer(help="List and check the places backups are stored.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List destinations: name, type, location, reachable, whether a repository is there.

    Example: backupctl destination list -o json
    """
    # Locations and errors may carry an endpoint URL with a password in it.
    rows = redact.document(context.service().list_destinations())
    output.emit_list(
        rows,
        [
            ("Name", "name", None),
            ("Type", "type", None),
            ("Location", "location", None),
            ("Reachable", "reachable", None),
            ("Repository", "repository", None),
            ("Used by", "used_by", None),
            ("Error", "error", None),
        ],
        priority=["name", "reachable", "repository", "type", "location", "error", "used_by"],
    )


@app.command("check")
def check(name: Annotated[str, typer.Argument(help="Destination name from the config.")]) -> None:
    """Probe a destination for real: write, read, range read, list, conditional create, delete,
    latency and throughput.

    Example: backupctl destination check offsite
    """
    result = redact.document(context.service().check_destination(name))
    if output.structured():
        output.emit_document(result)
    else:
        output.emit_table(
            result["checks"],
            [
                ("Check", "check", None),
                ("OK", "ok", None),
                ("Seconds", "seconds", None),
                ("Error", "error", None),
            ],
        )
        caps = result["capabilities"]
        details = [
            ("Location", result["location"]),
            (
                "Conditional create",
                "yes" if caps["conditional_create"] else "no (leases are best effort)",
            ),
            ("Range reads", "yes" if caps["range_reads"] else "no"),
            (
                "Latency (small write)",
                f"{result['latency_ms']} ms" if result["latency_ms"] is not None else "",
            ),
            ("Write throughput", f"{result.get('write_mb_s', '')} MB/s"),
            ("Read throughput", f"{result.get('read_mb_s', '')} MB/s"),
        ]
        if not output.OPTS.columns:  # -c picks among the table's columns
            output.emit_fields(details)
    if not result["ok"]:
        raise typer.Exit(ExitCode.DESTINATION)
