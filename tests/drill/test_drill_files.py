"""Restore drills of files and SQLite backups (issue 16): `backupctl backup drill`.

Real repository, real CLI. A good backup drills as passed and the record shows in
`backup list` and `backup show`; tampered stored data (a flipped byte in a pack, recorded
row counts that the restored database does not have) fails with the reason named and exit
code 8; the live deployment is untouched; no scratch directory is left behind, also after a
kill -9 of a drill (the next run removes it).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import helpers

DRILL_FAILED = 8


def _make_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer primary key, name text)")
    conn.execute("create table orders (id integer primary key, customer integer, total real)")
    conn.executemany("insert into customers (name) values (?)", [(f"c{i}",) for i in range(3)])
    conn.executemany(
        "insert into orders (customer, total) values (?, ?)", [(i % 3, i * 1.5) for i in range(50)]
    )
    conn.commit()
    conn.close()
    return path


def _tmp_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A private TMPDIR for the CLI, so that its scratch directories can be inspected."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"TMPDIR": str(tmp)}, tmp / f"backupctl-{os.getuid()}"


def _leftovers(base: Path) -> list[Path]:
    return sorted(base.iterdir()) if base.exists() else []


def _db_digest(path: Path) -> str:
    return helpers.file_digest(path)


def test_good_files_and_sqlite_backup_drills_passed(
    make_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    db = _make_db(tmp_path / "live" / "app.db")
    dep = make_deployment(
        [{"type": "files", "paths": [str(sample_tree)]}, {"type": "sqlite", "path": str(db)}]
    )
    backup_id = dep.create()
    tree_before = helpers.snapshot_tree(sample_tree)
    db_before = _db_digest(db)
    live_before = sorted(p.name for p in db.parent.iterdir())
    env, base = _tmp_env(tmp_path)

    record = dep.ok("backup", "drill", "app", "-o", "json", env=env).json()
    assert record["backup_id"] == backup_id and record["deployment"] == "app"
    assert record["passed"] is True, record
    assert all(c["passed"] for c in record["checks"]), record["checks"]
    names = {c["name"] for c in record["checks"]}
    assert {"files.content", "files.metadata", "sqlite.integrity", "sqlite.rows"} <= names, names
    rows = [c for c in record["checks"] if c["name"] == "sqlite.rows"]
    assert any("orders" in c["detail"] and "50" in c["detail"] for c in rows), rows
    assert record["restore_seconds"] >= 0 and record["seconds"] >= record["restore_seconds"]
    assert record["to_time"] is None and record["host"]

    # The live deployment is untouched, and the drill left nothing behind.
    helpers.assert_same_tree(tree_before, helpers.snapshot_tree(sample_tree))
    assert _db_digest(db) == db_before
    assert sorted(p.name for p in db.parent.iterdir()) == live_before
    assert _leftovers(base) == []

    # The record is in the repository (every host) and in `backup list` / `backup show`.
    assert len(list((dep.repository / "drills").iterdir())) == 1
    listed = dep.list()[0]
    assert listed["drill_passed"] is True and listed["verified_at"] == record["started"]
    shown = dep.show(backup_id)
    assert [d["id"] for d in shown["drills"]] == [record["id"]]
    table = dep.ok("backup", "list").stdout
    assert "VERIFIED" in table.splitlines()[0].upper()
    assert "Drill" in dep.ok("backup", "show", backup_id[:8]).stdout

    # Another host (an empty local state) sees the drill from the repository alone.
    other_state = tmp_path / "other-state"
    other_state.mkdir()
    listed = dep.ok("backup", "list", "-o", "json", env={"XDG_STATE_HOME": str(other_state)}).json()
    assert listed[0]["drill_passed"] is True

    # The human form: one line saying it passed, with the ID drilled.
    human = dep.ok("backup", "drill", "app", backup_id[:8], env=env)
    assert "passed" in human.stdout and backup_id[:8] in human.stdout


def test_flipped_byte_in_a_pack_fails_the_drill(files_deployment: Any, tmp_path: Path) -> None:
    dep = files_deployment
    dep.create()
    pack = max(
        (p for p in (dep.repository / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x40
    pack.write_bytes(bytes(data))
    env, base = _tmp_env(tmp_path)

    result = dep.run("backup", "drill", "app", env=env)
    helpers.assert_one_line_error(result, DRILL_FAILED, "drill of backup", "failed", "restore")
    assert _leftovers(base) == []
    listed = dep.list()[0]
    assert listed["drill_passed"] is False and listed["verified_at"] is None
    assert "failed" in dep.ok("backup", "list").stdout

    failed = dep.run("backup", "drill", "app", "-o", "json", env=env)
    assert failed.returncode == DRILL_FAILED, str(failed)
    record = failed.json()
    assert record["passed"] is False
    bad = [c for c in record["checks"] if not c["passed"]]
    assert bad and "data/" in bad[0]["detail"], bad


def _rewrite_manifest(dep: Any, backup_id: str, change: Any) -> None:
    """Tamper with what a backup recorded: decode its manifest, change it, store it again."""
    from backupctl.backups.service import Service

    svc: Service = helpers.service(dep.config)
    repo = svc.repository("local")
    manifest = repo.load_manifest(backup_id)
    change(manifest)
    repo.delete_manifest(backup_id)
    repo.save_manifest(manifest)
    svc.close()


def test_sqlite_rows_missing_from_the_restored_database_fail_the_drill(
    make_deployment: Any, tmp_path: Path
) -> None:
    db = _make_db(tmp_path / "live" / "shop.db")
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    backup_id = dep.create()
    counts = dep.show(backup_id)["sources"][0]["info"]["row_counts"]
    assert counts == {"customers": 3, "orders": 50}

    def tamper(manifest: dict[str, Any]) -> None:
        info = manifest["sources"][0]["info"]
        info["row_counts"] = {"customers": 3, "orders": 51, "invoices": 7}

    _rewrite_manifest(dep, backup_id, tamper)
    env, base = _tmp_env(tmp_path)
    result = dep.run("backup", "drill", "app", env=env)
    helpers.assert_one_line_error(result, DRILL_FAILED, "sqlite.rows")
    assert "orders" in result.stderr or "invoices" in result.stderr
    record = dep.run("backup", "drill", "app", "-o", "json", env=env).json()
    bad = {c["detail"] for c in record["checks"] if not c["passed"]}
    assert any("orders" in d and "51" in d and "50" in d for d in bad), bad
    assert any("invoices" in d and "missing" in d for d in bad), bad
    assert _leftovers(base) == []


def test_sqlite_backup_without_recorded_counts_is_checked_for_integrity_only(
    make_deployment: Any, tmp_path: Path
) -> None:
    db = _make_db(tmp_path / "live" / "old.db")
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    backup_id = dep.create()
    _rewrite_manifest(dep, backup_id, lambda m: m["sources"][0]["info"].pop("row_counts"))
    record = dep.ok("backup", "drill", "app", "-o", "json").json()
    assert record["passed"] is True
    rows = [c for c in record["checks"] if c["name"] == "sqlite.rows"]
    assert rows and "integrity check only" in rows[0]["detail"], rows


def test_a_killed_drill_leaves_scratch_that_the_next_run_removes(
    make_deployment: Any, tmp_path: Path
) -> None:
    src = tmp_path / "big"
    src.mkdir()
    for i in range(4):
        (src / f"blob{i}.bin").write_bytes(os.urandom(24 << 20))
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    dep.create()
    env, base = _tmp_env(tmp_path)
    proc = subprocess.Popen(
        helpers.cli_command("backup", "drill", "app"),
        env=helpers.cli_env({**dep.env, **env}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scratch: list[Path] = []
    deadline = time.monotonic() + 60
    while not scratch and proc.poll() is None and time.monotonic() < deadline:
        scratch = list(base.glob(f"run-{proc.pid}-*/drill-*/restore/**/blob0.bin")) if base.exists() else []
        time.sleep(0.005)
    assert scratch, "the drill ended before its scratch directory was seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(base.glob(f"run-{proc.pid}-*"))
    assert left, "kill -9 left nothing to clean up (the test proves nothing)"

    dep.ok("backup", "drill", "app", env=env)
    assert _leftovers(base) == []


def test_policy_drills_run_by_run_due(files_deployment: Any, tmp_path: Path) -> None:
    dep = files_deployment
    doc = helpers.load_yaml(dep.config)
    doc["policies"] = {"verified": {"drills": {"every": "1d", "older": 1}}}
    doc["deployments"]["app"]["policy"] = "verified"
    helpers.dump_yaml(doc, dep.config)
    ids = [dep.create("--type", "full") for _ in range(3)]
    env, base = _tmp_env(tmp_path)

    rows = dep.ok("schedule", "run-due", "-o", "json", env=env).json()
    drills = [r for r in rows if r["kind"] == "drill"]
    assert len(drills) == 2 and all(r["status"] == "Completed" for r in drills), rows
    assert drills[0]["backup_id"] == ids[-1]  # the newest, then one random older one
    assert drills[1]["backup_id"] in ids[:-1]
    listed = {r["id"]: r for r in dep.list()}
    assert listed[ids[-1]]["drill_passed"] is True and listed[drills[1]["backup_id"]]["drill_passed"] is True
    assert _leftovers(base) == []

    # Once per slot: the next run-due in the same day drills nothing.
    again = dep.ok("schedule", "run-due", "-o", "json", env=env).json()
    assert [r for r in again if r["kind"] == "drill"] == []

    # `schedule list` shows the drills: the next slot (tomorrow, 00:00 UTC) and the last one.
    (row,) = [r for r in dep.ok("schedule", "list", "-o", "json").json() if r["kind"] == "drill"]
    assert (
        row["deployment"] == "app" and row["policy"] == "verified" and row["schedule"] == "every 1d, 1 older"
    )
    assert row["last_status"] == "Completed" and row["last_error"] is None and row["last_run"]
    assert row["next_run"].endswith("T00:00:00.000Z") and row["next_run"] > row["last_run"], row


def test_the_drill_record_is_also_stored_with_the_uploaded_copies(
    files_deployment: Any, tmp_path: Path
) -> None:
    """A host that has only the offsite copy (the primary lost) still sees the drill."""
    dep = files_deployment
    doc = helpers.load_yaml(dep.config)
    doc["destinations"]["offsite"] = {"type": "local", "path": str(tmp_path / "offsite")}
    doc["deployments"]["app"]["destinations"] = ["local", "offsite"]
    helpers.dump_yaml(doc, dep.config)
    backup_id = dep.create()
    env, _ = _tmp_env(tmp_path)
    record = dep.ok("backup", "drill", "app", "-o", "json", env=env).json()
    assert record["passed"] is True
    assert [p.name for p in (tmp_path / "offsite" / "drills").iterdir()] == [record["id"]]
    other_state = tmp_path / "other-state"
    other_state.mkdir()
    shown = dep.ok(
        "backup", "show", backup_id, "--destination", "offsite", "-o", "json",
        env={"XDG_STATE_HOME": str(other_state)},
    ).json()  # fmt: skip
    assert [d["id"] for d in shown["drills"]] == [record["id"]]
