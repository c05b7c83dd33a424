"""The notification event: what happened, to which deployment, when.

`NotificationEvent` is the public shape other parts of backupctl hand to
`backupctl.notify.notify_event` (the drill engine does, for `drill_failed`), and the
`event` part of the webhook's JSON body (docs/monitoring.md). Plain data, no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from backupctl.timefmt import iso_ms, parse_iso_utc, utcnow

# kind -> (is a failure, title). `backup_started` only reaches ping channels (URL/start).
KINDS: dict[str, tuple[bool, str]] = {
    "backup_started": (False, "backup started"),
    "backup_completed": (False, "backup completed"),
    "backup_failed": (True, "backup FAILED"),
    "upload_failed": (True, "upload FAILED"),
    "retention_failed": (True, "retention FAILED"),
    "backup_overdue": (True, "backup OVERDUE"),
    "pitr_lag": (True, "PITR archive lagging"),
    "drill_completed": (False, "restore drill passed"),
    "drill_failed": (True, "restore drill FAILED"),
    "test": (False, "test notification"),
}


@dataclass(frozen=True)
class NotificationEvent:
    """One event.

    kind: a key of KINDS. deployment: the deployment name ("" when none, e.g. `test`).
    backup_id: the backup concerned, or None. status: the backup's or run's status
    ("Completed", "Failed", "Overdue", ...). message: one human line (no secrets: it is
    scrubbed again before sending). time: when it happened (aware, UTC). details: small
    JSON-able extras (size, duration, destination, ...).
    """

    kind: str
    deployment: str
    message: str
    backup_id: str | None = None
    status: str = ""
    time: dt.datetime = field(default_factory=utcnow)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def failure(self) -> bool:
        return KINDS[self.kind][0]

    @property
    def title(self) -> str:
        return KINDS[self.kind][1]

    def to_doc(self) -> dict[str, Any]:
        """JSON-able form (stable keys, in this order)."""
        return {
            "kind": self.kind,
            "deployment": self.deployment,
            "backup_id": self.backup_id,
            "status": self.status,
            "message": self.message,
            "time": iso_ms(self.time.astimezone(dt.UTC)),
            "details": dict(self.details),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> NotificationEvent:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        values["time"] = parse_iso_utc(str(doc["time"]))
        return cls(**values)
