"""Drill of a `sqlite` source: restore the database copy into scratch space (the engine's
restore-to-target path), then `PRAGMA integrity_check` and rows per table against the
counts the source recorded at backup time (`info.row_counts`, counted on its snapshot
copy). A backup taken before counts were recorded gets the integrity check only, and the
rows check says so. The restored copy is opened read-only; nothing touches the live file.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from pathlib import Path

from backupctl.drill.base import DrillCheck, DrillContext, Driller, DrillUnsupported
from backupctl.repo.items import read_items
from backupctl.sources.sqlite import table_row_counts


def _open_ro(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.fsencode(path), safe="/") + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30)


class SQLiteDriller(Driller):
    def drill(self, ctx: DrillContext) -> list[DrillCheck]:
        if ctx.to_time is not None:
            raise DrillUnsupported("sqlite backups have no point-in-time recovery")
        root = ctx.scratch / "restore"
        root.mkdir(mode=0o700)
        t0 = time.monotonic()
        ctx.restore_to(root)
        ctx.restore_seconds = time.monotonic() - t0
        stored = [
            i
            for i in read_items(ctx.repo, [bytes.fromhex(b) for b in ctx.source["tree"]])
            if i.kind == "file"
        ]
        if len(stored) != 1:
            return [
                DrillCheck("restore", False, f"expected one database file in the backup, found {len(stored)}")
            ]
        shown = "/" + stored[0].path
        db = root / stored[0].path
        if not db.is_file():
            return [DrillCheck("restore", False, f"{shown}: the database file was not restored")]
        return self.check(db, shown, ctx.info.get("row_counts"))

    def check(self, db: Path, shown: str, recorded: dict[str, int] | None) -> list[DrillCheck]:
        checks: list[DrillCheck] = []
        try:
            conn = _open_ro(db)
            try:
                problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
                counts = table_row_counts(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return [DrillCheck("integrity", False, f"{shown}: cannot be opened as a database: {exc}")]
        if problems == ["ok"]:
            checks.append(DrillCheck("integrity", True, f"{shown}: PRAGMA integrity_check ok"))
        else:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            checks.append(
                DrillCheck(
                    "integrity", False, f"{shown}: integrity_check found: {'; '.join(problems[:5])}{more}"
                )
            )
        if recorded is None:
            checks.append(
                DrillCheck(
                    "rows",
                    True,
                    f"{shown}: no row counts recorded at backup time (an older backup): integrity check only",
                )
            )
            return checks
        if counts is None:
            checks.append(DrillCheck("rows", False, f"{shown}: the restored tables cannot be counted"))
            return checks
        for table in sorted(set(recorded) | set(counts)):
            want, got = recorded.get(table), counts.get(table)
            if want is None:
                checks.append(
                    DrillCheck(
                        "rows",
                        False,
                        f"{shown}: table {table} ({got} rows) restored but not recorded at backup time",
                    )
                )
            elif got is None:
                checks.append(
                    DrillCheck(
                        "rows",
                        False,
                        f"{shown}: table {table} recorded with {want} rows, missing after restore",
                    )
                )
            elif got != want:
                checks.append(
                    DrillCheck("rows", False, f"{shown}: table {table}: {want} rows recorded, {got} restored")
                )
        if all(c.passed for c in checks if c.name == "rows"):
            listed = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
            checks.append(DrillCheck("rows", True, f"{shown}: {len(counts)} tables as recorded ({listed})"))
        return checks


DRILLER = SQLiteDriller()
