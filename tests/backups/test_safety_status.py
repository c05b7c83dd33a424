"""Issue 11 items 3, 8 and 16: uploads that are really there, and statuses that tell the truth.

* 3: `backup upload` locks the target (shared) and confirms that every pack the backup
  needs is on the target, at its size and indexed, before the manifest; a re-upload
  repairs what is missing there instead of trusting the "uploaded" state row.
* 8: the manifest is the truth: a backup whose manifest exists is Completed in list,
  show, restore, verify, delete and prune, whatever its job row says.
* 16: a failed upload elsewhere does not make a stored backup Failed (the row says which
  destination failed); a retention step that did not run fails `schedule run-due`; the
  pre-restore "nothing to overwrite" probe leaves no Failed row; other configs' job rows
  stay out of `backup list`; a run taken as a full is reported as full.

Everything runs the real CLI (subprocesses) on real local repositories.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.backups.service import Service
from backupctl.config.loader import load_config
from backupctl.policy.schedule import FakeClock
from backupctl.schedule.scheduler import Scheduler

# ---- set-up ---------------------------------------------------------------------------


class Setup:
    """A files deployment `app` stored in `local`, optionally uploaded to `offsite`."""

    def __init__(self, root: Path, *, offsite: Path | None = None, policy: dict[str, Any] | None = None):
        self.root = root
        self.tree = helpers.make_sample_tree(root / "src")
        self.repo = root / "repo"
        self.config = root / "config.yaml"
        helpers.write_config(
            self.config, sources=[{"type": "files", "paths": [str(self.tree)]}], repository=self.repo
        )
        doc = helpers.load_yaml(self.config)
        doc["destinations"]["local"]["fsync"] = False
        if offsite is not None:
            doc["destinations"]["offsite"] = {"type": "local", "path": str(offsite), "fsync": False}
            doc["deployments"]["app"]["destinations"] = ["local", "offsite"]
        if policy is not None:
            doc["policies"] = {"nightly": policy}
            doc["deployments"]["app"]["policy"] = "nightly"
        helpers.dump_yaml(doc, self.config)
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}

    def run(self, *args: Any) -> helpers.CliResult:
        return helpers.run_cli(*args, env=self.env)

    def ok(self, *args: Any) -> helpers.CliResult:
        return helpers.run_ok(*args, env=self.env)

    def create(self) -> str:
        return self.ok("backup", "create", "app").stdout.strip().splitlines()[-1]

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.ok("backup", "list", "--all", "-o", "json").json()}

    def service(self) -> Service:
        return Service(load_config(self.config))

    def assert_restores(self, backup_id: str, expected: dict[str, Any], *extra: str) -> None:
        target = self.root / f"restore-{uuid.uuid4().hex[:6]}"
        self.ok("backup", "restore", backup_id, "--target", target, "--yes", *extra)
        helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, self.tree)))
        shutil.rmtree(target)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hold_lock(repo: Path, *, exclusive: bool) -> Path:
    """A lock object of a live process (this test) as a running prune/backup would write it."""
    (repo / "locks").mkdir(parents=True, exist_ok=True)
    path = repo / "locks" / uuid.uuid4().hex
    doc = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "exclusive": exclusive,
        "operation": "delete" if exclusive else "backup test",
        "time": time.time(),
    }
    path.write_text(json.dumps(doc))
    return path


def pack_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


# ---- 3. upload: locked, confirmed, repaired ------------------------------------------------


def test_reupload_repairs_packs_and_index_removed_on_the_target(tmp_path: Path) -> None:
    offsite = tmp_path / "offsite"
    s = Setup(tmp_path, offsite=offsite)
    expected = helpers.snapshot_tree(s.tree)
    backup_id = s.create()
    assert s.rows()[backup_id]["destinations"]["offsite"]["state"] == "uploaded"

    # What a prune racing the upload left behind: the manifest, but packs and index gone.
    packs = pack_files(offsite)
    assert packs
    packs[0].unlink()
    if len(packs) > 1:
        packs[1].write_bytes(packs[1].read_bytes()[:-7])  # torn: wrong size
    for index in (offsite / "index").iterdir():
        index.unlink()
    assert s.run("backup", "verify", backup_id, "--destination", "offsite").returncode != 0

    result = s.ok("backup", "upload", backup_id, "-o", "json").json()
    assert result["destinations"]["offsite"]["state"] == "uploaded", result
    assert result["destinations"]["offsite"]["objects_sent"] >= 2, result

    s.ok("backup", "verify", backup_id, "--destination", "offsite")
    s.assert_restores(backup_id, expected, "--destination", "offsite")
    # Nothing to repair the second time: nothing is sent but the confirmation still runs.
    again = s.ok("backup", "upload", backup_id, "-o", "json").json()["destinations"]["offsite"]
    assert again["state"] == "uploaded" and again["bytes_sent"] == 0, again


def test_upload_waits_for_no_one_and_fails_while_the_target_is_being_pruned(tmp_path: Path) -> None:
    offsite = tmp_path / "offsite"
    s = Setup(tmp_path, offsite=offsite)
    expected = helpers.snapshot_tree(s.tree)
    doc = helpers.load_yaml(s.config)
    doc["deployments"]["app"]["upload"] = False
    helpers.dump_yaml(doc, s.config)
    backup_id = s.create()

    # A delete/prune holds the target exclusively: the upload must not write into it.
    offsite.mkdir()
    lock = hold_lock(offsite, exclusive=True)
    result = s.run("backup", "upload", backup_id, "-o", "json")
    assert result.returncode != 0, str(result)
    state = result.json()["destinations"]["offsite"]
    assert state["state"] == "failed" and "lock" in state["error"], state
    assert not (offsite / "snapshots").exists() or not any((offsite / "snapshots").iterdir())
    assert not (offsite / "data").exists() or not pack_files(offsite)

    # While an upload holds its (shared) lock, a delete on the target must wait its turn.
    lock.unlink()
    s.ok("backup", "upload", backup_id)
    s.assert_restores(backup_id, expected, "--destination", "offsite")


def test_upload_racing_deletes_on_the_target_never_claims_a_broken_copy(tmp_path: Path) -> None:
    """Real processes: uploads of new backups while the previous ones are deleted on the target."""
    offsite = tmp_path / "offsite"
    s = Setup(tmp_path, offsite=offsite)
    doc = helpers.load_yaml(s.config)
    doc["deployments"]["app"]["upload"] = False
    helpers.dump_yaml(doc, s.config)
    for round_no in range(3):
        (s.tree / "data" / f"round-{round_no}.bin").write_bytes(os.urandom(300_000))
        expected = helpers.snapshot_tree(s.tree)
        old = s.create()
        s.ok("backup", "upload", old)
        new = s.create()
        (s.tree / "data" / f"round-{round_no}.bin").unlink()
        upload = subprocess.Popen(
            helpers.cli_command("backup", "upload", new, "-o", "json"),
            env=helpers.cli_env(s.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        s.run("backup", "delete", old, "--destination", "offsite", "--yes")  # may meet the upload's lock
        upload.communicate(timeout=120)
        if upload.returncode != 0:  # met the delete's lock: failed loudly; a retry completes it
            s.ok("backup", "upload", new)
        s.ok("backup", "verify", new, "--destination", "offsite")
        s.assert_restores(new, expected, "--destination", "offsite")
        s.ok("backup", "delete", old, "--yes")


# ---- 8. the manifest is the truth ---------------------------------------------------------


@pytest.mark.parametrize("row", ["Running", "Failed"])
def test_a_backup_killed_after_its_commit_point_is_completed_everywhere(tmp_path: Path, row: str) -> None:
    policy = {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"type": "full", "daily": {"at": "01:00"}, "timezone": "UTC"}],
        "retention": {"keep_last": 1, "include_manual": True},
    }
    s = Setup(tmp_path, policy=policy)
    older = s.create()
    (s.tree / "docs" / "later.txt").write_text("written between the two backups\n")
    expected = helpers.snapshot_tree(s.tree)
    newer = s.create()
    # The process died after saving the manifest, before the job row said Completed.
    if row == "Running":
        s.service().state.update_job(newer, status="Running", pid=dead_pid(), finished=None)
    else:
        s.service().state.update_job(newer, status="Failed", error="interrupted")

    rows = s.rows()
    assert rows[newer]["status"] == "Completed", rows[newer]
    assert rows[newer]["error"] is None
    assert s.ok("backup", "show", newer, "-o", "json").json()["status"] == "Completed"
    s.ok("backup", "verify", newer)
    s.assert_restores(newer, expected)
    # The job row itself was corrected.
    job = s.service().state.get_job(newer)
    assert job is not None and job["status"] == "Completed", job

    # Retention keeps the newest Completed backup (this one) and deletes the older one.
    s.ok("backup", "prune", "--yes")
    assert sorted(p.name for p in (s.repo / "snapshots").iterdir()) == [newer]
    assert set(s.rows()) == {newer}
    s.assert_restores(newer, expected)
    assert older not in s.rows()

    s.ok("backup", "delete", newer, "--yes")
    assert not any((s.repo / "snapshots").iterdir())
    assert s.rows() == {}


def test_kill_9_just_after_the_manifest_is_written_leaves_a_completed_backup(tmp_path: Path) -> None:
    """For real: the process SIGKILLs itself right after its K-th destination write is durable
    (BACKUPCTL_FAULTS=kill_at=K,kill_how=after); K is swept until that write is the manifest."""
    s = Setup(tmp_path)
    first = s.create()
    expected = helpers.snapshot_tree(s.tree)
    committed = None
    for k in range(1, 40):
        result = helpers.run_cli(
            "backup", "create", "app", env={**s.env, "BACKUPCTL_FAULTS": f"kill_at={k},kill_how=after"}
        )
        assert result.returncode != 0, f"never killed after its manifest (k={k})\n{result}"
        new = {p.name for p in (s.repo / "snapshots").iterdir()} - {first}
        if new:
            (committed,) = new
            break
    assert committed is not None
    rows = s.rows()
    assert rows[committed]["status"] == "Completed", rows[committed]
    assert all(r["status"] == "Failed" for i, r in rows.items() if i not in (first, committed)), rows
    assert s.ok("backup", "show", committed[:8], "-o", "json").json()["status"] == "Completed"
    s.ok("backup", "verify", committed[:8])
    s.assert_restores(committed[:8], expected)
    s.ok("backup", "delete", first, "--yes")
    assert {p.name for p in (s.repo / "snapshots").iterdir()} == {committed}
    s.assert_restores(committed[:8], expected)


# ---- 16a. a failed upload elsewhere --------------------------------------------------------


def test_a_backup_whose_upload_failed_is_completed_and_restorable_from_its_local_copy(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the offsite directory should be\n")
    s = Setup(tmp_path, offsite=blocker / "repo")
    expected = helpers.snapshot_tree(s.tree)

    created = s.run("backup", "create", "app", "-o", "json")
    assert created.returncode != 0, str(created)
    assert "upload to offsite failed" in created.stderr, str(created)
    backup_id = next(iter(s.rows()))

    row = s.rows()[backup_id]
    assert row["status"] == "Completed", row
    assert row["failed_uploads"] == ["offsite"], row
    assert row["destinations"]["local"]["state"] == "stored"
    assert row["destinations"]["offsite"]["state"] == "failed"
    table = s.ok("backup", "list").stdout
    line = next(ln for ln in table.splitlines() if backup_id[:8] in ln)
    assert "Completed" in line and "offsite" in line, table

    s.assert_restores(backup_id, expected)  # no --destination needed
    s.ok("backup", "verify", backup_id)
    shown = s.ok("backup", "show", backup_id).stdout
    assert "offsite" in shown and "failed" in shown, shown

    blocker.unlink()
    s.ok("backup", "upload", backup_id)
    row = s.rows()[backup_id]
    assert row["status"] == "Completed" and row["failed_uploads"] == [], row
    s.assert_restores(backup_id, expected, "--destination", "offsite")


# ---- 16b. retention that did not run ---------------------------------------------------------


def test_run_due_whose_retention_meets_a_lock_fails_loudly_even_when_quiet(tmp_path: Path) -> None:
    policy = {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"type": "full", "hourly": {"every": 1, "minute": 0}, "timezone": "UTC"}],
        "retention": {"keep_last": 1},
    }
    s = Setup(tmp_path, policy=policy)
    svc = s.service()
    earlier = svc.create_backup("app", type="full", created_by="nightly")["id"]
    svc.close()
    # Another process (a running backup) holds a shared lock: backups may run, deletes may not.
    hold_lock(s.repo, exclusive=False)

    result = s.run("schedule", "run-due", "--quiet")
    assert result.returncode != 0, str(result)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "retention" in lines[0], str(result)
    assert "Traceback" not in result.stderr
    assert earlier in s.rows()  # nothing was deleted, and the run says so


# ---- 16c. the pre-restore probe -------------------------------------------------------------


@pytest.mark.server
def test_restore_into_an_empty_deployment_leaves_no_failed_row(pg_server: Any, make_deployment: Any) -> None:
    server = pg_server
    db, other = f"probe_{uuid.uuid4().hex[:8]}", f"probe_new_{uuid.uuid4().hex[:8]}"
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50) g", db)
    deployment = make_deployment([server.options(databases=[db])])
    doc = helpers.load_yaml(deployment.config)
    doc["deployments"]["acceptance"] = {
        "sources": [server.options(databases=[other])],
        "destinations": ["local"],
    }
    helpers.dump_yaml(doc, deployment.config)
    backup_id = deployment.create()
    try:
        result = deployment.ok("backup", "restore", backup_id, "--to", "acceptance", "--yes", "-o", "json")
        assert result.json()["safety_backup"] is None
        listed = deployment.list()
        assert [r["id"] for r in listed] == [backup_id], listed
        assert all(r["status"] == "Completed" for r in listed), listed
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        server.psql(f"DROP DATABASE IF EXISTS {other} WITH (FORCE)")


# ---- 16d. other configs' rows -----------------------------------------------------------------


def test_backup_list_shows_no_failed_rows_of_another_configs_repository(tmp_path: Path) -> None:
    mine = Setup(tmp_path / "mine")
    theirs = Setup(tmp_path / "theirs")
    mine_id = mine.create()
    theirs.create()
    shutil.rmtree(theirs.tree)  # their next backup fails after opening their repository
    failed = theirs.run("backup", "create", "app")
    assert failed.returncode != 0, str(failed)
    assert any(r["status"] == "Failed" for r in theirs.rows().values())

    # And one that fails before its repository is even opened (destination unusable).
    doc = helpers.load_yaml(theirs.config)
    (tmp_path / "blocker").write_text("not a directory\n")
    doc["destinations"]["local"]["path"] = str(tmp_path / "blocker" / "repo")
    helpers.dump_yaml(doc, theirs.config)
    assert theirs.run("backup", "create", "app").returncode != 0

    assert list(mine.rows()) == [mine_id], mine.rows()
    assert "Failed" not in mine.ok("backup", "list").stdout


# ---- 16e. the type a run really took -------------------------------------------------------------


def test_run_due_reports_the_full_it_took_when_no_full_existed(tmp_path: Path) -> None:
    policy = {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"type": "incremental", "daily": {"at": "01:00"}, "timezone": "UTC"}],
        "retention": {"keep_last": 5},
    }
    s = Setup(tmp_path, policy=policy)
    clock = FakeClock(dt.datetime(2026, 3, 2, 1, 0, 30, tzinfo=dt.UTC))
    service = Service(load_config(s.config), clock=clock)
    rows = Scheduler(service, clock).run_due()
    assert len(rows) == 1 and rows[0]["status"] == "Completed", rows
    assert rows[0]["type"] == "full", rows
    listed = service.list_backups("app")
    assert [r["type"] for r in listed] == ["full"], listed
    job = service.state.get_job(rows[0]["backup_id"])
    assert job is not None and job["type"] == "full", job


def test_run_due_whose_upload_failed_reports_a_completed_backup_and_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the offsite directory should be\n")
    policy = {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"type": "full", "daily": {"at": "01:00"}, "timezone": "UTC"}],
        "retention": {"keep_last": 5},
    }
    s = Setup(tmp_path, offsite=blocker / "repo", policy=policy)
    expected = helpers.snapshot_tree(s.tree)
    result = s.run("schedule", "run-due", "--quiet", "-o", "json")
    assert result.returncode != 0, str(result)
    (row,) = result.json()
    assert row["status"] == "Completed" and row["failed_uploads"] == ["offsite"], row
    assert "upload to offsite failed" in row["error"], row
    assert s.rows()[row["backup_id"]]["status"] == "Completed"
    s.assert_restores(row["backup_id"], expected)
