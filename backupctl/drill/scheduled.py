"""Restore drills that policies schedule (`drills: {every: weekly, older: 1}`), run by
`schedule run-due` and the daemon (schedule/scheduler.py calls `run_due_drills`).

Slots: a drill is due once per `every`, in slots counted from a fixed epoch (so every host
computes the same slots). As for backups (schedule/scheduler.py): the attempt is recorded in
the local state before it starts (a second run-due in the same slot starts nothing), and
a lease `leases/<deployment>/drill.<slot>` in the deployment's primary destination makes
exactly one host drill a slot when several run the scheduler. A missed slot is not made
up: the next run-due drills the current one.

Each due slot drills the newest Completed backup of the deployment plus `older` randomly
chosen older Completed ones; each is one result row (kind "drill") with the stable keys of
run-due's rows: status "Completed" when every check passed, "Failed" with `error` naming
the first failed check otherwise (run-due then exits 1).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backupctl.drill.run import first_failure, run_drill
from backupctl.errors import BackupctlError
from backupctl.timefmt import iso_ms, parse_iso

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.policy.models import Drills

KIND = "drill"
_EPOCH = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)  # a Monday: weekly slots start on Mondays, 00:00 UTC


@dataclass
class DueDrill:
    deployment: str
    policy_name: str
    drills: Drills
    slot: dt.datetime


def _state_key(deployment: str) -> str:
    return f"drill/lastslot/{deployment}"


def slot_of(now: dt.datetime, every: dt.timedelta) -> dt.datetime:
    """The start of the slot `now` lies in."""
    return _EPOCH + ((now - _EPOCH) // every) * every


def _configured(service: Service) -> list[tuple[str, str, Drills]]:
    from backupctl.policy.resolve import effective_policy

    out = []
    for deployment in service.config.deployments:
        resolved = effective_policy(service.config, deployment)
        if resolved is None or resolved[1].paused or resolved[1].drills is None:
            continue
        out.append((deployment, resolved[0], resolved[1].drills))
    return out


def due_drills(service: Service, now: dt.datetime) -> list[DueDrill]:
    due = []
    for deployment, policy_name, drills in _configured(service):
        slot = slot_of(now, drills.interval)
        last = service.state.get(_state_key(deployment))
        if last is not None and parse_iso(last) >= slot:
            continue
        due.append(DueDrill(deployment, policy_name, drills, slot))
    return due


def upcoming(service: Service, now: dt.datetime) -> list[dict[str, Any]]:
    """`schedule list` rows (kind "drill") with its stable keys: the next slot, and the newest
    drill of the deployment on record on this host (local cache: no repository access)."""
    from backupctl.drill import store

    rows = []
    for deployment, policy_name, drills in _configured(service):
        slot = slot_of(now, drills.interval)
        last = service.state.get(_state_key(deployment))
        next_slot = slot if last is None or parse_iso(last) < slot else slot + drills.interval
        newest = next(iter(store.cached(service, deployment)), None)
        failed = newest is not None and not newest["passed"]
        rows.append(
            {
                "kind": KIND,
                "deployment": deployment,
                "policy": policy_name,
                "schedule": f"every {drills.every}" + (f", {drills.older} older" if drills.older else ""),
                "type": KIND,
                "next_run": iso_ms(next_slot),
                "last_run": newest["started"] if newest else None,
                "last_status": None if newest is None else ("Failed" if failed else "Completed"),
                "last_error": f"drill failed: {first_failure(newest)}"
                if newest is not None and failed
                else None,
            }
        )
    return rows


def next_times(service: Service, now: dt.datetime) -> list[dt.datetime]:
    """When each deployment's next drill slot starts (for the daemon's sleep)."""
    times = []
    for deployment, _, drills in _configured(service):
        slot = slot_of(now, drills.interval)
        last = service.state.get(_state_key(deployment))
        times.append(slot if last is None or parse_iso(last) < slot else slot + drills.interval)
    return times


def _row(item: DueDrill, backup_id: str | None, status: str, error: str | None = None) -> dict[str, Any]:
    return {
        "kind": KIND,
        "deployment": item.deployment,
        "policy": item.policy_name,
        "schedule": f"every {item.drills.every}"
        + (f", {item.drills.older} older" if item.drills.older else ""),
        "type": KIND,
        "slot": iso_ms(item.slot),
        "backup_id": backup_id,
        "status": status,
        "error": error,
    }


def run_due_drills(
    service: Service,
    now: dt.datetime,
    lease: Callable[[str, str, dt.datetime, dict[str, Any]], bool],
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Run the drills due now; one row per drilled backup (or per skipped slot).
    `lease(deployment, what, slot, extra)` is the scheduler's conditional create."""
    rows: list[dict[str, Any]] = []
    rng = rng or random.SystemRandom()
    for item in due_drills(service, now):
        service.state.set(_state_key(item.deployment), iso_ms(item.slot))  # the attempt, first
        try:
            if not lease(item.deployment, KIND, item.slot, {}):
                rows.append(_row(item, None, "skipped: another host runs this slot"))
                continue
            completed = [
                r for r in service.list_backups(item.deployment, expiries=False) if r["status"] == "Completed"
            ]
        except BackupctlError as exc:
            rows.append(_row(item, None, "Failed", exc.message))
            continue
        if not completed:
            rows.append(_row(item, None, "skipped: no completed backup to drill"))
            continue
        completed.sort(key=lambda r: r["started"], reverse=True)
        older = completed[1:]
        chosen = completed[:1] + rng.sample(older, min(item.drills.older, len(older)))
        for backup in chosen:
            try:
                record = run_drill(service, item.deployment, backup["id"])
            except BackupctlError as exc:
                rows.append(_row(item, backup["id"], "Failed", exc.message))
                continue
            if record["passed"]:
                rows.append(_row(item, backup["id"], "Completed"))
            else:
                rows.append(_row(item, backup["id"], "Failed", f"drill failed: {first_failure(record)}"))
    return rows
