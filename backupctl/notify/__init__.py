"""Notifications: webhook, e-mail and ping channels for backup events (docs/monitoring.md).

Public API for the rest of backupctl:

    from backupctl.notify import NotificationEvent, notify_event
    notify_event(config, NotificationEvent(kind="drill_failed", deployment="shop",
                 backup_id=bid, status="Failed", message="table orders: 10 rows, expected 12",
                 details={...}), reporter=reporter)

`notify_event` never raises for a channel's failure (it warns through `reporter` and keeps
the event for the next run). The engine's own events go through notify/hooks.py.
Modules: models (config), event, channels (delivery), queue (retry), dispatch, overdue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.notify.event import KINDS, NotificationEvent

if TYPE_CHECKING:
    from backupctl.config.models import Config
    from backupctl.events import Reporter

__all__ = ["KINDS", "NotificationEvent", "notify_event"]


def notify_event(
    config: Config,
    event: NotificationEvent,
    *,
    reporter: Reporter | None = None,
    state_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Send `event` to the channels its deployment and its policy chose (dispatch.notify_event).

    The dispatcher is imported on call, for start-up time: importing `backupctl.notify.event`
    (as the engine does) must not load the channels, the queue and the policy models."""
    from backupctl.notify.dispatch import notify_event as send

    return send(config, event, reporter=reporter, state_dir=state_dir)
