"""Several hosts, one runner: two scheduler processes against one S3 repository (moto).

Each process is tests/scheduler_host_driver.py with its own XDG_STATE_HOME (its own local
state, like two machines) and the same config, whose deployment's only destination is
the moto S3 server. The test feeds both the same simulated instants (one per hourly
slot) at the same moment; the per-slot lease (S3 `If-None-Match: *`) must let exactly one
of them run each slot. Then one host is SIGKILLed and the other must run every later slot
alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import helpers
import pytest
from conftest_servers import build_destination, destination_config

from backupctl.backups.service import Service
from backupctl.config.loader import load_config

DRIVER = Path(__file__).resolve().parents[1] / "scheduler_host_driver.py"
START = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
SLOTS = 24
KILL_AT = 12  # index of the slot during which host A is killed


class Host:
    def __init__(self, name: str, config: Path, state: Path) -> None:
        self.name = name
        state.mkdir(parents=True)
        self.log = (state.parent / f"{name}.stderr").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), str(config), "--jitter", "0.15"],
            env=helpers.cli_env({"XDG_STATE_HOME": str(state)}),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )

    def send(self, now: datetime) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(now.isoformat() + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"host {self.name} exited: {self.proc.poll()}"
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def slot_name(slot: datetime) -> str:
    return f"leases/app/hourly.full.{slot:%Y%m%dT%H%M%SZ}"


def test_two_hosts_run_each_slot_once_and_survive_a_kill(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data.txt").write_text("payload\n" * 100)
    s3 = destination_config("s3", request, tmp_path)
    config = tmp_path / "config.yaml"
    helpers.write_config(
        config, sources=[{"type": "files", "paths": [str(tree)]}], repository=tmp_path / "unused"
    )
    doc = helpers.load_yaml(config)
    doc["destinations"] = {"s3": s3}
    doc["deployments"]["app"]["destinations"] = ["s3"]
    doc["deployments"]["app"]["policy"] = "hourly"
    doc["policies"] = {
        "hourly": {
            "created": (START - timedelta(minutes=30)).isoformat(),
            "schedules": [{"hourly": {"every": 1, "minute": 0}}],
        }
    }
    helpers.dump_yaml(doc, config)

    slots = [START + timedelta(hours=i) for i in range(SLOTS)]
    a = Host("a", config, tmp_path / "host-a" / "state")
    b = Host("b", config, tmp_path / "host-b" / "state")
    ran_by: dict[datetime, list[str]] = {s: [] for s in slots}
    skipped: dict[str, int] = {"a": 0, "b": 0}
    try:
        for i, slot in enumerate(slots):
            now = slot + timedelta(minutes=1)  # cron's run-due a minute after the slot
            alive = [a, b] if i < KILL_AT else [b]
            order = alive if i % 2 == 0 else list(reversed(alive))
            for host in order:
                (tmp_path / "tree" / "data.txt").write_text(f"slot {i}\n" * 100)
                host.send(now)
            if i == KILL_AT:
                a.send(now)
                time.sleep(0.3)  # somewhere in its run: before, during or after the lease
                a.proc.kill()
                a.proc.wait()
            for host in alive:
                out = host.receive()
                rows = out["rows"]
                assert len(rows) == 1, (host.name, out)
                row = rows[0]
                assert row["slot"] == slot.strftime("%Y-%m-%dT%H:%M:%S.000Z"), (host.name, out)
                if row["backup_id"]:
                    assert row["status"] == "Completed", (host.name, row)
                    ran_by[slot].append(host.name)
                else:
                    assert row["status"] == "skipped: another host runs this slot", (host.name, row)
                    skipped[host.name] += 1
    finally:
        a.stop()
        b.stop()
    stderr_b = (tmp_path / "host-b" / "b.stderr").read_text()
    assert "Traceback" not in stderr_b, stderr_b

    # Every slot ran at most once across the hosts (the lease), and each host ran some.
    assert all(len(v) <= 1 for v in ran_by.values()), ran_by
    before_kill = [s for s in slots[:KILL_AT]]
    assert all(ran_by[s] for s in before_kill), ran_by
    ran_a = sum(ran_by[s] == ["a"] for s in before_kill)
    assert 0 < ran_a < KILL_AT, f"host a ran {ran_a} of {KILL_AT} slots: the hosts did not share the work"
    # After the kill, b ran every slot alone; the slot a held when it died may be lost.
    assert all(ran_by[s] == ["b"] for s in slots[KILL_AT + 1 :]), ran_by

    # The repository in S3 (read by a third "machine" with empty state) agrees.
    request.getfixturevalue("monkeypatch").setenv("XDG_STATE_HOME", str(tmp_path / "observer"))
    service = Service(load_config(config))
    try:
        backups = service.list_backups("app")
    finally:
        service.close()
    assert all(r["status"] == "Completed" and r["created_by"] == "hourly" for r in backups), backups
    by_slot: dict[datetime, list[Any]] = {}
    for r in backups:
        started = datetime.fromisoformat(r["started"].replace("Z", "+00:00"))
        by_slot.setdefault(started - timedelta(minutes=1), []).append(r)
    assert set(by_slot) <= set(slots), sorted(by_slot)
    assert all(len(v) == 1 for v in by_slot.values()), by_slot
    missing = [s for s in slots if s not in by_slot]
    assert missing in ([], [slots[KILL_AT]]), missing
    for s in slots:
        assert (s in by_slot) == bool(ran_by[s]) or s == slots[KILL_AT], s

    # One lease object per slot, naming the backup that ran it.
    dest = build_destination(s3, "s3")
    try:
        leases = sorted(o.name for o in dest.list("leases/"))
        assert leases == sorted(slot_name(s) for s in slots), leases
        for s, rows in by_slot.items():
            lease = json.loads(dest.get(slot_name(s)))
            assert lease["backup_id"] == rows[0]["id"], (s, lease)
    finally:
        dest.close()
