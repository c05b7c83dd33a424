"""The local state database opened by several processes at once (cron jobs, run-due's
parallel backups): opening a new one must never fail. SQLite answers the loser of the
switch to WAL "database is locked" at once, without its busy timeout; the torture suite's
large run met it as an internal error of `backup create` (1 of 9 concurrent rounds)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from backupctl.backups.state import StateDB

PROCESSES = 4
ROUNDS = 60


def _open_and_write(directory: str, start_at: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    while time.time() < start_at:
        pass
    try:
        db = StateDB(Path(directory))
        db.insert_job(id=f"job-{os.getpid()}", deployment="app", status="Running")
        results.put("ok")
    except Exception as exc:  # any failure is the finding
        results.put(f"{type(exc).__name__}: {exc}")


def test_many_processes_open_a_new_state_database_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures = []
    for n in range(ROUNDS):
        directory = tmp_path / f"state-{n}"
        results = ctx.Queue()
        start_at = time.time() + 0.15
        procs = [
            ctx.Process(target=_open_and_write, args=(str(directory), start_at, results))
            for _ in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
        jobs = StateDB(directory).jobs()
        assert len(jobs) == PROCESSES - len([o for o in outcomes if o != "ok"])
    assert failures == [], failures[:3]
