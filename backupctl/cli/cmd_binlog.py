"""`backupctl binlog sync`: archive MariaDB/MySQL binary logs for point-in-time recovery."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.output import human_bytes, human_time
from backupctl.cli.progress import CliReporter
from backupctl.errors import ExitCode

app = typer.Typer(
    help="Archive MariaDB/MySQL binary logs into the deployment's repository (point-in-time recovery).",
    no_args_is_help=True,
)


def _print_round(result: dict[str, Any], *, follow: bool) -> None:
    if output.structured():
        if follow:  # one JSON document per line and round
            sys.stdout.write(json.dumps(output.normalize_times(result), sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            output.emit_document(result)
        return
    if result.get("error"):
        output.warning(f"sync of {result['deployment']} failed: {result['error']} (retrying)")
        return
    for f in result["archived"]:
        output.message(
            f"{f['file']}: {f['state']}, {human_bytes(f['size'])}, events "
            f"{human_time(f['first_event_time'])} .. {human_time(f['last_event_time'])}"
        )
    if result.get("stream_restarted"):
        output.warning(f"the binary log stream had stopped ({result['stream_restarted']}); started it again")
    partial = result.get("partial")
    if partial and partial["stored"]:
        output.message(
            f"{partial['file']} (being written): {human_bytes(partial['size'])} streamed, "
            f"up to position {partial['end_position']}, last event {human_time(partial['last_event_time'])}"
        )
    for name, state in result.get("copy_failures", {}).items():
        output.warning(f"copy {name}: {state} (run `backupctl pitr sync`)")
    if not follow or result["archived"]:
        output.message(
            f"{len(result['archived'])} binary logs archived, {len(result['already_archived'])} already in the "
            f"archive, {len(result['skipped_not_needed'])} older than any backup needs; "
            f"{result['current']} is still being written."
        )


@app.command("sync")
def sync(
    deployment: Annotated[str, typer.Argument(help="Deployment name from the config (a mariadb source).")],
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep running: sync every --interval seconds until stopped."),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between rounds with --follow.", min=1.0)
    ] = 60.0,
    flush: Annotated[
        bool,
        typer.Option(
            "--flush",
            help="FLUSH BINARY LOGS first (every round), so the file being written is closed and archived too.",
        ),
    ] = False,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="With --follow: also stream the file being written (mariadb-binlog --stop-never) and "
            "store what arrived every round, without rotating the server's logs.",
        ),
    ] = False,
) -> None:
    """Copy every closed binary log not archived yet into the deployment's repository.

    Lists the server's binary logs (SHOW BINARY LOGS), reads each closed one with
    `mariadb-binlog --read-from-remote-server --raw` and stores it with its first/last event
    times and positions. Idempotent: files already archived are skipped; files older than the
    oldest mariabackup backup needs are not archived. The user needs the REPLICATION SLAVE and
    BINLOG MONITOR (MySQL: REPLICATION CLIENT) privileges.

    With --follow --stream, the binary log being written is streamed as well and stored as a
    partial copy every round, so the archive is at most --interval seconds behind.

    Example: backupctl binlog sync shop --follow --interval 60 --flush
    Example: backupctl binlog sync shop --follow --stream --interval 10
    """
    from backupctl.pitr import binlog_stream, mariadb

    if stream and not follow:
        raise typer.BadParameter(
            "needs --follow (it keeps a connection to the server open)", param_hint="--stream"
        )

    with CliReporter() as reporter:
        svc = context.service(reporter)
        svc.deployment(deployment)
        if not follow:
            result = mariadb.sync(svc, deployment, flush=flush)
            _print_round(result, follow=False)
            if result.get("copy_failures"):
                raise typer.Exit(ExitCode.PARTIAL)
            return
        streaming = ", streaming the current one" if stream else ""
        output.message(
            f"following the binary logs of {deployment} every {interval:g} s{streaming} (Ctrl-C to stop)"
        )
        binlog_stream.follow(
            svc,
            deployment,
            interval=interval,
            flush=flush,
            stream=stream,
            on_round=lambda r: _print_round(r, follow=True),
        )
