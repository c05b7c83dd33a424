"""`backupctl notify ...`: try a notification channel, see what is waiting to be retried."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from backupctl.cli import context, output
from backupctl.errors import ExitCode, NotFoundError

app = typer.Typer(
    help="Notifications: send a test event to a channel, list channels and undelivered events.",
    no_args_is_help=True,
)

RESULT_COLUMNS: list[output.Column] = [
    ("Channel", "channel", None),
    ("Type", "type", None),
    ("Delivered", "delivered", lambda v: "yes" if v else "no"),
    ("Queued", "queued", lambda v: "yes" if v else "no"),
    ("Error", "error", None),
]

LIST_COLUMNS: list[output.Column] = [
    ("Channel", "channel", None),
    ("Type", "type", None),
    ("Receiver", "receiver", None),
    ("Used by", "used_by", lambda v: ", ".join(v)),
    ("Pending", "pending", str),
]


@app.command("test")
def test(
    channel: Annotated[str, typer.Argument(help="Channel name under notifications.channels.")],
    deployment: Annotated[
        str, typer.Option("--deployment", "-d", help="Deployment named in the test event.")
    ] = "",
) -> None:
    """Send a test event to CHANNEL now (ping channels: a success ping).

    Earlier undelivered events are retried first. Exit 1 when the channel did not take the
    event (it is then kept and retried on the next run, like any other).
    Example: backupctl notify test ops-slack -o json
    """
    from backupctl.cli.progress import CliReporter
    from backupctl.notify.dispatch import notify_event
    from backupctl.notify.event import NotificationEvent

    cfg = context.config()
    if channel not in cfg.notifications.channels:
        known = ", ".join(sorted(cfg.notifications.channels)) or "none configured"
        raise NotFoundError(f"no notification channel named {channel!r}", hint=f"configured: {known}")
    event = NotificationEvent(
        kind="test",
        deployment=deployment,
        status="Test",
        message="this channel works (sent by `backupctl notify test`)",
    )
    with CliReporter() as reporter:
        rows = notify_event(cfg, event, reporter=reporter, channels=[channel])
    if output.structured():
        output.emit_document(rows[0] if rows else {})
    else:
        output.emit_table(rows, RESULT_COLUMNS)
    if not rows or not rows[0]["delivered"]:
        raise typer.Exit(ExitCode.FAILED)


@app.command("list")
def list_() -> None:
    """List the notification channels, who uses them, and how many events wait for a retry.

    Example: backupctl notify list -o json
    """
    from backupctl.notify.channels import where
    from backupctl.notify.dispatch import pending, rules_for

    cfg = context.config()
    waiting = pending(cfg) if cfg.notifications.channels else []
    rows: list[dict[str, Any]] = []
    for name, ch in sorted(cfg.notifications.channels.items()):
        if ch.type == "email":
            receiver = f"smtp://{ch.host}:{ch.effective_port} -> {', '.join(ch.to)}"
        elif ch.url is not None:
            receiver = where(ch.url)
        else:
            receiver = f"(from {ch.url_env or ch.url_file})"
        rows.append(
            {
                "channel": name,
                "type": ch.type,
                "receiver": receiver,
                "used_by": [d for d in sorted(cfg.deployments) if name in rules_for(cfg, d)],
                "pending": sum(1 for p in waiting if p["channel"] == name),
            }
        )
    if output.structured():
        output.emit_document(rows)
    elif rows:
        output.emit_table(rows, LIST_COLUMNS)
    else:
        output.message("no notification channels configured")
