"""`repository repair index` and `repository repair snapshots`, under the exclusive lock.

repair index: the index is rebuilt from the authenticated pack headers (pack.py), which
repeat every index entry. Packs that no readable index file lists get their header read
and are written into a NEW index file; index files that are damaged (or that list packs
which no longer exist) are superseded by the new file and only then deleted, so a crash
at any point leaves at least the old, readable information. A pack whose header does not
authenticate cannot be indexed; it is named in the result (`repository check` keeps
naming it) and left in place.

repair snapshots: a manifest that does not authenticate, or whose backup references a
blob that the (complete) index does not have, is a backup that cannot be restored. It is
moved aside to ``damaged/snapshots/<id>`` (kept for forensics, not listed, not a root for
prune; the packs only it used are freed by the next prune) or deleted with
`delete=True`. It refuses while an index file is damaged: repair the index first, or
intact backups would be set aside for blobs that are merely unindexed.
"""

from __future__ import annotations

from typing import Any

from backupctl.errors import IntegrityError
from backupctl.events import InfoEvent, Reporter, WarningEvent
from backupctl.repo.check import _check_snapshot
from backupctl.repo.pack import BlobEntry, pack_name
from backupctl.repo.prune import PruneRefused
from backupctl.repo.repository import Repository

DAMAGED_PREFIX = "damaged/snapshots/"


def repair_index(repo: Repository, reporter: Reporter) -> dict[str, Any]:
    with repo.lock(exclusive=True, operation="repair index"):
        repo.load_index(reload=True)
        damaged = sorted(repo.damaged_indexes)
        listed = {info.name.rsplit("/", 1)[-1]: info.size for info in repo.dest.list("data/")}
        indexed = repo.index.packs()
        vanished = sorted(indexed - set(listed))
        rebuilt: dict[str, list[BlobEntry]] = {}
        unreadable: list[dict[str, str]] = []
        for pack_id in sorted(set(listed) - indexed):
            try:
                rebuilt[pack_id] = repo.read_pack_header(pack_id, listed[pack_id])
            except IntegrityError as exc:
                unreadable.append({"pack": pack_name(pack_id), "error": exc.message})
                reporter.emit(WarningEvent(f"cannot index {pack_name(pack_id)}: {exc.message}"))
        old_good = repo.index_ids
        written: list[str] = []
        deleted: list[str] = []
        if vanished:
            # Index files that list missing packs are rewritten whole: one new file supersedes all.
            packs = {p: e for p, e in repo.index.blobs_by_pack().items() if p not in set(vanished)}
            packs.update(rebuilt)
            written.append(
                repo.write_index(packs, supersedes=old_good | {n.split("/", 1)[1] for n in damaged})
            )
            obsolete = [f"index/{i}" for i in sorted(old_good)] + damaged
        else:
            if rebuilt:
                written.append(repo.write_index(rebuilt, supersedes={n.split("/", 1)[1] for n in damaged}))
            obsolete = damaged
        for name in obsolete:
            if name.split("/", 1)[1] in written:
                continue
            try:
                repo.dest.delete(name)
            except Exception as exc:
                reporter.emit(WarningEvent(f"cannot delete {name}: {exc}"))
                continue
            deleted.append(name)
        repo.load_index(reload=True)
        reporter.emit(
            InfoEvent(
                f"indexed {len(rebuilt)} packs from their headers, wrote {len(written)} index files, "
                f"deleted {len(deleted)}"
            )
        )
        return {
            "ok": not unreadable and not repo.damaged_indexes,
            "index_files_damaged": damaged,
            "index_files_written": [f"index/{i}" for i in written],
            "index_files_deleted": deleted,
            "packs_reindexed": len(rebuilt),
            "blobs_reindexed": sum(len(e) for e in rebuilt.values()),
            "packs_missing": [pack_name(p) for p in vanished],
            "packs_unreadable": unreadable,
        }


def repair_snapshots(
    repo: Repository, reporter: Reporter, *, delete: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    with repo.lock(exclusive=True, operation="repair snapshots"):
        repo.load_index(reload=True)
        if repo.damaged_indexes:
            raise PruneRefused(
                f"refusing to judge backups while index file(s) {', '.join(sorted(repo.damaged_indexes))} "
                "are damaged",
                hint="run `backupctl repository repair index` first",
            )
        ids = sorted(repo.manifest_ids())
        damaged: list[dict[str, str]] = []
        for backup_id in ids:
            why = _check_snapshot(repo, backup_id)
            if why is None:
                continue
            name = f"snapshots/{backup_id}"
            action = "would delete" if dry_run and delete else "would move" if dry_run else ""
            if not dry_run:
                if not delete:
                    repo.dest.put_metadata(DAMAGED_PREFIX + backup_id, repo.dest.get(name))
                repo.dest.delete(name)
                action = "deleted" if delete else f"moved to {DAMAGED_PREFIX}{backup_id}"
            damaged.append({"id": backup_id, "object": name, "problem": why, "action": action})
            reporter.emit(WarningEvent(f"backup {backup_id[:12]} is damaged ({why}): {action}"))
        return {"ok": True, "dry_run": dry_run, "snapshots": len(ids), "damaged": damaged}
