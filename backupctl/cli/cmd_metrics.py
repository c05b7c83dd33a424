"""`backupctl metrics`: Prometheus metrics to stdout, a textfile, or over HTTP.

Thin: backupctl.monitor.health computes, backupctl.monitor.metrics renders and serves.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.cli.cmd_status import GraceOpt, parse_grace
from backupctl.errors import BackupctlError, UsageError

HELP = "Prometheus metrics of every deployment: to stdout, to a node_exporter textfile, or served over HTTP."

# The help is the callback's docstring (its first paragraph is HELP, as in cli/main.py COMMANDS).
app = typer.Typer(invoke_without_command=True)


def _compute(grace: dt.timedelta | None) -> Any:
    from backupctl.monitor import health

    service = context.service()
    try:
        return health.compute(service, grace=grace)
    finally:
        service.close()


@app.callback()
def metrics(
    ctx: typer.Context,
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write the metrics to this file atomically (mode 0644), for node_exporter's textfile "
            "collector; name it *.prom.",
            metavar="PATH",
        ),
    ] = None,
    grace: GraceOpt = None,
) -> None:
    """Prometheus metrics of every deployment: to stdout, to a node_exporter textfile, or served over HTTP.

    Without a subcommand: compute the metrics once and print them (text format; -o json: the
    catalog with its samples; -f csv/value: one row per sample), or write them to --textfile
    (silently, as cron wants). The metrics are documented in docs/monitoring.md.

    Example: */5 * * * * backupctl metrics --textfile /var/lib/node_exporter/textfile/backupctl.prom
    """
    if ctx.invoked_subcommand is not None:
        return
    from backupctl.monitor import metrics as prom

    doc = _compute(parse_grace(grace))
    if textfile is not None:
        try:
            prom.write_textfile(textfile, prom.render(doc))
        except OSError as exc:
            raise BackupctlError(f"cannot write {textfile}: {exc.strerror or exc}") from None
        return
    if output.OPTS.output in ("value", "csv"):  # one row per sample
        found = prom.samples(doc)
        rows = [
            {"name": m.name, "labels": ",".join(f"{k}={v}" for k, v in labels.items()), "value": value}
            for m in prom.CATALOG
            for labels, value in found[m.name]
        ]
        output.emit_document(
            rows, [("Name", "name", None), ("Labels", "labels", None), ("Value", "value", None)]
        )
        return
    if output.structured():
        found = prom.samples(doc)
        output.emit_document(
            [
                {
                    "name": m.name,
                    "type": m.type,
                    "help": m.help,
                    "samples": [{"labels": labels, "value": value} for labels, value in found[m.name]],
                }
                for m in prom.CATALOG
            ]
        )
        return
    typer.echo(prom.render(doc), nl=False)


def _listen(text: str) -> tuple[str, int]:
    """ADDR:PORT, [IPv6]:PORT or :PORT (all IPv4 interfaces) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: use ADDR:PORT, e.g. 127.0.0.1:9900")
    return host, int(port)


@app.command("serve")
def serve(
    ctx: typer.Context,
    listen: Annotated[
        str,
        typer.Option(
            "--listen", help="Address and port to serve /metrics on (ADDR:PORT).", metavar="ADDR:PORT"
        ),
    ] = "127.0.0.1:9900",
    cache: Annotated[
        str,
        typer.Option(
            "--cache",
            help="Reuse computed metrics for this long between scrapes (e.g. 30s, 1m).",
            metavar="DURATION",
        ),
    ] = "30s",
) -> None:
    """Serve the metrics on http://ADDR:PORT/metrics until stopped (SIGINT/SIGTERM).

    Every scrape recomputes them unless the last computation is younger than --cache. Needs
    prometheus_client (pip install 'backupctl[metrics]').

    Example: backupctl metrics serve --listen 0.0.0.0:9900
    """
    host, port = _listen(listen)
    grace = parse_grace(ctx.parent.params.get("grace") if ctx.parent else None)
    cached = None if cache.strip() in ("0", "0s") else parse_grace(cache, "--cache")
    cache_seconds = cached.total_seconds() if cached else 0.0
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise BackupctlError(
            "metrics serve needs prometheus_client", hint="pip install 'backupctl[metrics]'"
        ) from None
    from backupctl.monitor import metrics as prom

    context.config()  # a config error is reported before listening
    try:
        server = prom.make_server(lambda: _compute(grace), host, port, cache_seconds)
    except OSError as exc:
        raise BackupctlError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    shown = f"[{host}]" if ":" in host else host
    output.message(f"serving metrics on http://{shown}:{server.server_port}/metrics")
    # SIGTERM/SIGINT stop the loop from a helper thread (`shutdown` waits for it) instead of
    # raising KeyboardInterrupt: wsgiref swallows an exception raised while it finishes a
    # request (it printed the traceback and kept serving, so the stop was lost).
    import signal
    import threading

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
