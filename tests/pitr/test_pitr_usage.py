"""What a new user gets wrong around point-in-time recovery, and what backupctl answers.

* Targets that cannot be read (hour 25, month 13, an offset of a day, an LSN that is not
  one) are usage errors: exit 2, one line, no traceback; a one-digit hour with a fraction
  of a second is read.
* `pitr setup --apply` on a server whose archive_mode is off says a restart is needed.
* A non-empty --target is refused before any confirmation is asked, and left as it was.
* `--to-time` with the ID of a logical backup names the reason (a physical backup is needed).
* A plain in-place restore of a physical backup onto a running server is refused before the
  safety backup: no backup is added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import PostgresServer

from backupctl.errors import ExitCode


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--to-time", "2026-12-02 25:00", "cannot read the time"),
        ("--to-time", "2026-13-45 10:00", "cannot read the time"),
        ("--to-time", "2026-12-02 10:07:36 +25:00", "cannot read the time"),
        ("--to-time", "yesterday 9am", "cannot read the time"),
        ("--to-time", "2026-12-02 10:07 Mars/Olympus", "unknown time zone"),
        ("--to-lsn", "banana", "LSN"),
    ],
)
def test_unreadable_targets_are_usage_errors(
    make_deployment: Any, tmp_path: Path, option: str, value: str, needle: str
) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(tmp_path)]}])
    result = dep.run("backup", "restore", "--deployment", "app", option, value, "--target", tmp_path / "t")
    assert result.returncode == ExitCode.USAGE, str(result)
    assert "Traceback" not in result.stderr and needle in result.stderr, str(result)
    assert not (tmp_path / "t").exists()


def test_a_readable_target_reaches_the_engine(make_deployment: Any, tmp_path: Path) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(tmp_path)]}])
    result = dep.run(
        "backup", "restore", "--deployment", "app", "--to-time", "2026-12-02 9:07:36.5 UTC", "--target", tmp_path / "t"
    )  # fmt: skip
    helpers.assert_one_line_error(result, ExitCode.FAILED, "no PostgreSQL or MariaDB source")
    missing = dep.run("backup", "restore", "--to-time", "2026-12-02 09:07 UTC")
    helpers.assert_one_line_error(missing, ExitCode.USAGE, "give --deployment")


@pytest.mark.server
def test_postgres_set_up_and_restore_mistakes(
    fresh_pg_server: PostgresServer, make_deployment: Any, tmp_path: Path
) -> None:
    server = fresh_pg_server
    server.psql("ALTER SYSTEM SET archive_mode = 'off'")
    server.pg_ctl_stop(server.data)
    server.pg_ctl_start(server.data)
    assert server.psql("SHOW archive_mode").strip() == "off"
    dep = make_deployment([server.options(method="pg_basebackup", data_dir=str(server.data))])

    applied = dep.ok("pitr", "setup", "app", "--apply", "--command", "/bin/false", "-o", "json").json()
    assert applied["restart_needed"] is True and "archive_mode" in applied["pending_restart"], applied
    text = dep.ok("pitr", "setup", "app", "--apply", "--command", "/bin/false")
    assert "restart PostgreSQL" in text.stderr + text.stdout, str(text)

    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    before = len(dep.ok("backup", "list", "--all", "-o", "json").json())

    # Non-empty --target: refused before the confirmation, contents untouched.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused = dep.run(
        "backup", "restore", "--deployment", "app", "--to-time", "2030-01-01 00:00 UTC", "--target", busy
    )
    helpers.assert_one_line_error(refused, ExitCode.USAGE, "is not empty")
    assert "overwritten" not in refused.stderr + refused.stdout, str(refused)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and (busy / "keep.txt").read_text() == "mine"

    # In place onto the running server: refused before a safety backup is taken.
    running = dep.run("backup", "restore", base["id"], "--yes")
    helpers.assert_one_line_error(running, ExitCode.FAILED, "running")
    assert len(dep.ok("backup", "list", "--all", "-o", "json").json()) == before
    assert server.psql("SELECT 1").strip() == "1"

    # --to-time from a logical backup's ID: the reason, not "unknown ID".
    logical = make_deployment([server.options(method="pg_dump", databases=["postgres"])])
    dump = logical.ok("backup", "create", "app", "-o", "json").json()
    by_id = logical.run(
        "backup", "restore", dump["id"][:8], "--to-time", "2030-01-01 00:00 UTC", "--target", tmp_path / "x"
    )
    helpers.assert_one_line_error(by_id, ExitCode.FAILED, "is a pg_dump backup", "physical backup")
    assert not (tmp_path / "x").exists()
