"""Where drill records live: `drills/<drill-id>` in the repository, and a local cache.

The record is written to the destination drilled from, then to every other destination of
the deployment that holds the backup (its uploaded copies: evidence survives the primary).
Records of deleted backups are kept (the history of what was proven; a few hundred bytes each).

In the repository a record is an encrypted metadata object like a manifest (the codec's
JSON -> zstd -> AES-256-GCM, AAD `drill:<drill-id>`), so every host that can open the
repository lists every host's drills, and nobody without the key reads them. Records are
immutable, so the local cache (table `drills` in the state database) never goes stale; it
also keeps drills whose repository is unreachable now visible on this host.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

from backupctl.errors import BackupctlError, IntegrityError, NoRepositoryError

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.drill.record import DrillRecord
    from backupctl.records import BackupSummary
    from backupctl.repo.repository import Repository

PREFIX = "drills/"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    repository_id TEXT NOT NULL,
    id TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    deployment TEXT NOT NULL,
    started TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (repository_id, id)
);
CREATE INDEX IF NOT EXISTS drills_backup ON drills(backup_id);
CREATE INDEX IF NOT EXISTS drills_deployment ON drills(deployment, started);
"""


def _aad(drill_id: str) -> bytes:
    return b"drill:" + drill_id.encode()


def _db(service: Service) -> sqlite3.Connection:
    conn = sqlite3.connect(service.state.path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.executescript(_SCHEMA)
    return conn


def _cache(conn: sqlite3.Connection, repo_id: str, record: DrillRecord) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO drills (repository_id, id, backup_id, deployment, started, record) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            repo_id,
            record["id"],
            record["backup_id"],
            record["deployment"],
            record["started"],
            json.dumps(record),
        ),
    )


def write(repo: Repository, record: DrillRecord) -> None:
    data = repo.codec.encode_doc(record, _aad(record["id"]))
    repo.dest.put_metadata(f"{PREFIX}{record['id']}", data, exclusive=True)


def read(repo: Repository, drill_id: str) -> DrillRecord:
    name = f"{PREFIX}{drill_id}"
    record: DrillRecord = repo.codec.decode_doc(repo.dest.get(name), _aad(drill_id), name)
    return record


def save(service: Service, destination: str, record: DrillRecord) -> None:
    repo = service.repository(destination)
    write(repo, record)
    conn = _db(service)
    try:
        _cache(conn, repo.id, record)
    finally:
        conn.close()


def save_to_copies(service: Service, deployment: str, written: str, record: DrillRecord) -> list[str]:
    """Write the record also into every other destination of the deployment that holds the
    drilled backup (an uploaded copy), so that a host reading from there after losing the
    primary still sees the evidence. Best effort: returns one message per destination that
    could not take it (a warning for the caller), never raises."""
    problems: list[str] = []
    dep = service.config.deployments.get(deployment)
    for name in dep.destinations if dep is not None else []:
        if name == written:
            continue
        try:
            repo = service.repository(name)
            if not repo.dest.exists(f"snapshots/{record['backup_id']}"):
                continue
            if not repo.dest.exists(f"{PREFIX}{record['id']}"):
                write(repo, record)
        except BackupctlError as exc:
            problems.append(f"the drill record could not be stored in {name!r}: {exc.message}")
    return problems


def cache_only(service: Service, repo_id: str, record: DrillRecord) -> None:
    """Keep a record locally when the repository could not take it."""
    conn = _db(service)
    try:
        _cache(conn, repo_id, record)
    finally:
        conn.close()


def sync(service: Service, repo: Repository) -> None:
    """Cache every drill record of `repo` not cached yet (another host's drills)."""
    conn = _db(service)
    try:
        have = {r["id"] for r in conn.execute("SELECT id FROM drills WHERE repository_id = ?", (repo.id,))}
        for info in repo.dest.list(PREFIX):
            drill_id = info.name[len(PREFIX) :]
            if drill_id in have or "/" in drill_id or drill_id.startswith("."):
                continue
            try:
                _cache(conn, repo.id, read(repo, drill_id))
            except IntegrityError:  # a damaged record hides only itself
                continue
    finally:
        conn.close()


def history(service: Service, deployment_or_backup: str, destination: str | None = None) -> list[DrillRecord]:
    """Records of a deployment (name) or of one backup (full ID), newest first.

    Reads the repositories of `destination` (or the deployment's primary destination, or
    every configured deployment's primary for a backup ID), then the local cache."""
    if destination is not None:
        names = [destination]
    elif deployment_or_backup in service.config.deployments:
        names = [service.primary_destination(deployment_or_backup)]
    else:
        names = list(dict.fromkeys(service.primary_destination(d) for d in service.config.deployments))
    repo_ids = []
    for name in names:
        try:
            repo = service.repository(name)
        except NoRepositoryError:
            continue
        sync(service, repo)
        repo_ids.append(repo.id)
    return cached(service, deployment_or_backup, repo_ids)


def latest_by_backup(service: Service, records: list[BackupSummary]) -> dict[str, list[DrillRecord]]:
    """Drill records of the listed backups by backup ID, newest first: the repositories of
    their deployments' primary destinations are synced first (other hosts' drills)."""
    deployments = {r["deployment"] for r in records if r["deployment"] in service.config.deployments}
    for name in dict.fromkeys(service.primary_destination(d) for d in sorted(deployments)):
        try:
            sync(service, service.repository(name))
        except BackupctlError:  # unreachable now: the local cache still answers
            continue
    ids = [r["id"] for r in records]
    out: dict[str, list[DrillRecord]] = {}
    conn = _db(service)
    try:
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = conn.execute(
                f"SELECT record FROM drills WHERE backup_id IN ({marks}) ORDER BY started DESC", part
            ).fetchall()
            for row in rows:
                record: DrillRecord = json.loads(row["record"])
                have = out.setdefault(record["backup_id"], [])
                if all(d["id"] != record["id"] for d in have):
                    have.append(record)
    finally:
        conn.close()
    return out


def cached(
    service: Service, deployment_or_backup: str, repo_ids: list[str] | None = None
) -> list[DrillRecord]:
    """Records from the local cache only (no repository access), newest first."""
    conn = _db(service)
    try:
        rows = conn.execute(
            "SELECT repository_id, record FROM drills WHERE deployment = ? OR backup_id = ? ORDER BY started DESC",
            (deployment_or_backup, deployment_or_backup),
        ).fetchall()
    finally:
        conn.close()
    out: list[DrillRecord] = []
    seen = set()
    for row in rows:
        if repo_ids is not None and row["repository_id"] not in repo_ids:
            continue
        record: DrillRecord = json.loads(row["record"])
        if record["id"] not in seen:
            seen.add(record["id"])
            out.append(record)
    return out
