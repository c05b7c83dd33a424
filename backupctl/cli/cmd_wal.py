"""`backupctl wal push|fetch`: PostgreSQL's archive_command and restore_command.

The same code as the light entry point `python -m backupctl.wal` (which `pitr setup` puts
into archive_command because it starts faster); see docs/pitr.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from backupctl import wal
from backupctl.cli import fast_start, output
from backupctl.pitr.logarchive import LogNotFoundError

app = typer.Typer(
    help="Archive and fetch PostgreSQL WAL files (archive_command / restore_command).", no_args_is_help=True
)

DeploymentOpt = Annotated[
    str | None,
    typer.Option(
        "--deployment",
        "-d",
        help="Deployment whose archive to use (default: $BACKUPCTL_DEPLOYMENT, or the only postgres deployment).",
    ),
]


@app.command("push")
def push(
    path: Annotated[str, typer.Argument(help="The WAL file to archive (%p in archive_command).")],
    deployment: DeploymentOpt = None,
    ahead: Annotated[
        int,
        typer.Option(
            "--ahead",
            min=0,
            help="When PATH is in pg_wal: also archive up to this many other files marked ready "
            "(their own archive_command calls then return at once). 0: only PATH.",
        ),
    ] = wal.AHEAD,
) -> None:
    """Archive one WAL file; exit 0 only once it is durable in the primary destination.

    Re-sending a file already archived with the same content succeeds without rewriting;
    a different file under the same name is refused. From pg_wal, files PostgreSQL has
    marked ready are archived ahead (see docs/pitr.md).

    Example: archive_command = 'backupctl --config /etc/backupctl.yaml wal push %p --deployment shop'
    """
    fast_start.startup_done()
    doc = wal.push(output.OPTS.config, deployment, path, ahead)
    if output.structured():
        output.emit_document(doc)
    for name, state in doc["copies"].items():
        if state.startswith("failed"):
            output.warning(f"copy to {name}: {state} (run `backupctl pitr sync`)")
    for name, state in doc["ahead"].items():
        if "failed" in state:
            output.warning(f"archiving {name} ahead: {state} (its own archive_command call retries it)")


@app.command("fetch")
def fetch(
    filename: Annotated[str, typer.Argument(help="The WAL file PostgreSQL asks for (%f).")],
    target: Annotated[str, typer.Argument(help="Where to write it (%p).")],
    deployment: DeploymentOpt = None,
) -> None:
    """Fetch one archived WAL file; exit 1 when it is not in the archive (recovery ends there).

    Example: restore_command = 'backupctl --config /etc/backupctl.yaml wal fetch %f %p --deployment shop'
    """
    fast_start.startup_done()
    try:
        doc = wal.fetch(output.OPTS.config, deployment, filename, target)
    except LogNotFoundError as exc:
        output.warning(exc.message)
        raise typer.Exit(1) from None
    if output.structured():
        output.emit_document(doc)
