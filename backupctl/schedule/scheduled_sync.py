"""Binary log archiving run by the scheduler: a deployment's `pitr: {binlog_sync: 5m}`.

When a sync is due: the interval cuts UTC time into a grid counted from the Unix epoch
(5m: :00, :05, :10 ...). A deployment's sync is due when the newest grid slot at or
before now is later than the last slot attempted (local state, `binlogsync/<deployment>`),
the same "made up once" rule as backups: `run-due` twice in one slot syncs once, a failed
sync waits for the next slot, a machine that was off syncs once when it is back. A grid
(rather than "interval after the last run") keeps the rhythm when run-due is woken a few
seconds late, and gives every host the same slot, so the scheduler's lease
(`leases/<deployment>/binlog_sync.<slot>`) lets exactly one host sync it. Losing that race
costs nothing anyway: archived binary logs are write-once objects, a duplicate sync stores
nothing twice (it only rotates the server's binary log once more when `flush` is on).

What runs: pitr.mariadb.sync(flush=...), as `backupctl binlog sync DEPLOYMENT [--flush]`.
The result row (stable keys, `kind: "binlog_sync"`) goes into run-due's output, and the
last result is kept in local state for `schedule list`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backupctl.errors import BackupctlError
from backupctl.pitr import mariadb
from backupctl.procs import pid_alive
from backupctl.timefmt import iso_ms, parse_iso

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.config.models import PitrConfig

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
KIND = "binlog_sync"


def _last_key(deployment: str) -> str:
    return f"binlogsync/{deployment}"


def _result_key(deployment: str) -> str:
    return f"binlogsync/{deployment}/result"


def _running_key(deployment: str) -> str:
    return f"binlogsync/{deployment}/running"


@dataclass(frozen=True)
class SyncDue:
    """One deployment's binary log sync for one grid slot."""

    deployment: str
    every: dt.timedelta
    flush: bool
    slot: dt.datetime


def slot_at(now: dt.datetime, every: dt.timedelta) -> dt.datetime:
    """The newest grid slot at or before `now`."""
    elapsed = now.astimezone(dt.UTC) - _EPOCH
    return _EPOCH + every * (elapsed // every)


def configured(service: Service) -> dict[str, PitrConfig]:
    """deployment -> its pitr section, for deployments with `binlog_sync` set."""
    return {
        name: dep.pitr
        for name, dep in service.config.deployments.items()
        if dep.pitr is not None and dep.pitr.binlog_sync is not None
    }


def last_slot(service: Service, deployment: str) -> dt.datetime | None:
    value = service.state.get(_last_key(deployment))
    return parse_iso(value) if value else None


def due_syncs(service: Service, now: dt.datetime) -> list[SyncDue]:
    out = []
    for name, pitr in configured(service).items():
        every = pitr.binlog_sync_every
        assert every is not None
        slot = slot_at(now, every)
        last = last_slot(service, name)
        if last is None or last < slot:
            out.append(SyncDue(name, every, pitr.flush, slot))
    return out


def next_sync(service: Service, deployment: str, now: dt.datetime) -> dt.datetime | None:
    """When the deployment's sync runs next: now when it is due, else its next slot."""
    pitr = configured(service).get(deployment)
    if pitr is None or pitr.binlog_sync_every is None:
        return None
    every = pitr.binlog_sync_every
    slot = slot_at(now, every)
    last = last_slot(service, deployment)
    return now if last is None or last < slot else slot + every


def still_running(service: Service, deployment: str) -> bool:
    """A sync of this deployment started by an earlier run-due on this host is not finished."""
    value = service.state.get(_running_key(deployment)) or ""
    host, _, pid = value.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid))


def record_attempt(service: Service, item: SyncDue) -> None:
    """Before the lease and the sync: a repeated run-due in the same slot must not start it again."""
    service.state.set(_last_key(item.deployment), iso_ms(item.slot))


def row(item: SyncDue) -> dict[str, Any]:
    """run-due's result row for a sync; the keys a backup row has, plus the sync's counts."""
    return {
        "kind": KIND,
        "deployment": item.deployment,
        "policy": None,
        "schedule": KIND,
        "type": "binlog",
        "slot": iso_ms(item.slot),
        "backup_id": None,
        "status": "",
        "error": None,
        "flush": item.flush,
        "archived": 0,
        "already_archived": 0,
        "current": None,
    }


def run_sync(service: Service, item: SyncDue) -> dict[str, Any]:
    """Archive the deployment's closed binary logs; returns the fields that complete its row.

    Never raises a BackupctlError: a failed sync is a Failed row, and the backups run on.
    Copies to other destinations that failed make it Failed too (as an upload failure makes
    a backup Failed): the primary archive is complete, `backupctl pitr sync` repairs the rest.
    """
    service.state.set(_running_key(item.deployment), f"{socket.gethostname()}:{os.getpid()}")
    outcome: dict[str, Any]
    try:
        result = mariadb.sync(service, item.deployment, flush=item.flush)
    except BackupctlError as exc:
        outcome = {"status": "Failed", "error": exc.message}
    except OSError as exc:  # a local disk or network error the engine did not wrap
        outcome = {"status": "Failed", "error": f"{type(exc).__name__}: {exc}"}
    else:
        outcome = {
            "status": "Completed",
            "error": None,
            "archived": len(result["archived"]),
            "already_archived": len(result["already_archived"]),
            "current": result["current"],
        }
        if result["copy_failures"]:
            names = ", ".join(sorted(result["copy_failures"]))
            outcome["status"] = "Failed"
            outcome["error"] = (
                f"archived, but copies to other destinations failed ({names}); "
                f"run `backupctl pitr sync {item.deployment}`"
            )
    finally:
        service.state.set(_running_key(item.deployment), "")
    service.state.set(
        _result_key(item.deployment),
        json.dumps(
            {"slot": iso_ms(item.slot), **{k: outcome.get(k) for k in ("status", "error", "archived")}}
        ),
    )
    return outcome


def last_result(service: Service, deployment: str) -> dict[str, Any] | None:
    """{"slot", "status", "error", "archived"} of the deployment's last scheduled sync on this host."""
    value = service.state.get(_result_key(deployment))
    return json.loads(value) if value else None
