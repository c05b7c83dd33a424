"""Running what policies say is due: `schedule run-due`, the daemon, and retention.

One call of `run_due()`:
1. for every deployment under an active policy, asks `policy.schedule.due()` which
   schedules are due now, given the last slot attempted (local state) and the newest
   successful backup (interval schedules);
2. records each due slot as attempted *before* starting it, so a second `run-due` in
   the same minute starts nothing twice;
3. takes a lease per slot in the deployment's primary destination by conditional
   create (`leases/<deployment>/<policy>.<key>.<slot>`): when several hosts run the
   scheduler against one repository, exactly one of them runs each slot; the others
   skip it. A host that dies holding a lease costs that one slot; the next slot is
   taken by whichever host is alive. Destinations without atomic conditional create
   (FTP) make this best effort, as `destination check` says;
4. queues the runs (status Queued in `backup list`) and runs them, at most
   `settings.max_parallel_backups` at once and never two of one deployment;
5. after each scheduled backup, applies its policy's retention to that deployment; a
   retention step that could not run (a lock, an error) fails that run: its row gets
   `retention_error`, and `schedule run-due` exits non-zero;
6. alongside, archives the binary logs of deployments with `pitr.binlog_sync` whose
   interval slot has come (schedule.scheduled_sync; same made-up-once rule and lease).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from backupctl.backups.service import Service
from backupctl.backups.summary import failed_uploads
from backupctl.destinations.base import AlreadyExists
from backupctl.errors import BackupctlError
from backupctl.events import InfoEvent
from backupctl.notify import hooks as notify_hooks
from backupctl.notify.pitr_lag import check_pitr
from backupctl.pitr.retention import prune_logs
from backupctl.policy.models import Policy
from backupctl.policy.records import to_policy_records
from backupctl.policy.resolve import effective_policy, last_success_of, plan_prune
from backupctl.policy.schedule import Clock, PlannedRun, SystemClock, due, next_runs
from backupctl.procs import pid_alive
from backupctl.schedule import scheduled_sync
from backupctl.timefmt import iso_ms, parse_iso

LEASE_TTL = dt.timedelta(hours=6)
# Binary log syncs take a lease every few minutes: keep only a day of them, so that listing
# leases stays short. An older slot is never contended again (hosts sync the newest slot).
SYNC_LEASE_KEEP = dt.timedelta(days=1)


@dataclass
class DueRun:
    deployment: str
    policy_name: str
    policy: Policy
    run: PlannedRun
    backup_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def _last_run_key(deployment: str, policy_name: str, key: str) -> str:
    return f"lastrun/{deployment}/{policy_name}/{key}"


class Scheduler:
    def __init__(self, service: Service, clock: Clock | None = None) -> None:
        self.service = service
        self.clock: Clock = clock or service.clock or SystemClock()
        self._lock = threading.Lock()

    # ---- what is due -------------------------------------------------------------

    def _last_runs(self, deployment: str, policy_name: str, policy: Policy) -> dict[str, dt.datetime]:
        out = {}
        for key in policy.schedule_keys():
            value = self.service.state.get(_last_run_key(deployment, policy_name, key))
            if value:
                out[key] = parse_iso(value)
        return out

    def due_runs(self) -> list[DueRun]:
        now = self.clock.now()
        runs: list[DueRun] = []
        backups = to_policy_records(self.service.list_backups(expiries=False))
        for deployment in self.service.config.deployments:
            resolved = effective_policy(self.service.config, deployment)
            if resolved is None:
                continue
            name, policy = resolved
            last_runs = self._last_runs(deployment, name, policy)
            for planned in due(policy, now, last_runs, last_success_of(backups, deployment)):
                runs.append(DueRun(deployment, name, policy, planned))
        return runs

    def next_run(self) -> dt.datetime | None:
        """The earliest time anything is due after now (for the daemon's sleep)."""
        now = self.clock.now()
        backups = to_policy_records(self.service.list_backups(expiries=False))
        times: list[dt.datetime] = []
        for deployment in self.service.config.deployments:
            resolved = effective_policy(self.service.config, deployment)
            if resolved is None or resolved[1].paused:
                continue
            upcoming = next_runs(resolved[1], now, 1, last_success_of(backups, deployment))
            times.extend(r.slot for r in upcoming)
        for deployment in scheduled_sync.configured(self.service):
            when = scheduled_sync.next_sync(self.service, deployment, now)
            if when is not None:
                times.append(when)
        from backupctl.drill.scheduled import next_times as next_drills

        times.extend(next_drills(self.service, now))
        return min(times) if times else None

    def upcoming(self) -> list[dict[str, Any]]:
        """What run-due starts next, per deployment: its policy's backups, its binary log sync
        and its restore drills.

        Rows (stable keys): kind ("backup" / "binlog_sync" / "drill"), deployment, policy, schedule,
        type, next_run, last_run, last_status, last_error. `last_*` come from this host's
        state (backups: the newest backup its policy made)."""
        now = self.clock.now()
        records = self.service.list_backups(expiries=False)
        backups = to_policy_records(records)
        rows: list[dict[str, Any]] = []
        syncs = scheduled_sync.configured(self.service)
        for deployment in self.service.config.deployments:
            resolved = effective_policy(self.service.config, deployment)
            if resolved is not None:
                name, policy = resolved
                run = next(iter(next_runs(policy, now, 1, last_success_of(backups, deployment))), None)
                made = [r for r in records if r["deployment"] == deployment and r["created_by"] == name]
                last = max(made, key=lambda r: r["started"] or "", default=None)
                rows.append(
                    {
                        "kind": "backup",
                        "deployment": deployment,
                        "policy": name,
                        "schedule": run.key if run else None,
                        "type": run.schedule.type if run else None,
                        "next_run": iso_ms(run.slot) if run else None,
                        "last_run": last["started"] if last else None,
                        "last_status": last["status"] if last else None,
                        "last_error": last.get("error") if last else None,
                    }
                )
            pitr = syncs.get(deployment)
            if pitr is not None:
                when = scheduled_sync.next_sync(self.service, deployment, now)
                done = scheduled_sync.last_result(self.service, deployment) or {}
                rows.append(
                    {
                        "kind": scheduled_sync.KIND,
                        "deployment": deployment,
                        "policy": None,
                        "schedule": f"every {pitr.binlog_sync}" + (", flush" if pitr.flush else ""),
                        "type": "binlog",
                        "next_run": iso_ms(when) if when else None,
                        "last_run": done.get("slot"),
                        "last_status": done.get("status"),
                        "last_error": done.get("error"),
                    }
                )
        from backupctl.drill.scheduled import upcoming as upcoming_drills

        rows.extend(upcoming_drills(self.service, now))  # the policies' `drills:`, after the rest
        return rows

    # ---- running -----------------------------------------------------------------

    def _take_lease(self, item: DueRun) -> bool:
        return self._lease(
            item.deployment,
            f"{item.policy_name}.{item.run.key}",
            item.run.slot,
            {"backup_id": item.backup_id},
        )

    def _lease(self, deployment: str, what: str, slot_time: dt.datetime, extra: dict[str, Any]) -> bool:
        """Conditional create of `leases/<deployment>/<what>.<slot>`; False when another host has it."""
        dest = self.service.destination(self.service.primary_destination(deployment))
        slot = slot_time.strftime("%Y%m%dT%H%M%SZ")
        name = f"leases/{deployment}/{what}.{slot}"
        doc = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            **extra,
            "taken": iso_ms(self.clock.now()),
            "expires": iso_ms(self.clock.now() + LEASE_TTL),
        }
        try:
            dest.put_metadata(name, json.dumps(doc).encode(), exclusive=True)
        except AlreadyExists:
            return False
        self._forget_old_leases(dest, deployment)
        return True

    def _forget_old_leases(self, dest: Any, deployment: str) -> None:
        """Leases only matter while their slot can still be contended: drop week-old ones
        (binary log sync leases: day-old ones)."""
        now = self.clock.now()
        cutoff = (now - dt.timedelta(days=7)).strftime("%Y%m%dT%H%M%SZ")
        sync_cutoff = (now - SYNC_LEASE_KEEP).strftime("%Y%m%dT%H%M%SZ")
        sync_prefix = f"leases/{deployment}/{scheduled_sync.KIND}."
        for info in list(dest.list(f"leases/{deployment}/")):
            slot = info.name.rsplit(".", 1)[-1]
            if slot < (sync_cutoff if info.name.startswith(sync_prefix) else cutoff):
                try:
                    dest.delete(info.name)
                except BackupctlError:
                    pass

    def _running_deployments(self) -> set[str]:
        return {
            j["deployment"]
            for j in self.service.state.jobs()
            if j["status"] == "Running" and pid_alive(j["pid"])
        }

    def run_due(self) -> list[dict[str, Any]]:
        """Start everything due now; returns one result row per due slot."""
        results: list[dict[str, Any]] = []
        notify_hooks.run_due_started(self.service, self.clock.now())  # retry queued; report overdue
        check_pitr(self.service, self.clock.now())  # notifications.pitr_lag: archive lag or gap
        busy = self._running_deployments()
        todo: list[DueRun] = []
        for item in self.due_runs():
            row = {
                "kind": "backup",
                "deployment": item.deployment,
                "policy": item.policy_name,
                "schedule": item.run.key,
                "type": item.run.schedule.type,
                "slot": iso_ms(item.run.slot),
                "backup_id": None,
                "status": "",
            }
            results.append(row)
            if item.deployment in busy or any(t.deployment == item.deployment for t in todo):
                row["status"] = "skipped: a backup of this deployment is still running"
                continue
            # Record the attempt first: a concurrent or repeated run-due must not start it again.
            self.service.state.set(
                _last_run_key(item.deployment, item.policy_name, item.run.key), iso_ms(item.run.slot)
            )
            try:
                leased = self._take_lease(item)
            except BackupctlError as exc:
                row["status"] = f"failed: cannot take the lease: {exc.message}"
                continue
            if not leased:
                row["status"] = "skipped: another host runs this slot"
                continue
            row["backup_id"] = item.backup_id
            row["status"] = "Queued"
            todo.append(item)
            self.service.state.insert_job(
                id=item.backup_id,
                deployment=item.deployment,
                type=item.run.schedule.type,
                status="Queued",
                created_by=item.policy_name,
                started=iso_ms(self.clock.now()),
                location=self.service.location_of(self.service.primary_destination(item.deployment)),
            )
        # Syncs first in the queue: they are short, and a backup must not delay the archive.
        tasks: list[tuple[dict[str, Any], Callable[[], dict[str, Any]]]] = self._queue_syncs(results)
        by_id = {r["backup_id"]: r for r in results if r["backup_id"]}
        tasks += [(by_id[item.backup_id], partial(self._run_one, item)) for item in todo]
        workers = max(1, self.service.config.settings.max_parallel_backups)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scheduled") as pool:
            for (row, _), outcome in zip(tasks, pool.map(lambda t: t[1](), tasks), strict=True):
                row.update(outcome)
        # Restore drills the policies schedule, after the backups (so they drill the newest).
        from backupctl.drill.scheduled import run_due_drills

        results += run_due_drills(self.service, self.clock.now(), self._lease)
        return results

    def _queue_syncs(
        self, results: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], Callable[[], dict[str, Any]]]]:
        """Rows for the binary log syncs due now (appended to `results`) and the ones to run."""
        tasks: list[tuple[dict[str, Any], Callable[[], dict[str, Any]]]] = []
        for item in scheduled_sync.due_syncs(self.service, self.clock.now()):
            row = scheduled_sync.row(item)
            results.append(row)
            if scheduled_sync.still_running(self.service, item.deployment):
                row["status"] = "skipped: a binary log sync of this deployment is still running"
                continue
            scheduled_sync.record_attempt(self.service, item)
            try:
                leased = self._lease(item.deployment, scheduled_sync.KIND, item.slot, {})
            except BackupctlError as exc:
                row["status"] = "Failed"
                row["error"] = f"cannot take the lease: {exc.message}"
                continue
            if not leased:
                row["status"] = "skipped: another host runs this slot"
                continue
            row["status"] = "Queued"
            tasks.append((row, partial(scheduled_sync.run_sync, self.service, item)))
        return tasks

    def _run_one(self, item: DueRun) -> dict[str, Any]:
        try:
            record = self.service.create_backup(
                item.deployment,
                type=item.run.schedule.type,
                created_by=item.policy_name,
                backup_id=item.backup_id,
            )
        except BackupctlError as exc:
            job = self.service.state.get_job(item.backup_id)
            failed: dict[str, Any] = {"status": "Failed", "error": exc.message}
            if job is not None and job["type"]:
                failed["type"] = job["type"]  # what the run took (a full when none existed)
            if job is not None and job["status"] == "Completed":
                # Stored (restorable) but an upload failed: the run fails, the backup does not.
                # Retention waits for a run whose copies all succeeded.
                failed["status"] = "Completed"
                failed["failed_uploads"] = failed_uploads(job["destinations"])
            return failed
        # The type the backup really took: an incremental with no full to build on is a full.
        outcome: dict[str, Any] = {
            "status": record["status"],
            "error": record.get("error"),
            "type": record["type"],
        }
        try:
            pruned = self.apply_retention(item.deployment, dry_run=False)
            outcome["pruned"] = [d["id"] for d in pruned if d["action"] == "delete"]
        except BackupctlError as exc:
            # A retention step that did not run fails the run (the backup itself stays Completed).
            outcome["retention_error"] = exc.message
            notify_hooks.retention_failed(self.service, item.deployment, item.backup_id, exc.message)
            outcome["error"] = "; ".join(
                e for e in (outcome["error"], f"retention did not run: {exc.message}") if e
            )
        return outcome

    # ---- retention -----------------------------------------------------------------

    def apply_retention(self, deployment: str, *, dry_run: bool) -> list[dict[str, Any]]:
        """Keep/delete decisions (with reasons) for one deployment; deletes unless dry_run."""
        resolved = effective_policy(self.service.config, deployment)
        if resolved is None:
            return []
        name, policy = resolved
        records = self.service.list_backups(deployment, expiries=False)
        if policy.retention.keeps_nothing():
            # No rule at all means "keep everything", never "keep only the newest".
            return [
                {
                    "id": r["id"],
                    "deployment": deployment,
                    "started": r["started"],
                    "created_by": r["created_by"],
                    "status": r["status"],
                    "policy": name,
                    "action": "keep",
                    "reasons": ["the policy has no retention rules: everything is kept"],
                }
                for r in records
            ]
        decisions = plan_prune(policy, to_policy_records(records), self.clock.now())
        rows: list[dict[str, Any]] = []
        for d in decisions:
            rows.append(
                {
                    "id": d.backup.id,
                    "deployment": deployment,
                    "started": iso_ms(d.backup.created),
                    "created_by": d.backup.created_by,
                    "status": d.backup.status.capitalize(),
                    "policy": name,
                    "action": "keep" if d.keep else "delete",
                    "reasons": list(d.reasons),
                }
            )
        if not dry_run:
            doomed = [row for row in rows if row["action"] == "delete"]
            for row in doomed:
                with self._lock:
                    self.service.delete_backup(str(row["id"]))
                self.service.reporter.emit(
                    InfoEvent(f"retention deleted backup {row['id'][:8]} of {deployment}")
                )
            if doomed:
                # Archived WAL / binlogs that no retained base backup needs go with the backups.
                prune_logs(self.service, deployment)
        rows.sort(key=lambda r: r["started"], reverse=True)
        return rows
