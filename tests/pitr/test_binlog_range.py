"""The window reachable from one mariabackup backup (pitr/mariadb.backup_range), on archive
metadata alone: coverage of the backup's consistent point is decided by positions, because
binary log event times have whole seconds."""

from __future__ import annotations

from typing import Any

from backupctl.pitr.mariadb import backup_range

BACKUP = {
    "id": "b" * 32,
    "deployment": "shop",
    "finished": "2026-11-20T09:00:00.700000Z",
    "info": {"binlog_file": "mariadb-bin.000003", "binlog_pos": 1874},
}


def window(files: dict[int, dict[str, Any]]) -> dict[str, Any]:
    archive = {"mariadb-bin": {n: f"binlog/shop/mariadb-bin.{n:06d}" for n in files}}
    cache = {f"binlog/shop/mariadb-bin.{n:06d}": meta for n, meta in files.items()}
    return backup_range(None, archive, BACKUP, cache)  # type: ignore[arg-type]  # cache only


def test_a_last_event_in_the_same_second_as_the_backup_end_is_still_usable() -> None:
    rng = window({3: {"last_event_time": "2026-11-20T09:00:00Z", "end_position": 2400}})
    assert rng["usable"], rng
    assert rng["from"] == rng["to"] == BACKUP["finished"], rng


def test_an_archive_that_ends_before_the_backup_position_is_not_usable() -> None:
    rng = window({3: {"last_event_time": "2026-11-20T09:00:00Z", "end_position": 1000}})
    assert not rng["usable"] and "before the backup finished" in rng["reason"], rng


def test_later_files_extend_the_window_and_a_gap_stops_it() -> None:
    rng = window(
        {
            3: {"last_event_time": "2026-11-20T09:00:00Z", "end_position": 5000},
            4: {"last_event_time": "2026-11-20T09:30:00Z", "end_position": 900},
            6: {"last_event_time": "2026-11-20T10:00:00Z", "end_position": 900},
        }
    )
    assert rng["usable"] and rng["to"] == "2026-11-20T09:30:00Z", rng
    assert rng["last_file"] == "mariadb-bin.000004" and rng["missing_file"] == "mariadb-bin.000005", rng
