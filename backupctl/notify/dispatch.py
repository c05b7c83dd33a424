"""Which channels hear an event, sending it, and retrying what could not be sent.

`notify_event(config, event)` is the one entry point (re-exported as
`backupctl.notify.notify_event`). It never raises for a channel's failure: the failure is
reported as a warning through the Reporter (the CLI prints it on stderr) and the event is
queued (notify/queue.py) and retried, before anything new, the next time this is called.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.config.notifications import NotifyRule
from backupctl.config.paths import state_dir as default_state_dir
from backupctl.events import NullReporter, Reporter, WarningEvent
from backupctl.notify.channels import DeliveryError, deliver
from backupctl.notify.event import NotificationEvent
from backupctl.notify.queue import Queue
from backupctl.policy.models import parse_duration
from backupctl.policy.resolve import effective_policy
from backupctl.timefmt import iso_ms, parse_iso_utc, utcnow

if TYPE_CHECKING:
    from backupctl.config.models import Config

# One delivery round at a time in this process: scheduled backups run in threads, and two
# rounds retrying the same queue would send its events twice.
_ROUND = threading.Lock()


def state_dir_of(config: Config) -> Path:
    return config.settings.state_dir or default_state_dir()


def rules_for(config: Config, deployment: str) -> dict[str, str]:
    """channel -> "always" | "failure" for a deployment: its own `notify` plus its policy's
    (a channel named by both gets the wider of the two)."""
    rules: list[NotifyRule] = []
    dep = config.deployments.get(deployment)
    if dep is None:
        return {}
    rules += dep.notify or []
    try:
        resolved = effective_policy(config, deployment)
    except Exception:  # an unknown policy is a config error reported elsewhere
        resolved = None
    if resolved is not None:
        rules += getattr(resolved[1], "notify", None) or []
    out: dict[str, str] = {}
    for rule in rules:
        if out.get(rule.channel) != "always":
            out[rule.channel] = rule.on
    return out


def _wants(channel: Any, on: str, event: NotificationEvent) -> bool:
    if event.kind == "backup_started" and channel.type != "ping":
        return False
    return on == "always" or event.failure


def notify_event(
    config: Config,
    event: NotificationEvent,
    *,
    reporter: Reporter | None = None,
    state_dir: Path | None = None,
    channels: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Send `event` to the channels its deployment (and that deployment's policy) chose.

    `channels`: send to exactly these instead (`notify test`). Returns one row per channel
    tried: {channel, type, delivered, queued, error}. Earlier undelivered events are retried
    first (their rows are not returned).
    """
    reporter = reporter or NullReporter()
    section = getattr(config, "notifications", None)
    if section is None or not section.channels:
        return []
    if channels is not None:
        targets = {name: "always" for name in channels}
    else:
        targets = rules_for(config, event.deployment)
    queue = Queue(state_dir or state_dir_of(config))
    try:
        with _ROUND:
            down = _retry(config, queue, reporter)
            rows = []
            for name, on in targets.items():
                channel = section.channels.get(name)
                if channel is None or not _wants(channel, on, event):
                    continue
                rows.append(_send(name, channel, event, queue, reporter, down.get(name)))
            return rows
    finally:
        queue.close()


def _send(
    name: str,
    channel: Any,
    event: NotificationEvent,
    queue: Queue,
    reporter: Reporter,
    known_down: str | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"channel": name, "type": channel.type, "delivered": False, "queued": False}
    error = known_down
    if error is None:
        try:
            deliver(name, channel, event)
            row["delivered"] = True
            row["error"] = None
            return row
        except DeliveryError as exc:
            error = str(exc)
    row["error"] = error
    # A ping's /start is only meaningful now; everything else is worth sending late.
    if event.kind != "backup_started":
        queue.add(name, event, error, iso_ms(utcnow()))
        row["queued"] = True
    what = f"{event.kind.replace('_', ' ')} of {event.deployment}" if event.deployment else event.kind
    later = "; kept and retried on the next run" if row["queued"] else ""
    reporter.emit(WarningEvent(f"notification ({what}) not delivered: {error}{later}"))
    return row


def _retry(config: Config, queue: Queue, reporter: Reporter) -> dict[str, str]:
    """Deliver queued events, oldest first; returns channel -> error for channels still down
    (the rest of their queue waits: one timeout per dead channel and round, not one per event)."""
    section = config.notifications
    keep_for = parse_duration(section.retry_for)
    now = utcnow()
    down: dict[str, str] = {}
    for row in queue.pending():
        name = row["channel"]
        channel = section.channels.get(name)
        if channel is None:
            queue.remove(row["seq"])  # the channel left the configuration
            continue
        if now - parse_iso_utc(row["queued"]) > keep_for:
            queue.remove(row["seq"])
            reporter.emit(
                WarningEvent(
                    f"notification to {name} dropped after {section.retry_for} of retries: "
                    f"{row['event'].get('kind')} of {row['event'].get('deployment')}: {row['last_error']}"
                )
            )
            continue
        if name in down or not queue.claim(row["seq"], time.time()):
            continue  # a dead channel this round, or another process is sending this one
        try:
            deliver(name, channel, NotificationEvent.from_doc(row["event"]))
        except DeliveryError as exc:
            down[name] = str(exc)
            queue.failed_again(row["seq"], str(exc))
            continue
        queue.remove(row["seq"])
    for name, error in down.items():
        reporter.emit(WarningEvent(f"queued notifications to {name} still not delivered: {error}"))
    return down


def retry_pending(config: Config, *, reporter: Reporter | None = None, state_dir: Path | None = None) -> None:
    """Deliver what earlier runs could not (run-due calls it even when nothing else happens)."""
    section = getattr(config, "notifications", None)
    if section is None or not section.channels:
        return
    queue = Queue(state_dir or state_dir_of(config))
    try:
        with _ROUND:
            if queue.pending():
                _retry(config, queue, reporter or NullReporter())
    finally:
        queue.close()


def pending(config: Config, state_dir: Path | None = None) -> list[dict[str, Any]]:
    queue = Queue(state_dir or state_dir_of(config))
    try:
        return queue.pending()
    finally:
        queue.close()
